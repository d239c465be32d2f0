package main

import (
	"fmt"
	"io"

	"github.com/kelseyhightower/envconfig"
)

const usageHead = `smartybridge %s: Luxembourg Smarty P1 meter to Home Assistant over MQTT.

Commands:
  smartybridge                  run the bridge: meter port in, MQTT out
  smartybridge demo             the same with a simulated meter and an embedded broker
  smartybridge simulate [PATH]  write a simulated meter's frames to stdout or PATH
  smartybridge decode [FILE…]   decode P1 bytes (files, or stdin) to JSON lines
  smartybridge confirm-key      print the key forwarders check decryptors' confirmations with
  smartybridge version          print the version
  smartybridge -h               this help

Configuration is read from the environment:

`

const usageFormat = `{{range .}}  {{usage_key .}}{{if usage_default .}} (default {{usage_default .}}){{end}}
      {{usage_description .}}
{{end}}`

func usage(w io.Writer) error {
	fmt.Fprintf(w, usageHead, version)
	var c struct {
		Config
		DemoConfig
	}
	return envconfig.Usagef(envPrefix, &c, w, usageFormat)
}
