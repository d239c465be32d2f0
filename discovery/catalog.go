package discovery

import (
	"fmt"
	"strings"

	"github.com/smartybridge/smartybridge/p1"
)

// Visibility of an entity in Home Assistant.
type Visibility uint8

// How an entity shows up: enabled on the dashboard, hidden (created but
// disabled), or diagnostic (in the device's diagnostic section).
const (
	Shown Visibility = iota
	Hidden
	Diagnostic       // shown, under diagnostics
	HiddenDiagnostic // disabled, under diagnostics
)

// Kind is what an entry's value is, which decides its device class.
type entry struct {
	name        string
	deviceClass string
	unit        string // Home Assistant's unit when the telegram sends none
	stateClass  string
	visibility  Visibility
	icon        string
	shown       display // how Home Assistant shows the raw value; 0: as it is
}

// Device classes and state classes used here.
const (
	measurement     = "measurement"
	totalIncreasing = "total_increasing"
)

func energy(name string, v Visibility) entry {
	return entry{name: name, deviceClass: "energy", unit: "kWh", stateClass: totalIncreasing, visibility: v}
}
func reactiveEnergy(name string) entry {
	return entry{name: name, deviceClass: "reactive_energy", unit: "kvarh", stateClass: totalIncreasing, visibility: Hidden}
}
func power(name string, v Visibility) entry {
	return entry{name: name, deviceClass: "power", unit: "kW", stateClass: measurement, visibility: v}
}
func reactivePower(name string) entry {
	return entry{name: name, deviceClass: "reactive_power", unit: "kvar", stateClass: measurement, visibility: Hidden}
}
func apparentPower(name string) entry {
	return entry{name: name, deviceClass: "apparent_power", unit: "kVA", stateClass: measurement, visibility: Hidden}
}
func counter(name, icon string) entry {
	return entry{name: name, stateClass: totalIncreasing, visibility: HiddenDiagnostic, icon: icon}
}
func info(name, icon string, v Visibility) entry {
	return entry{name: name, visibility: v, icon: icon}
}
func control(name, icon string, v Visibility, shown display) entry {
	return entry{name: name, deviceClass: "enum", visibility: v, icon: icon, shown: shown}
}

// catalog holds the objects of the Smarty P1 specification (table 3.1) and
// of DSMR 5 that have a fixed meaning, by OBIS code; M-Bus channels are
// handled apart.
var catalog = func() map[p1.OBIS]entry {
	m := make(map[p1.OBIS]entry, len(catalogByCode))
	for code, e := range catalogByCode {
		o, err := p1.ParseOBIS(code)
		if err != nil {
			panic(err)
		}
		m[o] = e
	}
	return m
}()

var catalogByCode = map[string]entry{
	"1-3:0.2.8": {name: "P1 version", icon: "mdi:numeric", visibility: HiddenDiagnostic, shown: versionDigits},
	// Disabled: a new time with every telegram, 8,640 logbook entries a
	// day on the device page.
	"0-0:1.0.0":   {name: "Telegram time", deviceClass: "timestamp", visibility: HiddenDiagnostic},
	"0-0:42.0.0":  info("Meter ID", "mdi:identifier", HiddenDiagnostic),
	"0-0:96.1.1":  info("Equipment ID", "mdi:identifier", HiddenDiagnostic),
	"1-0:1.8.0":   energy("Energy import", Shown),
	"1-0:2.8.0":   energy("Energy export", Shown),
	"1-0:1.8.1":   energy("Energy import tariff 1", Shown),
	"1-0:1.8.2":   energy("Energy import tariff 2", Shown),
	"1-0:2.8.1":   energy("Energy export tariff 1", Shown),
	"1-0:2.8.2":   energy("Energy export tariff 2", Shown),
	"1-0:3.8.0":   reactiveEnergy("Reactive energy import"),
	"1-0:4.8.0":   reactiveEnergy("Reactive energy export"),
	"1-0:3.8.1":   reactiveEnergy("Reactive energy import tariff 1"),
	"1-0:3.8.2":   reactiveEnergy("Reactive energy import tariff 2"),
	"1-0:4.8.1":   reactiveEnergy("Reactive energy export tariff 1"),
	"1-0:4.8.2":   reactiveEnergy("Reactive energy export tariff 2"),
	"1-0:1.7.0":   power("Power import", Shown),
	"1-0:2.7.0":   power("Power export", Shown),
	"1-0:3.7.0":   reactivePower("Reactive power import"),
	"1-0:4.7.0":   reactivePower("Reactive power export"),
	"1-0:9.7.0":   apparentPower("Apparent power import"),
	"1-0:10.7.0":  apparentPower("Apparent power export"),
	"0-0:17.0.0":  {name: "Power limit", deviceClass: "apparent_power", unit: "kVA", visibility: Diagnostic},
	"1-1:31.4.0":  {name: "Current limit", deviceClass: "current", unit: "A", visibility: HiddenDiagnostic},
	"0-0:96.3.10": control("Breaker state", "mdi:electric-switch", Diagnostic, disconnectState),
	"0-1:96.3.10": control("Relay 1 state", "mdi:electric-switch", HiddenDiagnostic, disconnectState),
	"0-2:96.3.10": control("Relay 2 state", "mdi:electric-switch", HiddenDiagnostic, disconnectState),
	"0-0:96.14.0": info("Tariff", "mdi:swap-horizontal", Diagnostic),
	"0-0:96.7.21": counter("Power failures", "mdi:flash-off"),
	"0-0:96.7.9":  counter("Long power failures", "mdi:flash-off"),
	"1-0:99.97.0": info("Power failure log", "mdi:clipboard-list", HiddenDiagnostic),
	"1-0:32.32.0": counter("Voltage sags L1", "mdi:trending-down"),
	"1-0:52.32.0": counter("Voltage sags L2", "mdi:trending-down"),
	"1-0:72.32.0": counter("Voltage sags L3", "mdi:trending-down"),
	"1-0:32.36.0": counter("Voltage swells L1", "mdi:trending-up"),
	"1-0:52.36.0": counter("Voltage swells L2", "mdi:trending-up"),
	"1-0:72.36.0": counter("Voltage swells L3", "mdi:trending-up"),
	"0-0:96.13.0": {name: "Message", icon: "mdi:message-text", visibility: Diagnostic, shown: message},
	"0-0:96.13.1": {name: "Message code", icon: "mdi:message-text", visibility: HiddenDiagnostic, shown: message},
	"0-0:96.13.2": {name: "Message 2", icon: "mdi:message-text", visibility: HiddenDiagnostic, shown: message},
	"0-0:96.13.3": {name: "Message 3", icon: "mdi:message-text", visibility: HiddenDiagnostic, shown: message},
	"0-0:96.13.4": {name: "Message 4", icon: "mdi:message-text", visibility: HiddenDiagnostic, shown: message},
	"0-0:96.13.5": {name: "Message 5", icon: "mdi:message-text", visibility: HiddenDiagnostic, shown: message},
	"1-0:32.7.0":  {name: "Voltage L1", deviceClass: "voltage", unit: "V", stateClass: measurement, visibility: Hidden},
	"1-0:52.7.0":  {name: "Voltage L2", deviceClass: "voltage", unit: "V", stateClass: measurement, visibility: Hidden},
	"1-0:72.7.0":  {name: "Voltage L3", deviceClass: "voltage", unit: "V", stateClass: measurement, visibility: Hidden},
	"1-0:31.7.0":  {name: "Current L1", deviceClass: "current", unit: "A", stateClass: measurement, visibility: Hidden},
	"1-0:51.7.0":  {name: "Current L2", deviceClass: "current", unit: "A", stateClass: measurement, visibility: Hidden},
	"1-0:71.7.0":  {name: "Current L3", deviceClass: "current", unit: "A", stateClass: measurement, visibility: Hidden},
	"1-0:21.7.0":  power("Power import L1", Hidden),
	"1-0:41.7.0":  power("Power import L2", Hidden),
	"1-0:61.7.0":  power("Power import L3", Hidden),
	"1-0:22.7.0":  power("Power export L1", Hidden),
	"1-0:42.7.0":  power("Power export L2", Hidden),
	"1-0:62.7.0":  power("Power export L3", Hidden),
	"1-0:23.7.0":  reactivePower("Reactive power import L1"),
	"1-0:43.7.0":  reactivePower("Reactive power import L2"),
	"1-0:63.7.0":  reactivePower("Reactive power import L3"),
	"1-0:24.7.0":  reactivePower("Reactive power export L1"),
	"1-0:44.7.0":  reactivePower("Reactive power export L2"),
	"1-0:64.7.0":  reactivePower("Reactive power export L3"),
}

// M-Bus device types (EN 13757-3) that a 0-n:24.1.0 object announces.
const (
	mbusGas   = 3
	mbusHeat  = 4
	mbusWater = 7
)

// mbusEntry describes the objects of M-Bus channel n (0-n:…), given the
// device type the telegram announced for the channel (0 when unknown).
func mbusEntry(code p1.OBIS, deviceType int) (entry, bool) {
	n := code.B
	switch {
	case code.C == 24 && code.D == 1 && code.E == 0:
		return info(fmt.Sprintf("M-Bus %d device type", n), "mdi:meter-gas", HiddenDiagnostic), true
	case code.C == 96 && code.D == 1 && code.E == 0:
		return info(fmt.Sprintf("M-Bus %d ID", n), "mdi:identifier", HiddenDiagnostic), true
	case code.C == 24 && code.D == 4 && code.E == 0:
		return control(fmt.Sprintf("M-Bus %d valve", n), "mdi:valve", HiddenDiagnostic, valveState), true
	case code.C == 24 && code.D == 2 && (code.E == 1 || code.E == 3), code.C == 24 && code.D == 3 && code.E == 0:
		// 24.3.0: DSMR 2.2/3 readings, (time)(…)(unit) + (value).
		switch deviceType {
		case mbusWater:
			return entry{name: mbusName("Water", n), deviceClass: "water", unit: "m³", stateClass: totalIncreasing}, true
		case mbusHeat:
			return entry{name: mbusName("Heat", n), deviceClass: "energy", unit: "GJ", stateClass: totalIncreasing}, true
		default:
			return entry{name: mbusName("Gas", n), deviceClass: "gas", unit: "m³", stateClass: totalIncreasing}, true
		}
	}
	return entry{}, false
}

// mbusName is "Gas" for the first channel of its kind in practice (channel
// 1), "Gas 2" for another channel.
func mbusName(kind string, channel uint8) string {
	if channel == 1 {
		return kind
	}
	return fmt.Sprintf("%s %d", kind, channel)
}

// normalizeUnit maps a telegram's unit to Home Assistant's exact string.
func normalizeUnit(u string) string {
	switch strings.ToLower(u) {
	case "m3":
		return "m³"
	case "kvarh":
		return "kvarh"
	case "varh":
		return "varh"
	case "kvar":
		return "kvar"
	case "var":
		return "var"
	case "kva":
		return "kVA"
	case "va":
		return "VA"
	case "kwh":
		return "kWh"
	case "wh":
		return "Wh"
	case "mwh":
		return "MWh"
	case "kw":
		return "kW"
	case "w":
		return "W"
	case "v":
		return "V"
	case "a":
		return "A"
	case "s":
		return "s"
	case "gj":
		return "GJ"
	}
	return u
}
