package main

import (
	"fmt"
	"io"

	"github.com/kelseyhightower/envconfig"
)

const usageHead = `smartybridge %s: Luxembourg Smarty P1 meter to Home Assistant over MQTT.

Commands:
  smartybridge decode [FILE…]   decode P1 bytes (files, or stdin) to JSON lines
  smartybridge -h               this help

Configuration is read from the environment:
`

func usage(w io.Writer) error {
	fmt.Fprintf(w, usageHead, version)
	var c decodeConfig
	return envconfig.Usagef(envPrefix, &c, w, envconfig.DefaultTableFormat)
}
