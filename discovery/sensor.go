package discovery

import (
	"bytes"

	"github.com/smartybridge/smartybridge/p1"
)

// Sensor is one object of one meter as Home Assistant sees it.
type Sensor struct {
	OBIS        p1.OBIS
	Name        string
	DeviceClass string // empty: none
	Unit        string // Home Assistant's exact unit string; empty: none
	StateClass  string // empty: none
	Precision   int    // digits after the point to show; -1: none
	Visibility  Visibility
	Icon        string
	shown       display
	moreValues  bool // MoreValues: its further values are attributes
}

// Monotonic reports whether the sensor is a total that must never go down.
func (s Sensor) Monotonic() bool { return s.StateClass == totalIncreasing }

// validUnits are Home Assistant's units for the device classes used here
// (DEVICE_CLASS_UNITS); any other unit makes Home Assistant reject the
// entity.
var validUnits = map[string][]string{
	"energy":          {"Wh", "kWh", "MWh", "GJ"},
	"reactive_energy": {"varh", "kvarh"},
	"power":           {"W", "kW"},
	"reactive_power":  {"var", "kvar"},
	"apparent_power":  {"VA", "kVA"},
	"voltage":         {"V"},
	"current":         {"A"},
	"gas":             {"m³"},
	"water":           {"m³"},
	"timestamp":       {""},
}

// Sensors describes every object of tg that Home Assistant should show.
// Objects of unused M-Bus channels are left out.
func Sensors(tg *p1.Telegram) []Sensor {
	types := mbusTypes(tg)
	out := make([]Sensor, 0, len(tg.Objects))
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if o.Unused() {
			continue
		}
		out = append(out, describe(o, types))
	}
	return out
}

// mbusTypes reads the device type of each M-Bus channel (0-n:24.1.0).
func mbusTypes(tg *p1.Telegram) map[uint8]int {
	var m map[uint8]int
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if o.OBIS.A == 0 && o.OBIS.C == 24 && o.OBIS.D == 1 && o.OBIS.E == 0 {
			if f, ok := o.Values[0].Float(); ok {
				if m == nil {
					m = map[uint8]int{}
				}
				m[o.OBIS.B] = int(f)
			}
		}
	}
	return m
}

func describe(o *p1.Object, types map[uint8]int) Sensor {
	e, ok := catalog[o.OBIS]
	if !ok && o.OBIS.A == 0 && o.OBIS.B > 0 {
		e, ok = mbusEntry(o.OBIS, types[o.OBIS.B])
	}
	if !ok {
		e = entry{name: "OBIS " + o.OBIS.String(), visibility: HiddenDiagnostic}
	}
	s := Sensor{OBIS: o.OBIS, Name: e.name, DeviceClass: e.deviceClass, Unit: e.unit,
		StateClass: e.stateClass, Precision: -1, Visibility: e.visibility, Icon: e.icon, shown: e.shown}
	s.moreValues = MoreValues(o)
	v := o.Reading()
	if len(v.Unit) > 0 {
		s.Unit = normalizeUnit(string(v.Unit))
	}
	if s.DeviceClass != "" && !validUnit(s.DeviceClass, s.Unit) {
		// A unit Home Assistant does not accept for the class would get the
		// whole entity rejected: keep the value, drop the class.
		s.DeviceClass, s.StateClass = "", ""
	}
	if v.IsNumber() && !o.OBIS.HexText() && s.DeviceClass != "timestamp" {
		s.Precision = 0
		if dot := bytes.IndexByte(v.Text, '.'); dot >= 0 {
			s.Precision = len(v.Text) - dot - 1
		}
	}
	return s
}

func validUnit(class, unit string) bool {
	units, known := validUnits[class]
	if !known {
		return true
	}
	for _, u := range units {
		if u == unit {
			return true
		}
	}
	return false
}
