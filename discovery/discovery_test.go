package discovery

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/smartybridge/smartybridge/p1"
)

var update = flag.Bool("update", false, "rewrite golden files")

var vectors = []string{"smarty-2018-real", "smarty-2026", "spec-appendix-a", "austria-t210dr", "dsmr5-nl"}

func parse(t *testing.T, name string) *p1.Telegram {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name + ".telegram")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := p1.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

var testOptions = Options{
	TopicPrefix: "smarty", DiscoveryPrefix: "homeassistant",
	Availability: []string{"smarty/status/test", "smarty/METER/availability"},
	Version:      "0.0.0-test", SupportURL: "https://example.invalid/smartybridge",
}

// haTables reads Home Assistant's unit and state-class tables from the
// copy of shared/ha/sensor-units.md: the first JSON block is
// DEVICE_CLASS_UNITS, the second DEVICE_CLASS_STATE_CLASSES.
func haTables(t *testing.T) (units, stateClasses map[string][]string) {
	t.Helper()
	b, err := os.ReadFile("../testdata/ha/sensor-units.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) < 2 {
		t.Fatal("sensor-units.md: JSON tables not found")
	}
	if err := json.Unmarshal(blocks[0][1], &units); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blocks[1][1], &stateClasses); err != nil {
		t.Fatal(err)
	}
	return units, stateClasses
}

func TestCombinationsValidInHomeAssistant(t *testing.T) {
	units, stateClasses := haTables(t)
	for _, name := range vectors {
		for _, s := range Sensors(parse(t, name)) {
			if s.DeviceClass == "" {
				continue
			}
			allowed, ok := units[s.DeviceClass]
			if !ok {
				t.Errorf("%s %s: device class %q unknown to Home Assistant", name, s.OBIS, s.DeviceClass)
				continue
			}
			unit := s.Unit
			if unit == "" {
				unit = "None"
			}
			if len(allowed) > 0 && !slices.Contains(allowed, unit) || len(allowed) == 0 && s.Unit != "" {
				t.Errorf("%s %s: unit %q not valid with %s (allowed %v)", name, s.OBIS, s.Unit, s.DeviceClass, allowed)
			}
			if sc, ok := stateClasses[s.DeviceClass]; s.StateClass != "" && (!ok || !slices.Contains(sc, s.StateClass)) {
				t.Errorf("%s %s: state class %q not valid with %s (allowed %v)", name, s.OBIS, s.StateClass, s.DeviceClass, sc)
			}
		}
	}
}

func sensorMap(ss []Sensor) map[string]Sensor {
	m := map[string]Sensor{}
	for _, s := range ss {
		m[s.OBIS.String()] = s
	}
	return m
}

func TestEnergyDashboardReady(t *testing.T) {
	s := sensorMap(Sensors(parse(t, "smarty-2026")))
	for code, want := range map[string][3]string{
		"1-0:1.8.0":  {"energy", "kWh", "total_increasing"},
		"1-0:2.8.0":  {"energy", "kWh", "total_increasing"},
		"0-1:24.2.1": {"gas", "m³", "total_increasing"},
		"1-0:3.8.0":  {"reactive_energy", "kvarh", "total_increasing"},
		"1-0:4.7.0":  {"reactive_power", "kvar", "measurement"},
		"1-0:10.7.0": {"apparent_power", "kVA", "measurement"},
		"1-0:1.7.0":  {"power", "kW", "measurement"},
	} {
		got := s[code]
		if [3]string{got.DeviceClass, got.Unit, got.StateClass} != want {
			t.Errorf("%s = %s/%s/%s, want %v", code, got.DeviceClass, got.Unit, got.StateClass, want)
		}
		if (got.Visibility == Shown) != (code == "1-0:1.8.0" || code == "1-0:2.8.0" || code == "0-1:24.2.1" || code == "1-0:1.7.0") {
			t.Errorf("%s visibility %d", code, got.Visibility)
		}
	}
	if p := s["1-0:1.8.0"].Precision; p != 3 {
		t.Errorf("precision of 1-0:1.8.0 = %d, want 3 (the meter's digits)", p)
	}
}

func TestUnitsFromCatalogWhenTelegramHasNone(t *testing.T) {
	s := sensorMap(Sensors(parse(t, "smarty-2018-real")))
	if u := s["1-0:3.7.0"].Unit; u != "kvar" {
		t.Errorf("2018 firmware 1-0:3.7.0 unit %q, want kvar", u)
	}
	if u := s["0-0:17.0.0"].Unit; u != "kVA" {
		t.Errorf("2018 firmware 0-0:17.0.0 unit %q, want kVA", u)
	}
}

func TestUnusedMBusLeftOut(t *testing.T) {
	s := sensorMap(Sensors(parse(t, "spec-appendix-a")))
	for _, code := range []string{"0-2:24.2.1", "0-3:24.2.1"} {
		if _, ok := s[code]; ok {
			t.Errorf("unused channel %s described", code)
		}
	}
	if g := s["0-4:24.2.1"]; g.DeviceClass != "gas" || g.Name != "Gas 4" {
		t.Errorf("channel 4: %+v", g)
	}
}

func TestWaterChannel(t *testing.T) {
	tg, err := p1.Parse([]byte("/Lux5\\253663629_D\r\n\r\n0-2:24.1.0(007)\r\n0-2:24.2.1(260403174542S)(00012.345*m3)\r\n!\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := Sensors(tg)[1]; s.DeviceClass != "water" || s.Unit != "m³" || s.Name != "Water 2" {
		t.Errorf("water channel: %+v", s)
	}
}

func TestDeviceConfigGolden(t *testing.T) {
	for _, name := range vectors {
		tg := parse(t, name)
		id := string(tg.MeterID())
		if id == "" {
			id = "53595354454D4944"
		}
		msg := DeviceConfig(Device{ID: id, Header: string(tg.Header)}, Sensors(tg), testOptions)
		if msg.Topic != "homeassistant/device/"+id+"/config" {
			t.Errorf("topic %s", msg.Topic)
		}
		checkGolden(t, msg.Payload, "../testdata/golden/discovery-"+name+".json")
		checkKeys(t, msg.Payload)
	}
}

// checkGolden compares payload, indented, with the golden file (rewritten
// with -update).
func checkGolden(t *testing.T, payload []byte, golden string) {
	t.Helper()
	var indented bytes.Buffer
	if err := json.Indent(&indented, payload, "", " "); err != nil {
		t.Fatal(err)
	}
	if *update {
		os.WriteFile(golden, indented.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(indented.Bytes(), want) {
		t.Errorf("differs from %s (go test ./discovery -update rewrites it)", golden)
	}
}

// checkKeys guards against struct-tag typos: every key must be one Home
// Assistant knows.
func checkKeys(t *testing.T, payload []byte) {
	t.Helper()
	known := "device origin availability availability_mode components identifiers name manufacturer model serial_number sw_version via_device support_url topic platform unique_id default_entity_id state_topic value_template payload_on payload_off json_attributes_topic options device_class unit_of_measurement state_class suggested_display_precision enabled_by_default entity_category icon command_topic min max step mode"
	var walk func(v any, components bool)
	walk = func(v any, components bool) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				// The keys of "components" are object ids, not options.
				if !components && !strings.Contains(" "+known+" ", " "+k+" ") {
					t.Errorf("unknown key %q", k)
				}
				walk(c, k == "components")
			}
		case []any:
			for _, c := range x {
				walk(c, false)
			}
		}
	}
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatal(err)
	}
	walk(v, false)
}

func TestEntityConfigs(t *testing.T) {
	tg := parse(t, "smarty-2026")
	ss := Sensors(tg)
	msgs := EntityConfigs(Device{ID: "SAG1030700012701", Header: string(tg.Header)}, ss, testOptions)
	if len(msgs) != len(ss)+len(quarterEntities) {
		t.Fatalf("%d messages for %d sensors and %d entities of the reference power", len(msgs), len(ss), len(quarterEntities))
	}
	for _, m := range msgs[len(ss):] {
		var c map[string]any
		json.Unmarshal(m.Payload, &c)
		if c["device"] == nil || c["availability"] == nil || c["platform"] != nil {
			t.Errorf("entity config %s: %s", m.Topic, m.Payload)
		}
	}
	if msgs[len(ss)+len(quarterEntities)-1].Topic != "homeassistant/number/SAG1030700012701/quarter_overrun_price/config" {
		t.Errorf("the last entity config: %s", msgs[len(msgs)-1].Topic)
	}
	var c map[string]any
	json.Unmarshal(msgs[3].Payload, &c)
	if msgs[3].Topic != "homeassistant/sensor/SAG1030700012701/1-0_1_8_0/config" || c["unique_id"] != "SAG1030700012701_1-0:1.8.0" ||
		c["state_topic"] != "smarty/SAG1030700012701/1-0:1.8.0" || c["device"] == nil || c["default_entity_id"] != "sensor.smarty_sag1030700012701_energy_import" {
		t.Errorf("entity config %s: %s", msgs[3].Topic, msgs[3].Payload)
	}
}

// TestLegacyGasAndEmptySlot: a DSMR 2.2/3 gas line (0-1:24.3.0, value on
// the next line, as in dsmr_parser's TELEGRAM_V2_2) is a gas sensor in m³
// like the DSMR 4/5 0-1:24.2.1; an M-Bus slot without device
// (700101010000W) is left out.
func TestLegacyGasAndEmptySlot(t *testing.T) {
	tg, err := p1.Parse([]byte("/ISk5\\2MT382-1004\r\n\r\n0-1:24.1.0(3)\r\n" +
		"0-1:24.3.0(161107190000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(00001.001)\r\n" +
		"0-2:24.1.0(003)\r\n0-2:24.2.1(700101010000W)(00000000)\r\n!\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := sensorMap(Sensors(tg))
	g, ok := s["0-1:24.3.0"]
	if !ok || g.DeviceClass != "gas" || g.Unit != "m³" || g.StateClass != "total_increasing" || g.Precision != 3 || g.Name != "Gas" {
		t.Errorf("DSMR 2.2 gas: %+v", g)
	}
	if _, ok := s["0-2:24.2.1"]; ok {
		t.Errorf("empty M-Bus slot described")
	}
}

// TestBridgeConfigGolden: the instance's own device in each mode, in
// device style (golden) and entity style (the same components).
func TestBridgeConfigGolden(t *testing.T) {
	for _, m := range Modes {
		mode := string(m)
		b := BridgeDevice{ClientID: "smartybridge-" + mode + "-host-1a2b", Mode: m,
			StatusTopic:      "smarty/status/smartybridge-" + mode + "-host-1a2b",
			DiagnosticsTopic: "smarty/bridge/smartybridge-" + mode + "-host-1a2b/diagnostics",
			ProblemTopic:     "smarty/bridge/smartybridge-" + mode + "-host-1a2b/problem"}
		msgs := BridgeConfig(b, DeviceStyle, testOptions)
		if len(msgs) != 1 || msgs[0].Topic != "homeassistant/device/"+b.ClientID+"/config" {
			t.Fatalf("%s: %+v", mode, msgs)
		}
		checkGolden(t, msgs[0].Payload, "../testdata/golden/discovery-bridge-device-"+mode+".json")
		checkKeys(t, msgs[0].Payload)
		var dev struct {
			Device     map[string]any            `json:"device"`
			Components map[string]map[string]any `json:"components"`
		}
		json.Unmarshal(msgs[0].Payload, &dev)
		if dev.Device["identifiers"].([]any)[0] != BridgeID(b.ClientID) {
			t.Errorf("%s: identifiers %v", mode, dev.Device["identifiers"])
		}
		problem := dev.Components["problem"]
		// In words, on the device page (not under diagnostics), with a
		// status whose icon changes and the diagnosis and fix as states.
		if problem["device_class"] != "enum" || problem["entity_category"] != nil || len(problem["options"].([]any)) != len(Problems) ||
			problem["options"].([]any)[0] != "OK" {
			t.Errorf("%s: problem sensor %v", mode, problem)
		}
		if st := dev.Components["status"]; st["device_class"] != "problem" || st["platform"] != "binary_sensor" || dev.Components["fix"] == nil ||
			dev.Components["explanation"] == nil {
			t.Errorf("%s: status %v, fix %v, explanation %v", mode, st, dev.Components["fix"], dev.Components["explanation"])
		}
		if c := dev.Components["connection"]; c["availability"] != nil || c["payload_off"] != "offline" {
			t.Errorf("%s: the connectivity sensor must show off, not unavailable, when the instance is gone: %v", mode, c)
		}
		for _, key := range BridgeKeys(m) {
			if _, ok := dev.Components[key]; !ok {
				t.Errorf("%s: no component for %s", mode, key)
			}
		}
		entity := BridgeConfig(b, EntityStyle, testOptions)
		if len(entity) != len(dev.Components) {
			t.Errorf("%s: %d entity configs for %d components", mode, len(entity), len(dev.Components))
		}
		for _, m := range entity {
			checkKeys(t, m.Payload)
			if !strings.Contains(m.Topic, "/"+b.ClientID+"/") {
				t.Errorf("%s: topic %s is not named after the client id", mode, m.Topic)
			}
		}
	}
}

// TestMakerCodes: the identification line's maker code names the
// manufacturer; an unknown code is shown as it is.
func TestMakerCodes(t *testing.T) {
	for header, want := range map[string]string{
		"Lux5\\253663629_D": "Sagemcom", "ISk5\\2MT382-1000": "Iskra", "KFM5KAIFA-METER": "Kaifa",
		"XMX5LGBBFG1009021373": "Xemex", "FLU5\\253769484_A": "Fluvius", "KAM5123": "Kamstrup", "ZZZ5\\2X": "ZZZ",
	} {
		if got := deviceInfo(Device{ID: "x", Header: header}, Options{}).Manufacturer; got != want {
			t.Errorf("%s: manufacturer %q, want %q", header, got, want)
		}
	}
}
