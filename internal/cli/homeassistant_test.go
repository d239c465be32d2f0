//go:build linux

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/bridge"
	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
)

// haMeter is a meter fed to a pty: a public test vector, sealed again for
// every frame with a rising frame counter (the bridge rejects replays).
type haMeter struct {
	vector   string
	title    decrypt.Title
	key      string
	id       string // the meter as the bridge names it
	tg       *p1.Telegram
	sensors  []discovery.Sensor
	expected map[string]struct {
		Value any    `json:"value"`
		Unit  string `json:"unit"`
	}
	plain []byte
	pty   *testenv.PTY

	mu      sync.Mutex
	counter uint32
	paused  bool
}

func newHAMeter(t *testing.T, vector, title, key string) *haMeter {
	t.Helper()
	m := &haMeter{vector: vector, key: key, counter: 1000}
	copy(m.title[:], title)
	var err error
	if m.plain, err = os.ReadFile("testdata/" + vector + ".telegram"); err != nil {
		t.Fatal(err)
	}
	if m.tg, err = p1.Parse(m.plain); err != nil {
		t.Fatal(err)
	}
	m.id = bridge.TopicSafe(string(m.tg.MeterID()))
	if m.id == "" {
		m.id = m.title.String()
	}
	m.sensors = discovery.Sensors(m.tg)
	b, err := os.ReadFile("testdata/expected/" + vector + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Objects map[string]struct {
			Value any    `json:"value"`
			Unit  string `json:"unit"`
		} `json:"objects"`
	}
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	m.expected = exp.Objects
	m.pty = testenv.Socat(t)
	return m
}

// feed writes one frame a second until ctx ends, except while paused.
func (m *haMeter) feed(ctx context.Context) {
	k, err := decrypt.ParseKey(m.key)
	if err != nil {
		panic(err)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		m.mu.Lock()
		if !m.paused {
			m.counter++
			m.pty.Write(decrypt.Seal(nil, k, decrypt.DefaultAuthKey, m.title, m.counter, m.plain))
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// message puts text into the telegram's message 0-0:96.13.0 (hex, as
// meters send it), with a CRC that matches.
func (m *haMeter) message(t *testing.T, text string) {
	t.Helper()
	m.plain = testenv.WithMessage(m.plain, text)
	var err error
	if m.tg, err = p1.Parse(m.plain); err != nil {
		t.Fatal(err)
	}
}

func (m *haMeter) pause(p bool) {
	m.mu.Lock()
	m.paused = p
	m.mu.Unlock()
}

func (m *haMeter) uniqueID(s discovery.Sensor) string { return m.id + "_" + s.OBIS.String() }

// haComponent is one component of a meter's discovery config.
type haComponent struct {
	Platform        string `json:"platform"`
	UniqueID        string `json:"unique_id"`
	DefaultEntityID string `json:"default_entity_id"`
	DeviceClass     string `json:"device_class"`
	Unit            string `json:"unit_of_measurement"`
	StateClass      string `json:"state_class"`
}

// components are m's discovery components by object id, as the bridge
// publishes them.
func (m *haMeter) components(t *testing.T) map[string]haComponent {
	t.Helper()
	msg := discovery.DeviceConfig(discovery.Device{ID: m.id, Header: string(m.tg.Header)}, m.sensors, discovery.Options{TopicPrefix: "smarty"})
	var cfg struct {
		Components map[string]haComponent `json:"components"`
	}
	if err := json.Unmarshal(msg.Payload, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Components
}

// entityIDs maps unique id to the entity id discovery asks for.
func (m *haMeter) entityIDs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range m.components(t) {
		out[c.UniqueID] = c.DefaultEntityID
	}
	return out
}

type haDevice struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Manufacturer string     `json:"manufacturer"`
	Model        string     `json:"model"`
	SerialNumber string     `json:"serial_number"`
	Identifiers  [][]string `json:"identifiers"`
	ViaDeviceID  *string    `json:"via_device_id"`
}

type haEntity struct {
	EntityID       string         `json:"entity_id"`
	UniqueID       string         `json:"unique_id"`
	Platform       string         `json:"platform"`
	DeviceID       string         `json:"device_id"`
	DisabledBy     *string        `json:"disabled_by"`
	EntityCategory *string        `json:"entity_category"`
	Options        map[string]any `json:"options"`
}

func haDevices(ha *testenv.HomeAssistant) []haDevice {
	var d []haDevice
	ha.WS(map[string]any{"type": "config/device_registry/list"}, &d)
	return d
}

func haEntities(ha *testenv.HomeAssistant) []haEntity {
	var e []haEntity
	ha.WS(map[string]any{"type": "config/entity_registry/list"}, &e)
	return e
}

// devicesOf returns the registry's devices for meter id.
func devicesOf(devs []haDevice, id string) []haDevice {
	var out []haDevice
	for _, d := range devs {
		for _, ident := range d.Identifiers {
			if len(ident) == 2 && ident[0] == "mqtt" && ident[1] == id {
				out = append(out, d)
			}
		}
	}
	return out
}

// entitiesOf returns the registry's mqtt entities of meter m by unique id.
func entitiesOf(ents []haEntity, m *haMeter) map[string]haEntity {
	out := map[string]haEntity{}
	for _, e := range ents {
		if e.Platform == "mqtt" && strings.HasPrefix(e.UniqueID, m.id+"_") && !strings.HasPrefix(e.UniqueID, m.id+"_quarter_") {
			out[e.UniqueID] = e
		}
	}
	return out
}

// waitRegistered waits until Home Assistant has m's device and every one of
// its entities.
func waitRegistered(t *testing.T, ha *testenv.HomeAssistant, m *haMeter) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, m.vector+" in Home Assistant's registries", func() bool {
		return len(devicesOf(haDevices(ha), m.id)) == 1 && len(entitiesOf(haEntities(ha), m)) >= len(m.sensors)
	})
}

// checkRegistry asserts the device and entity registries for m.
// userEnabled says the test has enabled every entity.
func checkRegistry(t *testing.T, ha *testenv.HomeAssistant, m *haMeter, manufacturer, model string, userEnabled bool) map[string]haEntity {
	t.Helper()
	devs := devicesOf(haDevices(ha), m.id)
	if len(devs) != 1 {
		t.Fatalf("%s: %d devices, want 1: %+v", m.vector, len(devs), devs)
	}
	d := devs[0]
	if d.Name != "Smart meter "+m.id || d.Manufacturer != manufacturer || d.Model != model || d.SerialNumber != m.id {
		t.Errorf("%s: device %+v, want name %q manufacturer %q model %q serial %q", m.vector, d, "Smart meter "+m.id, manufacturer, model, m.id)
	}
	ents := entitiesOf(haEntities(ha), m)
	if len(ents) != len(m.sensors) {
		t.Errorf("%s: %d entities, want %d", m.vector, len(ents), len(m.sensors))
	}
	wantIDs := m.entityIDs(t)
	for _, s := range m.sensors {
		e, ok := ents[m.uniqueID(s)]
		if !ok {
			t.Errorf("%s: no entity for %s (%s)", m.vector, s.OBIS, s.Name)
			continue
		}
		if e.EntityID != wantIDs[e.UniqueID] {
			t.Errorf("%s %s: entity_id %s, want %s (default_entity_id)", m.vector, s.OBIS, e.EntityID, wantIDs[e.UniqueID])
		}
		if e.DeviceID != d.ID {
			t.Errorf("%s %s: on device %s, want %s", m.vector, s.OBIS, e.DeviceID, d.ID)
		}
		hidden := s.Visibility == discovery.Hidden || s.Visibility == discovery.HiddenDiagnostic
		if disabled := e.DisabledBy != nil && *e.DisabledBy == "integration"; disabled != (hidden && !userEnabled) {
			t.Errorf("%s %s: disabled_by %v, want disabled=%v", m.vector, s.OBIS, ptr(e.DisabledBy), hidden)
		}
		// Home Assistant keeps the suggested precision as a sensor option.
		// (written when the entity is added: not while it is disabled).
		if s.Precision >= 0 && s.DeviceClass != "" && e.DisabledBy == nil {
			sensorOpts, _ := e.Options["sensor"].(map[string]any)
			if p, ok := sensorOpts["suggested_display_precision"].(float64); !ok || int(p) != s.Precision {
				t.Errorf("%s %s: suggested_display_precision %v, want %d", m.vector, s.OBIS, sensorOpts["suggested_display_precision"], s.Precision)
			}
		}
		diag := s.Visibility == discovery.Diagnostic || s.Visibility == discovery.HiddenDiagnostic
		if got := e.EntityCategory != nil && *e.EntityCategory == "diagnostic"; got != diag {
			t.Errorf("%s %s: entity_category %v, want diagnostic=%v", m.vector, s.OBIS, ptr(e.EntityCategory), diag)
		}
	}
	return ents
}

func ptr(s *string) string {
	if s == nil {
		return "null"
	}
	return *s
}

// checkStates asserts every enabled entity's state against the telegram
// and discovery, and the text states against what the bridge published.
func checkStates(t *testing.T, ha *testenv.HomeAssistant, sub *testenv.Subscriber, m *haMeter, all bool) {
	t.Helper()
	states := ha.States()
	ents := entitiesOf(haEntities(ha), m)
	for _, s := range m.sensors {
		e := ents[m.uniqueID(s)]
		st, ok := states[e.EntityID]
		if e.DisabledBy != nil {
			if all {
				t.Errorf("%s %s: still disabled", m.vector, s.OBIS)
			}
			continue
		}
		if !ok {
			t.Errorf("%s %s: %s has no state", m.vector, s.OBIS, e.EntityID)
			continue
		}
		attr := func(k string) string { v, _ := st.Attributes[k].(string); return v }
		if attr("unit_of_measurement") != s.Unit || attr("device_class") != s.DeviceClass || attr("state_class") != s.StateClass {
			t.Errorf("%s %s: unit %q device_class %q state_class %q, want %q %q %q", m.vector, s.OBIS,
				attr("unit_of_measurement"), attr("device_class"), attr("state_class"), s.Unit, s.DeviceClass, s.StateClass)
		}
		if name := "Smart meter " + m.id + " " + s.Name; attr("friendly_name") != name {
			t.Errorf("%s %s: friendly_name %q, want %q", m.vector, s.OBIS, attr("friendly_name"), name)
		}
		if st.State == "unknown" || st.State == "unavailable" {
			t.Errorf("%s %s: %s is %s, the telegram carries it", m.vector, s.OBIS, e.EntityID, st.State)
			continue
		}
		published, _ := sub.Get(discovery.StateTopic("smarty", m.id, s.OBIS))
		want, ok := m.expected[s.OBIS.String()]
		switch v, isNum := want.Value.(float64); {
		case s.Mapped():
			// A code with named states, a version, a message: shown as
			// discovery's value template makes it.
			if w := s.Shown(published); st.State != w {
				t.Errorf("%s %s: state %q, the bridge published %q: want %q", m.vector, s.OBIS, st.State, published, w)
			}
		case ok && isNum:
			got, err := strconv.ParseFloat(st.State, 64)
			if err != nil || math.Abs(got-v) > 1e-9*math.Max(1, math.Abs(v)) {
				t.Errorf("%s %s: state %q, the telegram says %v", m.vector, s.OBIS, st.State, v)
			}
		case s.DeviceClass == "timestamp":
			w, _ := want.Value.(string)
			got, err1 := time.Parse(time.RFC3339, st.State)
			wantT, err2 := time.Parse(time.RFC3339, w)
			if err1 != nil || err2 != nil || !got.Equal(wantT) {
				t.Errorf("%s %s: timestamp %q, the telegram says %q", m.vector, s.OBIS, st.State, w)
			}
		case s.OBIS.String() == "0-0:42.0.0":
			if st.State != m.id {
				t.Errorf("%s %s: state %q, want the meter id %s", m.vector, s.OBIS, st.State, m.id)
			}
		default:
			// A text: Home Assistant shows what the bridge published,
			// trimmed (an empty text is published as one space).
			if want := s.Shown(published); st.State != want {
				t.Errorf("%s %s: state %q, the bridge published %q: want %q", m.vector, s.OBIS, st.State, published, want)
			}
		}
	}
}

// waitStates waits until every enabled entity of m has a state that is
// neither unknown nor unavailable, or (want "unavailable") all are
// unavailable.
func waitStates(t *testing.T, ha *testenv.HomeAssistant, m *haMeter, want string, d time.Duration) {
	t.Helper()
	testenv.WaitFor(t, d, m.vector+" entities "+want, func() bool {
		states := ha.States()
		ents := entitiesOf(haEntities(ha), m)
		n := 0
		for _, e := range ents {
			if e.DisabledBy != nil {
				continue
			}
			st, ok := states[e.EntityID]
			if !ok {
				return false
			}
			unavailable := st.State == "unavailable"
			if (want == "unavailable") != unavailable || st.State == "unknown" && want != "unavailable" {
				return false
			}
			n++
		}
		return n > 0
	})
}

const haCustomComponent = `"""Test hook of smartybridge's TestHomeAssistant: compile the recorder's
statistics of the current five minutes now instead of at their end."""

from homeassistant.components.recorder import get_instance
from homeassistant.components.recorder.tasks import StatisticsTask
from homeassistant.util import dt as dt_util

DOMAIN = "smartybridge_test"


async def async_setup(hass, config):
    async def compile_statistics(call):
        now = dt_util.utcnow()
        start = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
        instance = get_instance(hass)
        instance.queue_task(StatisticsTask(start, True))
        await instance.async_block_till_done()

    hass.services.async_register(DOMAIN, "compile_statistics", compile_statistics)
    return True
`

const haConfig = `homeassistant:
  name: smartybridge test
  latitude: 49.61
  longitude: 6.13
  elevation: 300
  unit_system: metric
  time_zone: Europe/Luxembourg
  country: LU
  currency: EUR
  language: en
recorder:
  db_url: sqlite:////config/home-assistant_v2.db
  commit_interval: 0
logger:
  default: info
api:
websocket_api:
energy:
history:
logbook:
smartybridge_test:
`

// haLogAllowed lists the Home Assistant log records that are not about
// smartybridge and that this test's trimmed install causes: no ffmpeg
// binary, no libturbojpeg, no isal, --skip-pip, and the test hook being a
// custom integration.
var haLogAllowed = []struct{ logger, text string }{
	{"homeassistant.bootstrap", "Skipping pip installation"},
	{"aiohttp_fast_zlib", "zlib_ng and isal are not available"},
	{"haffmpeg.core", "FFmpeg fails"},
	{"haffmpeg.tools", "Error starting FFmpeg"},
	{"homeassistant.components.camera.img_util", "Error loading libturbojpeg"},
	{"homeassistant.loader", "custom integration smartybridge_test"},
}

// TestHomeAssistant shows a real Home Assistant core the real binary's
// messages and asserts, through its REST and WebSocket APIs, what it makes
// of them: devices, entities, states, the Energy dashboard, statistics,
// restarts and unavailability, split mode and entity-style discovery.
func TestHomeAssistant(t *testing.T) {
	root := testenv.NeedHomeAssistant(t)
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/#", "homeassistant/#")
	ha := testenv.NewHomeAssistant(t, root, haConfig, map[string]string{
		"custom_components/smartybridge_test/__init__.py": haCustomComponent,
		"custom_components/smartybridge_test/manifest.json": `{"domain": "smartybridge_test", "name": "smartybridge test hook", "version": "1.0.0",
 "dependencies": ["recorder"], "codeowners": [], "documentation": "https://example.invalid", "iot_class": "local_push"}`,
	})
	ha.Start()
	ha.Onboard()
	var cfg struct{ Version string }
	ha.Get("/api/config", &cfg)
	pinned, _ := os.ReadFile("tools/homeassistant/VERSION")
	if cfg.Version != strings.TrimSpace(string(pinned)) {
		t.Fatalf("Home Assistant %s runs, %s is pinned: run sudo %s", cfg.Version, pinned, testenv.HomeAssistantSetup)
	}
	t.Logf("Home Assistant %s", cfg.Version)
	// No revert of the http settings scheduled: the harness promoted them
	// (a test longer than five minutes would lose its server otherwise).
	var httpCfg struct {
		RevertAt any `json:"revert_at"`
	}
	ha.WS(map[string]any{"type": "http/config"}, &httpCfg)
	if httpCfg.RevertAt != nil {
		t.Errorf("Home Assistant reverts its http settings at %v", httpCfg.RevertAt)
	}
	ha.AddMQTT(broker.Port)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	smarty := newHAMeter(t, "smarty-2026", "SYSTEMID", testKey)
	old := newHAMeter(t, "smarty-2018-real", "SAGgp\x01\xbdT", "D491470F47126332B07D1923B3504188")
	dutch := newHAMeter(t, "dsmr5-nl", "NLDSMR05", "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
	// A message longer than Home Assistant keeps in a state, in French.
	longMessage := strings.Repeat("Coupure programmée le 3 décembre de 8h à 12h pour travaux. ", 8)
	dutch.message(t, longMessage)
	bridgeEnv := func(m *haMeter, client string, extra ...string) map[string]string {
		env := map[string]string{"SMARTY_DEVICE": m.pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": m.key,
			"SMARTY_MQTT_CLIENT_ID": client, "SMARTY_METER_TIMEOUT": "5s", "SMARTY_LOG_LEVEL": "debug"}
		for i := 0; i+1 < len(extra); i += 2 {
			env[extra[i]] = extra[i+1]
		}
		return env
	}

	// One meter in bridge mode: its device, entities and states.
	go smarty.feed(ctx)
	smartyBridge, _ := startBinary(t, bridgeEnv(smarty, "ha-smarty", "SMARTY_REFERENCE_POWER", "7", "SMARTY_STATE_DIR", t.TempDir()))
	waitRegistered(t, ha, smarty)
	before := checkRegistry(t, ha, smarty, "Sagemcom", "T210-D", false)
	waitStates(t, ha, smarty, "available", 30*time.Second)
	checkStates(t, ha, sub, smarty, false)
	checkBridgeDevice(t, ha, "ha-smarty", smarty, "ok", "on")
	checkQuarterEntities(t, ha, sub, smarty)
	checkLogbookQuiet(t, ha)

	// Enable the hidden entities (Home Assistant reloads MQTT 30 s later)
	// so that every state is checked, while the other meters come up.
	for _, e := range before {
		if e.DisabledBy != nil {
			ha.WS(map[string]any{"type": "config/entity_registry/update", "entity_id": e.EntityID, "disabled_by": nil}, nil)
		}
	}

	// A second and a third meter: new devices; the first is undisturbed.
	go old.feed(ctx)
	go dutch.feed(ctx)
	startBinary(t, bridgeEnv(old, "ha-old"))
	startBinary(t, bridgeEnv(dutch, "ha-dutch"))
	waitRegistered(t, ha, old)
	waitRegistered(t, ha, dutch)
	checkRegistry(t, ha, old, "Sagemcom", "T210-D", false)
	checkRegistry(t, ha, dutch, "Iskra", "MT382-1000", false)
	waitStates(t, ha, old, "available", 30*time.Second)
	waitStates(t, ha, dutch, "available", 30*time.Second)
	checkStates(t, ha, sub, old, false)
	checkStates(t, ha, sub, dutch, false)
	msgID := dutch.entityIDs(t)[dutch.id+"_0-0:96.13.0"]
	msg := ha.States()[msgID]
	if got := []rune(msg.State); len(got) != discovery.MaxState || !strings.HasPrefix(longMessage, string(got[:len(got)-1])) {
		t.Errorf("%s: a state of %d characters %q, want the message cut at %d", msgID, len(got), msg.State, discovery.MaxState)
	}
	if msg.Attributes["text"] != longMessage {
		t.Errorf("%s: attribute text %q, want the whole message", msgID, msg.Attributes["text"])
	}
	if devs := devicesOf(haDevices(ha), smarty.id); len(devs) != 1 {
		t.Errorf("first meter: %d devices after the others came", len(devs))
	}

	// The Energy dashboard: grid import/export with power, and gas.
	energy := func(m *haMeter, code string) string {
		c, _ := p1.ParseOBIS(code)
		for _, s := range m.sensors {
			if s.OBIS == c {
				return m.entityIDs(t)[m.uniqueID(s)]
			}
		}
		t.Fatalf("%s has no %s", m.vector, code)
		return ""
	}
	imp, exp, gas := energy(smarty, "1-0:1.8.0"), energy(smarty, "1-0:2.8.0"), energy(smarty, "0-1:24.2.1")
	ha.WS(map[string]any{"type": "energy/save_prefs",
		"energy_sources": []any{
			map[string]any{"type": "grid", "stat_energy_from": imp, "stat_energy_to": exp, "cost_adjustment_day": 0,
				"power_config": map[string]any{"stat_rate_from": energy(smarty, "1-0:1.7.0"), "stat_rate_to": energy(smarty, "1-0:2.7.0")}},
			map[string]any{"type": "grid", "stat_energy_from": energy(dutch, "1-0:1.8.1"), "stat_energy_to": energy(dutch, "1-0:2.8.1"), "cost_adjustment_day": 0},
			map[string]any{"type": "gas", "stat_energy_from": gas},
		}}, nil)
	ha.Service("smartybridge_test", "compile_statistics", nil)
	now := time.Now().UTC()
	start := now.Truncate(5 * time.Minute)
	var stats map[string][]map[string]any
	ha.WS(map[string]any{"type": "recorder/statistics_during_period", "start_time": start.Format(time.RFC3339),
		"statistic_ids": []string{imp, exp, gas}, "period": "5minute", "types": []string{"sum", "state"}}, &stats)
	for _, id := range []string{imp, exp, gas} {
		if len(stats[id]) == 0 {
			t.Errorf("no statistics for %s after a compile: %v", id, stats)
		}
	}
	var validation struct {
		EnergySources [][]map[string]any `json:"energy_sources"`
	}
	ha.WS(map[string]any{"type": "energy/validate"}, &validation)
	if len(validation.EnergySources) != 3 {
		t.Errorf("energy/validate: %d sources, want 3", len(validation.EnergySources))
	}
	for i, issues := range validation.EnergySources {
		for _, issue := range issues {
			t.Errorf("energy/validate, source %d: %v", i, issue)
		}
	}

	// The hidden entities, enabled above, get their states after the reload.
	waitStates(t, ha, smarty, "available", 60*time.Second)
	testenv.WaitFor(t, 60*time.Second, "every entity enabled", func() bool {
		for _, e := range entitiesOf(haEntities(ha), smarty) {
			if e.DisabledBy != nil {
				return false
			}
		}
		return true
	})
	waitStates(t, ha, smarty, "available", 30*time.Second)
	checkStates(t, ha, sub, smarty, true)
	registry := entityIDSet(entitiesOf(haEntities(ha), smarty))

	// The meter falls silent past SMARTY_METER_TIMEOUT, then comes back.
	smarty.pause(true)
	waitStates(t, ha, smarty, "unavailable", 20*time.Second)
	waitStates(t, ha, old, "available", time.Second)
	smarty.pause(false)
	waitStates(t, ha, smarty, "available", 20*time.Second)

	// The bridge stops: its meter is unavailable, the others are not;
	// its own device says it is disconnected.
	stopProcess(t, smartyBridge)
	waitStates(t, ha, smarty, "unavailable", 10*time.Second)
	waitStates(t, ha, old, "available", time.Second)
	checkBridgeDevice(t, ha, "ha-smarty", nil, "unavailable", "off")

	// Split mode for the same meter: the same registry and states.
	dec, _ := startBinary(t, bridgeEnv(smarty, "ha-decrypt", "SMARTY_MODE", "decrypt", "SMARTY_DEVICE", ""))
	fwd, _ := startBinary(t, bridgeEnv(smarty, "ha-forward", "SMARTY_MODE", "forward", "SMARTY_KEY", ""))
	waitStates(t, ha, smarty, "available", 30*time.Second)
	checkRegistry(t, ha, smarty, "Sagemcom", "T210-D", true)
	checkStates(t, ha, sub, smarty, true)
	if got := entityIDSet(entitiesOf(haEntities(ha), smarty)); !slices.Equal(got, registry) {
		t.Errorf("split mode changed the registry:\n%v\nwas\n%v", got, registry)
	}
	checkSplitReferencePower(t, ha, sub, smarty)

	// Home Assistant restarts: discovery again on its birth message, the
	// same devices and entities, no duplicates.
	configTopic := "homeassistant/device/" + smarty.id + "/config"
	sent := sub.N(configTopic)
	ha.Stop()
	ha.Start()
	testenv.WaitFor(t, 30*time.Second, "discovery re-sent after Home Assistant's restart", func() bool { return sub.N(configTopic) > sent })
	waitStates(t, ha, smarty, "available", 30*time.Second)
	waitStates(t, ha, old, "available", 30*time.Second)
	for _, m := range []*haMeter{smarty, old, dutch} {
		if devs := devicesOf(haDevices(ha), m.id); len(devs) != 1 {
			t.Errorf("%s: %d devices after the restart", m.vector, len(devs))
		}
	}
	if got := entityIDSet(entitiesOf(haEntities(ha), smarty)); !slices.Equal(got, registry) {
		t.Errorf("the restart changed the registry:\n%v\nwas\n%v", got, registry)
	}
	checkStates(t, ha, sub, smarty, true)

	// Switching to entity-style discovery moves the same entities
	// (migrate_discovery): nothing to remove by hand, no duplicate, no
	// warning (checked with the log below).
	stopProcess(t, fwd)
	stopProcess(t, dec)
	entityBridge, _ := startBinary(t, bridgeEnv(smarty, "ha-entity", "SMARTY_DISCOVERY", "entity"))
	testenv.WaitFor(t, 20*time.Second, "the old device config moved", func() bool {
		v, _ := sub.Get(configTopic)
		return v == `{"migrate_discovery":true}`
	})
	waitRegistered(t, ha, smarty)
	waitStates(t, ha, smarty, "available", 30*time.Second)
	if got := entityIDSet(entitiesOf(haEntities(ha), smarty)); !slices.Equal(got, registry) {
		t.Errorf("entity-style discovery gives other entities:\n%v\nwant\n%v", got, registry)
	}
	if devs := devicesOf(haDevices(ha), smarty.id); len(devs) != 1 {
		t.Errorf("entity-style discovery: %d devices, want 1", len(devs))
	}
	checkStates(t, ha, sub, smarty, false)

	// And back to device discovery: the entity configs move again.
	stopProcess(t, entityBridge)
	startBinary(t, bridgeEnv(smarty, "ha-device", "SMARTY_DISCOVERY", "device"))
	testenv.WaitFor(t, 20*time.Second, "the device config back", func() bool {
		v, _ := sub.Get(configTopic)
		return strings.HasPrefix(v, `{"device"`)
	})
	waitStates(t, ha, smarty, "available", 30*time.Second)
	if got := entityIDSet(entitiesOf(haEntities(ha), smarty)); !slices.Equal(got, registry) {
		t.Errorf("device discovery after entity discovery gives other entities:\n%v\nwant\n%v", got, registry)
	}
	for topic, v := range sub.Topics("homeassistant/sensor/" + smarty.id + "/") {
		if v != "" {
			t.Errorf("entity config left behind: %s", topic)
		}
	}
	checkStates(t, ha, sub, smarty, false)

	// Nothing in Home Assistant's log about our entities, or anything else
	// this install does not explain.
	records := ha.Log()
	if !slices.ContainsFunc(records, func(r testenv.LogRecord) bool { return strings.Contains(r.Message, "Skipping pip installation") }) {
		t.Error("home-assistant.log lacks the --skip-pip warning: is it read at all?")
	}
	for _, r := range records {
		allowed := false
		for _, a := range haLogAllowed {
			if r.Logger == a.logger && strings.Contains(r.Message, a.text) {
				allowed = true
			}
		}
		if !allowed {
			t.Errorf("Home Assistant logged %s [%s] %s", r.Level, r.Logger, r.Message)
		}
	}
}

// checkBridgeDevice waits for the bridge device of client to show problem
// and connection (binary sensor), and checks that meter m (if any) links
// to it.
func checkBridgeDevice(t *testing.T, ha *testenv.HomeAssistant, client string, m *haMeter, problem, connection string) {
	t.Helper()
	ident := discovery.BridgeID(client)
	node := strings.TrimPrefix(ident, "smartybridge_")
	problemID := "sensor.smartybridge_" + strings.ReplaceAll(node, "-", "_") + "_problem"
	connID := "binary_sensor.smartybridge_" + strings.ReplaceAll(node, "-", "_") + "_connection"
	testenv.WaitFor(t, 30*time.Second, client+" problem "+problem+", connection "+connection, func() bool {
		st := ha.States()
		return st[problemID].State == discovery.Problem(problem).Label() && st[connID].State == connection
	})
	devs := devicesOf(haDevices(ha), ident)
	if len(devs) != 1 || devs[0].Manufacturer != "smartybridge" || !strings.Contains(devs[0].Model, "bridge mode") {
		t.Fatalf("bridge device %s: %+v", ident, devs)
	}
	// Named as a person reads it, not after its client id.
	if !strings.HasPrefix(devs[0].Name, "Smarty bridge (") {
		t.Errorf("bridge device named %q, want Smarty bridge (host)", devs[0].Name)
	}
	if m != nil {
		md := devicesOf(haDevices(ha), m.id)
		if len(md) != 1 || md[0].ViaDeviceID == nil || *md[0].ViaDeviceID != devs[0].ID {
			t.Errorf("%s does not link to its bridge %s: %+v", m.vector, devs[0].ID, md)
		}
	}
	st := ha.States()[problemID]
	// Readable on the device page without opening anything: the status
	// (its icon changes with it), the diagnosis and what to do.
	base := strings.TrimSuffix(problemID, "_problem")
	states := ha.States()
	status, diagnosis, fix := states["binary_sensor."+strings.TrimPrefix(base, "sensor.")+"_status"], states[base+"_explanation"], states[base+"_fix"]
	if wantOn := problem != "ok" && problem != "no_meter"; problem != "unavailable" && ((status.State == "on") != wantOn ||
		diagnosis.State == "" || diagnosis.State == "unknown" || fix.State == "" || fix.State == "unknown") {
		t.Errorf("%s: status %q, diagnosis %q, what to do %q", client, status.State, diagnosis.State, fix.State)
	}
	if problem == "ok" {
		if expl, _ := st.Attributes["explanation"].(string); expl == "" {
			t.Errorf("%s: no explanation attribute: %v", problemID, st.Attributes)
		}
		if opts, _ := st.Attributes["options"].([]any); len(opts) != len(discovery.Problems) {
			t.Errorf("%s: options %v", problemID, st.Attributes["options"])
		}
	}
}

func entityIDSet(ents map[string]haEntity) []string {
	out := make([]string, 0, len(ents))
	for u, e := range ents {
		out = append(out, fmt.Sprintf("%s=%s", u, e.EntityID))
	}
	sort.Strings(out)
	return out
}

// checkQuarterEntities: the reference power's entities exist on the
// meter's device with the classes and units discovery gives them; without
// a price the cost entities are unavailable, not 0; the number entities
// are set through Home Assistant's own service call, which reaches the
// bridge, and the cost entities come up once a price is set.
func checkQuarterEntities(t *testing.T, ha *testenv.HomeAssistant, sub *testenv.Subscriber, m *haMeter) {
	t.Helper()
	components := m.components(t)
	registered := map[string]haEntity{}
	for _, e := range haEntities(ha) {
		registered[e.UniqueID] = e
	}
	ids := map[string]string{}
	n := 0
	for key, c := range components {
		if !strings.HasPrefix(key, "quarter_") {
			continue
		}
		n++
		e, ok := registered[c.UniqueID]
		if !ok || e.EntityID != c.DefaultEntityID {
			t.Errorf("%s: registered as %+v, want %s", key, e, c.DefaultEntityID)
			continue
		}
		ids[strings.TrimPrefix(key, "quarter_")] = e.EntityID
	}
	if n != 14 {
		t.Errorf("%d entities of the reference power in discovery, want 14", n)
	}
	testenv.WaitFor(t, 30*time.Second, "the reference power's states", func() bool {
		st := ha.States()
		return st[ids["energy"]].State != "" && st[ids["energy"]].State != "unknown" && st[ids["cost_today"]].State == "unavailable"
	})
	states := ha.States()
	for key, c := range components {
		key = strings.TrimPrefix(key, "quarter_")
		st, ok := states[ids[key]]
		if !ok {
			continue
		}
		attr := func(k string) string { v, _ := st.Attributes[k].(string); return v }
		if c.Platform == "sensor" && (attr("unit_of_measurement") != c.Unit || attr("device_class") != c.DeviceClass || attr("state_class") != c.StateClass) {
			t.Errorf("%s: unit %q class %q state class %q, want %q %q %q", ids[key], attr("unit_of_measurement"), attr("device_class"),
				attr("state_class"), c.Unit, c.DeviceClass, c.StateClass)
		}
		wantUnavailable := key == "cost_today" || key == "cost_month" || key == "last_energy" || key == "last_average_power" ||
			key == "last_overrun" || key == "peak_month" // no price; no quarter finished (the test meter's clock stands still)
		if (st.State == "unavailable" || st.State == "unknown") != wantUnavailable {
			t.Errorf("%s is %q", ids[key], st.State)
		}
	}
	if s := states[ids["reference_power"]].State; s != "7.0" && s != "7" {
		t.Errorf("reference power %q, want 7 (SMARTY_REFERENCE_POWER)", s)
	}
	ha.Service("number", "set_value", map[string]any{"entity_id": ids["reference_power"], "value": 12})
	ha.Service("number", "set_value", map[string]any{"entity_id": ids["overrun_price"], "value": 0.114})
	sub.WaitValue("smarty/"+m.id+"/reference_power", "12", 15*time.Second)
	sub.WaitValue("smarty/"+m.id+"/overrun_price", "0.114", 15*time.Second)
	testenv.WaitFor(t, 30*time.Second, "the settings and costs in Home Assistant", func() bool {
		st := ha.States()
		ref, _ := strconv.ParseFloat(st[ids["reference_power"]].State, 64)
		cost, err := strconv.ParseFloat(st[ids["cost_today"]].State, 64)
		return ref == 12 && err == nil && cost == 0 && st[ids["overrun_expected"]].State == "off"
	})
}

// checkSplitReferencePower: in split mode the decryptor computes the
// reference power's entities and takes their settings from Home
// Assistant's service call (the bridge that set them before is stopped).
func checkSplitReferencePower(t *testing.T, ha *testenv.HomeAssistant, sub *testenv.Subscriber, m *haMeter) {
	t.Helper()
	components := m.components(t)
	id := func(key string) string {
		for _, e := range haEntities(ha) {
			if e.UniqueID == components[key].UniqueID {
				return e.EntityID
			}
		}
		t.Fatalf("%s is not registered", key)
		return ""
	}
	ref, energy, allowed := id("quarter_reference_power"), id("quarter_energy"), id("quarter_allowed_power")
	ha.Service("number", "set_value", map[string]any{"entity_id": ref, "value": 9})
	sub.WaitValue("smarty/"+m.id+"/reference_power", "9", 15*time.Second)
	testenv.WaitFor(t, 30*time.Second, "the decryptor's reference power in Home Assistant", func() bool {
		st := ha.States()
		v, _ := strconv.ParseFloat(st[ref].State, 64)
		_, eErr := strconv.ParseFloat(st[energy].State, 64)
		_, aErr := strconv.ParseFloat(st[allowed].State, 64)
		return v == 9 && eErr == nil && aErr == nil
	})
}

// checkLogbookQuiet: in steady state, a telegram a second, our entities
// add next to nothing to the logbook (the Activity card of the device
// pages): Telegram time and Last telegram added one entry per telegram.
func checkLogbookQuiet(t *testing.T, ha *testenv.HomeAssistant) {
	t.Helper()
	start := time.Now().UTC()
	time.Sleep(25 * time.Second)
	var events []struct {
		EntityID string  `json:"entity_id"`
		State    string  `json:"state"`
		When     float64 `json:"when"`
	}
	ha.WS(map[string]any{"type": "logbook/get_events", "start_time": start.Format(time.RFC3339), "end_time": time.Now().UTC().Format(time.RFC3339)}, &events)
	var ours []string
	for _, e := range events {
		if strings.Contains(e.EntityID, "smarty") && e.When >= float64(start.UnixMilli())/1000 {
			ours = append(ours, e.EntityID+"="+e.State)
		}
	}
	// A few an hour is the goal: one in 25 s would be 144 an hour.
	if len(ours) > 0 {
		t.Errorf("%d logbook entries from our entities in 25 s of steady state: %v", len(ours), ours)
	}
}
