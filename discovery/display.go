package discovery

import (
	"strconv"
	"strings"
)

// display is how Home Assistant shows a raw value that means something
// else: a code with named states, a version in digits, an empty message.
// The value template does it in Home Assistant; Shown does the same in Go
// (tests hold the two together).
type display uint8

const (
	asIs            display = iota
	disconnectState         // DLMS disconnect control (class 70): 0, 1, 2
	valveState              // the same for an M-Bus valve
	versionDigits           // 42 is P1 4.2, 50 is 5.0
	message                 // an empty message says so
)

// The named states of a disconnect control (DLMS control_state), as Home
// Assistant lists them.
var (
	disconnectStates = []string{"Disconnected", "Connected", "Ready for reconnection"}
	valveStates      = []string{"Closed", "Open", "Ready to open"}
)

// NoMessage is what an empty message shows.
const NoMessage = "No message"

// states are the named states of a display, nil for none.
func (d display) states() []string {
	switch d {
	case disconnectState:
		return disconnectStates
	case valveState:
		return valveStates
	}
	return nil
}

// template is the value template that shows the raw value; "" for none.
func (d display) template() string {
	switch d {
	case disconnectState, valveState:
		var b strings.Builder
		b.WriteString("{{ {")
		for i, s := range d.states() {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("'" + strconv.Itoa(i) + "': '" + s + "'")
		}
		// "None" is Home Assistant's unknown: a code the meter should not send.
		b.WriteString("}.get(value | trim | int(-1) | string, 'None') }}")
		return b.String()
	case versionDigits:
		return "{% set v = value | trim %}{{ v[:-1] ~ '.' ~ v[-1:] if v | length > 1 else v }}"
	case message:
		return "{{ (value | trim) or '" + NoMessage + "' }}"
	}
	return ""
}

// Mapped reports whether Home Assistant shows s's values other than as
// published (Shown).
func (s Sensor) Mapped() bool { return s.shown != asIs }

// Shown is what Home Assistant shows for a published state of s.
func (s Sensor) Shown(published string) string {
	v := strings.TrimSpace(published)
	switch s.shown {
	case disconnectState, valveState:
		n, err := strconv.Atoi(v)
		if states := s.shown.states(); err == nil && n >= 0 && n < len(states) {
			return states[n]
		}
		return "unknown"
	case versionDigits:
		if len(v) > 1 {
			return v[:len(v)-1] + "." + v[len(v)-1:]
		}
	case message:
		if v == "" {
			return NoMessage
		}
	}
	return v
}
