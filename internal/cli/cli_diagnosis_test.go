package cli

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

// TestDiagnosisOfAnotherMeterAndSilence, through the real binary and
// mosquitto: a meter whose frames decode and, on the same line, frames of
// another meter that fail authentication make wrong_key for that other
// meter (they are not line damage of the first: crc_errors before), with a
// log line that does not blame the cable, and the rejected frames' bytes
// are not counted as skipped. When the meter then falls silent the Problem
// goes from ok to no_data without saying no_frames first.
func TestDiagnosisOfAnotherMeterAndSilence(t *testing.T) {
	good, _ := os.ReadFile("testdata/smarty-2026.telegram")
	key, _ := decrypt.ParseKey(testKey)
	other, _ := decrypt.ParseKey("0123456789ABCDEF0123456789ABCDEF")
	title := decrypt.Title{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}
	stranger := decrypt.Title{'S', 'A', 'G', 1, 2, 3, 4, 5}
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	sub := testenv.Subscribe(t, broker.URL, "smarty/bridge/#")
	_, logs := startBinary(t, map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_MQTT_CLIENT_ID": "diagnosis",
		"SMARTY_KEY": testKey, "SMARTY_METER_TIMEOUT": "3s"})
	diag := func() (d struct {
		Problem      string
		BytesSkipped int64 `json:"bytes_skipped"`
		Auth         int64 `json:"rejected_authentication"`
	}) {
		v, _ := sub.Get("smarty/bridge/diagnosis/diagnostics")
		_ = json.Unmarshal([]byte(v), &d)
		return d
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for c := uint32(100); ctx.Err() == nil; c++ {
			pty.Write(decrypt.Seal(nil, key, decrypt.DefaultAuthKey, title, c, good))
			if c%2 == 0 {
				pty.Write(decrypt.Seal(nil, other, decrypt.DefaultAuthKey, stranger, c, good))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, "wrong_key", func() bool { return diag().Problem == "wrong_key" })
	v, _ := sub.Get("smarty/bridge/diagnosis/problem")
	if !strings.Contains(v, stranger.String()) {
		t.Errorf("the Problem names %s, want the other meter %s", v, stranger)
	}
	if d := diag(); d.BytesSkipped != 0 || d.Auth == 0 {
		t.Errorf("diagnostics %+v: the rejected frames' bytes counted as skipped", d)
	}
	if strings.Contains(logs.String(), "line damages") || !strings.Contains(logs.String(), "forged frames") {
		t.Errorf("the log blames the line for another meter's frames:\n%s", logs)
	}

	// Only the meter, then silence.
	cancel()
	<-stopped
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	stopped = make(chan struct{})
	go func() {
		defer close(stopped)
		for c := uint32(10000); ctx.Err() == nil; c++ {
			pty.Write(decrypt.Seal(nil, key, decrypt.DefaultAuthKey, title, c, good))
			time.Sleep(300 * time.Millisecond)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, "ok", func() bool { return diag().Problem == "ok" })
	cancel()
	<-stopped
	testenv.WaitFor(t, 20*time.Second, "no_data", func() bool { return diag().Problem == "no_data" })
	if strings.Contains(logs.String(), "problem: Bytes arrive") {
		t.Errorf("a meter falling silent was said to send bytes that form no frame:\n%s", logs)
	}
}

// TestProblemNoPortThenReplayed, through the real binary: a device path
// that does not exist is no_port with the reason and what to do (it was
// no_data: "ask the grid operator to open the port"); once the device
// appears the bridge opens it by itself. A stream of frames read before
// (here: the same frame again and again) is replayed, not no_frames with a
// cabling fix.
func TestProblemNoPortThenReplayed(t *testing.T) {
	good, _ := os.ReadFile("testdata/smarty-2026.telegram")
	key, _ := decrypt.ParseKey(testKey)
	title := decrypt.Title{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	later := t.TempDir() + "/ttyLater"
	sub := testenv.Subscribe(t, broker.URL, "smarty/bridge/#")
	startBinary(t, map[string]string{"SMARTY_DEVICE": later, "SMARTY_MQTT_URL": broker.URL, "SMARTY_MQTT_CLIENT_ID": "noport",
		"SMARTY_KEY": testKey, "SMARTY_METER_TIMEOUT": "3s"})
	problem := func() (p string, attrs struct{ Explanation, Fix string }) {
		v, _ := sub.Get("smarty/bridge/noport/diagnostics")
		var d struct{ Problem string }
		_ = json.Unmarshal([]byte(v), &d)
		a, _ := sub.Get("smarty/bridge/noport/problem")
		_ = json.Unmarshal([]byte(a), &attrs)
		return d.Problem, attrs
	}
	testenv.WaitFor(t, 20*time.Second, "no_port", func() bool { p, _ := problem(); return p == "no_port" })
	if _, a := problem(); !strings.Contains(a.Explanation, "no such file") || !strings.Contains(a.Fix, "SMARTY_DEVICE") {
		t.Errorf("no_port says %+v, want the reason and what to check", a)
	}
	if err := os.Symlink(pty.Device, later); err != nil {
		t.Fatal(err)
	}
	frame := decrypt.Seal(nil, key, decrypt.DefaultAuthKey, title, 7, good)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			pty.Write(frame) // the first is new, every later one a repeat
			time.Sleep(300 * time.Millisecond)
		}
	}()
	testenv.WaitFor(t, 40*time.Second, "replayed", func() bool { p, _ := problem(); return p == "replayed" })
	if _, a := problem(); !strings.Contains(a.Explanation, "read before") {
		t.Errorf("replayed says %+v", a)
	}
}

// TestDemoAgainstABrokerLeavesNothing: `demo` pointed at a real broker
// deletes, at its stop, everything retained it published (the fake meter
// and the demo's device would stay in Home Assistant).
func TestDemoAgainstABrokerLeavesNothing(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "#")
	cmd, _, _ := command(map[string]string{"SMARTY_MQTT_URL": broker.URL, "SMARTY_DEMO_INTERVAL": "200ms"}, "demo")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sub.WaitValue("smarty/status/smartybridge-demo", "online", 10*time.Second)
	testenv.WaitFor(t, 10*time.Second, "the demo meter's discovery and states", func() bool {
		_, state := sub.Get("smarty/SAG1100000000001/1-0:1.8.0")
		_, config := sub.Get("homeassistant/device/SAG1100000000001/config")
		return state && config
	})
	stopProcess(t, cmd)
	if left := testenv.Retained(t, broker.URL); len(left) > 0 {
		names := make([]string, 0, len(left))
		for topic := range left {
			names = append(names, topic)
		}
		t.Errorf("%d retained topics left after the demo: %v", len(left), names)
	}
}
