package cli

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

const usageHead = `smartybridge %s: Luxembourg Smarty P1 meter to Home Assistant over MQTT.

Commands:
  smartybridge [run]       run the bridge: meter port in, MQTT out (SMARTY_MODE)
  smartybridge demo        the same with a simulated meter and a built-in broker
  smartybridge simulate    write a simulated meter's frames to stdout or a file
  smartybridge decode      decode P1 bytes (files, or stdin) to JSON lines
  smartybridge quarters    the energy of every quarter-hour in P1 captures
  smartybridge confirm-key print the key forwarders check confirmations with
  smartybridge health      exit 0 while the running bridge holds its broker
  smartybridge addon       the Home Assistant add-on's entry point
  smartybridge version     print the version, commit and Go version
  smartybridge -h          this help; smartybridge COMMAND -h for one command

Configuration is read from the environment:

`

// commandHelp is each command's own -h.
var commandHelp = map[string]string{
	"run": `usage: smartybridge [run]

Reads the meter's port (SMARTY_DEVICE), decrypts its frames and publishes
Home Assistant discovery and one state topic per OBIS code to the broker
(SMARTY_MQTT_URL). SMARTY_MODE=forward publishes the still-encrypted frames
only; SMARTY_MODE=decrypt takes them from the broker. smartybridge -h lists
every variable.
`,
	"demo": `usage: smartybridge demo

Runs the whole bridge with a simulated meter and an embedded MQTT broker on
SMARTY_DEMO_LISTEN (127.0.0.1:1883), or against SMARTY_MQTT_URL when set.
Needs no hardware and no service. Ctrl-C stops it.
`,
	"simulate": `usage: smartybridge simulate [PATH]

Writes a simulated meter's encrypted frames (the demo key, or SMARTY_KEY) to
stdout, or appends them to PATH (a file or a serial device), one every
SMARTY_DEMO_INTERVAL, SMARTY_SIM_COUNT frames (0: until Ctrl-C).
`,
	"decode": `usage: smartybridge decode [-raw FILE] [FILE…]
       smartybridge decode -device DEVICE [-frames N] [-duration D] [-raw FILE]

Reads raw P1 bytes from the files in order, or from stdin, or straight from
the meter's port (-device /dev/ttyUSB0, COM8 or tcp://host:port, raw mode at
SMARTY_BAUD), and writes one JSON line per telegram to stdout and a summary
to stderr. With -device it stops after -frames frames or -duration (else at
Ctrl-C); -raw also writes the bytes read, unchanged, to FILE, a capture to
attach to a bug report (it holds no key). Keys come from
SMARTY_KEY, SMARTY_KEYS, SMARTY_KEYS_FILE, SMARTY_AUTH_KEY and
SMARTY_VERIFY_TAG. Exit status: 0 when a telegram decoded (or there was no
frame at all), 1 when frames were seen and none decoded, 2 for a bad
configuration.
`,
	"quarters": `usage: smartybridge quarters [-reference-power KW] [FILE…]

Reads raw P1 bytes from the files in order, or from stdin, with the keys
decode uses, and writes one JSON line per complete quarter-hour and meter:
the energy drawn in it, its average power, and with -reference-power the
energy above that power (billed at the higher price in Luxembourg since
2025). A quarter is complete when readings bracket both its boundaries;
"quality" says "measured" (readings at most 60 s apart around both) or
"estimated" (a gap, spread linearly). Times are the meter's, with its
offset. For example, how often a day's capture would have overrun 7 kW:

  smartybridge quarters -reference-power 7 day.bin | grep -vc '"overrun_kwh":0,'
`,
	"confirm-key": `usage: smartybridge confirm-key

Prints, for SMARTY_KEY and every SMARTY_KEYS entry, the public key that
signs a decryptor's confirmations: set a forwarder's SMARTY_CONFIRM_KEY to
it. It is derived one-way from the meter key and tells nothing about it.
`,
	"health": `usage: smartybridge health

Exits 0 while the bridge that writes SMARTY_HEALTH_FILE runs and holds its
broker connection (or lost it less than 5 minutes ago); a container health
check. The meter is not part of it.
`,
	"addon": `usage: smartybridge addon

The Home Assistant add-on's entry point: maps /data/options.json and the
Supervisor's MQTT service to the SMARTY_* variables, then runs the bridge.
`,
	"version": `usage: smartybridge version

Prints the release, the commit, the Go version and the platform.
`,
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// wantsHelp reports whether a command's arguments ask for its help.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelp(a) {
			return true
		}
	}
	return false
}

func usage(w io.Writer) error {
	fmt.Fprintf(w, usageHead, version)
	for _, v := range variables() {
		line := "  " + v.name
		if v.def != "" {
			line += " (default " + v.def + ")"
		}
		fmt.Fprintln(w, line)
		for _, l := range wrap(v.desc, 80-6) {
			fmt.Fprintln(w, "      "+l)
		}
	}
	return nil
}

type variable struct{ name, def, desc string }

// variables lists every SMARTY_* variable the program reads, in the order
// of the configuration structs.
func variables() []variable {
	return append(envVariables(reflect.TypeOf(Config{})), envVariables(reflect.TypeOf(DemoConfig{}))...)
}

// envVariables lists the variables of one configuration struct.
func envVariables(t reflect.Type) []variable {
	var out []variable
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous {
			out = append(out, envVariables(f.Type)...)
			continue
		}
		if name := f.Tag.Get("envconfig"); name != "" {
			out = append(out, variable{"SMARTY_" + name, f.Tag.Get("default"), f.Tag.Get("desc")})
		}
	}
	return out
}

// wrap breaks text into lines of at most width characters, at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// flagsFirst rejects a flag among a command's files: Go's flag package
// stops at the first file, so `decode FILE -raw x` would read a file named
// -raw. "-" alone is standard input.
func flagsFirst(cmd string, files []string) error {
	for _, f := range files {
		if len(f) > 1 && f[0] == '-' {
			return configError{fmt.Errorf("%s: %s after a file: flags go before the files (smartybridge %s -h)", cmd, f, cmd)}
		}
	}
	return nil
}
