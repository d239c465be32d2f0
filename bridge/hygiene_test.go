package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
)

// withMessage returns the 2026 telegram with text as its message.
func withMessage(t *testing.T, text string) []byte {
	t.Helper()
	return testenv.WithMessage(readFile(t, "smarty-2026.telegram"), text)
}

func TestStatesHomeAssistantKeeps(t *testing.T) {
	msg := func(text string) *p1.Object {
		tg, err := p1.Parse(withMessage(t, text))
		if err != nil {
			t.Fatal(err)
		}
		for i := range tg.Objects {
			if tg.Objects[i].OBIS.String() == "0-0:96.13.0" {
				return &tg.Objects[i]
			}
		}
		t.Fatal("no message")
		return nil
	}
	// An empty retained payload deletes the retained state.
	if got := string(AppendState(nil, msg(""))); got != " " {
		t.Errorf("empty message: state %q, want one space", got)
	}
	long := strings.Repeat("Coupure programmée le 3 décembre, 8h–12h. ", 20) // 840 characters
	got := string(AppendState(nil, msg(long)))
	if n := utf8.RuneCountInString(got); n != 255 || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("long message: %d characters %q", n, got)
	}
	if full := string(AppendFullText(nil, msg(long))); full != long {
		t.Errorf("full text %q", full)
	}
}

// TestLongMessageAttributes: the whole text of a message goes to its
// attributes topic, once per change, and again after a reconnection.
func TestLongMessageAttributes(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/#")
	long := strings.Repeat("Wartungsarbeiten am Netz: Unterbrechung möglich. ", 12)
	k := *key(t, testKey)
	frame := func(c uint32, text string) []byte {
		return decrypt.Seal(nil, k, decrypt.DefaultAuthKey, sysTitle, c, withMessage(t, text))
	}
	src := &slowReader{chunks: [][]byte{frame(1, long), frame(2, long), frame(3, long)}}
	h := start(t, testOptions(broker.URL, &logBuffer{}, decrypt.Options{Key: key(t, testKey)}), src)
	attrs := "smarty/SAG1030700012701/0-0:96.13.0/attributes"
	testenv.WaitFor(t, 10*time.Second, "three telegrams", func() bool { return h.b.Stats().Telegrams == 3 })
	time.Sleep(200 * time.Millisecond)
	v, _ := sub.Get(attrs)
	var a struct{ Text string }
	if err := json.Unmarshal([]byte(v), &a); err != nil || a.Text != long {
		t.Errorf("attributes %q", v)
	}
	if n := sub.N(attrs); n != 1 {
		t.Errorf("attributes published %d times for one text, want once (connections %d, states dropped %d)", n, h.b.connGen.Load(), h.b.Stats().Dropped)
	}
	state, _ := sub.Get("smarty/SAG1030700012701/0-0:96.13.0")
	if utf8.RuneCountInString(state) != 255 {
		t.Errorf("state of %d characters", utf8.RuneCountInString(state))
	}
	h.stop(t)

}

// TestDiscoveryStyleSwitch: moving between device, entity and off leaves
// only the current style's configs retained, and a move announces
// {"migrate_discovery": true} on the old topics first.
func TestDiscoveryStyleSwitch(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	watch := testenv.Subscribe(t, broker.URL, "homeassistant/#")
	configs := func() (device, entity int) {
		for topic, v := range testenv.Retained(t, broker.URL) {
			if v == "" || v == string(migratePayload) || !strings.HasSuffix(topic, "/config") {
				continue
			}
			if strings.HasPrefix(topic, "homeassistant/device/") {
				device++
			} else {
				entity++
			}
		}
		return
	}
	run := func(style discovery.Style, counter uint32) {
		t.Helper()
		logs := &logBuffer{}
		defer func() {
			if t.Failed() {
				t.Logf("%s:\n%s", style, logs)
			}
		}()
		o := testOptions(broker.URL, logs, decrypt.Options{Key: key(t, testKey)})
		o.Discovery = style
		h := start(t, o, &slowReader{chunks: [][]byte{decrypt.Seal(nil, *key(t, testKey), decrypt.DefaultAuthKey, sysTitle, counter, readFile(t, "smarty-2026.telegram"))}})
		testenv.WaitFor(t, 10*time.Second, "a telegram", func() bool { return h.b.Stats().Telegrams == 1 })
		time.Sleep(2 * probeWait)
		h.stop(t)
	}
	run(discovery.DeviceStyle, 1)
	if d, e := configs(); d != 2 || e != 0 {
		t.Fatalf("device style: %d device and %d entity configs, want the meter's and the bridge's device", d, e)
	}
	run(discovery.EntityStyle, 2)
	d, e := configs()
	if d != 0 || e < 40 {
		t.Errorf("entity style after device: %d device and %d entity configs retained", d, e)
	}
	// The old device topic keeps only the migrate request (switch.go).
	if got, _ := watch.Get("homeassistant/device/SAG1030700012701/config"); got != string(migratePayload) {
		t.Errorf("old device config not moved: %.80s", got)
	}
	run(discovery.DeviceStyle, 3)
	if d, e := configs(); d != 2 || e != 0 {
		t.Errorf("device style after entity: %d device and %d entity configs retained", d, e)
	}
	run(discovery.Off, 4)
	if d, e := configs(); d != 0 || e != 0 {
		t.Errorf("off after device: %d device and %d entity configs retained", d, e)
	}
}

// TestForwarderStyleSwitch: a forwarder moves its own device's configs too.
func TestForwarderStyleSwitch(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	watch := testenv.Subscribe(t, broker.URL, "homeassistant/#")
	run := func(style discovery.Style) {
		t.Helper()
		o := opts(t, broker.URL, "fwd", &logBuffer{}, decrypt.Options{})
		o.Discovery = style
		_, stop := runForwarder(t, o, ForwardOptions{}, &slowReader{})
		waitOnline(t, broker.URL, "fwd")
		time.Sleep(3 * probeWait)
		stop()
	}
	run(discovery.DeviceStyle)
	if v, _ := watch.Get("homeassistant/device/fwd/config"); !strings.HasPrefix(v, `{"device"`) {
		t.Fatalf("device style: %.60q", v)
	}
	run(discovery.EntityStyle)
	if v, _ := watch.Get("homeassistant/device/fwd/config"); v != string(migratePayload) {
		t.Errorf("entity style after device: the device topic holds %.60q", v)
	}
	if v, _ := watch.Get("homeassistant/sensor/fwd/problem/config"); !strings.Contains(v, `"unique_id":"smartybridge_fwd_problem"`) {
		t.Errorf("entity style: problem config %.60q", v)
	}
	run(discovery.Off)
	for topic, v := range watch.Topics("homeassistant/") {
		if v != "" && v != string(migratePayload) {
			t.Errorf("off: %s still holds a config", topic)
		}
	}
}
