package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestNoisyLineLive: a line shared by three encrypted meters, with noise,
// a frame cut short and false headers (sim.NoisyLine), then a plain
// telegram whose final line end is missing, written to a real pty and
// read by the real binary: in bridge mode, and through a forwarder and a
// decryptor. Every intact telegram is published: the plain one too, at
// the pause after it (it waited for a line end that never came before).
func TestNoisyLineLive(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	stream, _, titles := sim.NoisyLine(t0)
	var keys []string
	for _, title := range titles {
		keys = append(keys, title.String()+":"+sim.DemoKeyHex)
	}
	plain, _ := os.ReadFile("testdata/dsmr5-nl.telegram")
	stream = append(stream, bytes.TrimSuffix(plain, []byte("\r\n"))...)
	// Telegrams per meter in the stream, by its id.
	want := map[string]int{"SAG1100000000040": 3, "SAG1100000000041": 3, "SAG1100000000042": 2, "K8EG004046395507": 1}

	check := func(t *testing.T, sub *testenv.Subscriber) {
		t.Helper()
		testenv.WaitFor(t, 40*time.Second, "every intact telegram", func() bool {
			for id, n := range want {
				if sub.N("smarty/"+id+"/0-0:1.0.0") != n {
					return false
				}
			}
			return true
		})
	}
	t.Run("bridge", func(t *testing.T) {
		broker := testenv.Mosquitto(t, "")
		pty := testenv.Socat(t)
		sub := testenv.Subscribe(t, broker.URL, "smarty/#")
		startBinary(t, map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
			"SMARTY_KEYS": strings.Join(keys, ","), "SMARTY_MQTT_CLIENT_ID": "noisy-bridge"})
		sub.WaitValue("smarty/status/noisy-bridge", "online", 10*time.Second)
		pty.Write(stream)
		check(t, sub)
	})
	t.Run("split", func(t *testing.T) {
		broker := testenv.Mosquitto(t, "")
		pty := testenv.Socat(t)
		sub := testenv.Subscribe(t, broker.URL, "smarty/#")
		startBinary(t, map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_MQTT_URL": broker.URL,
			"SMARTY_KEYS": strings.Join(keys, ","), "SMARTY_MQTT_CLIENT_ID": "noisy-dec"})
		startBinary(t, map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
			"SMARTY_MQTT_CLIENT_ID": "noisy-fwd"})
		sub.WaitValue("smarty/status/noisy-dec", "online", 10*time.Second)
		sub.WaitValue("smarty/status/noisy-fwd", "online", 10*time.Second)
		time.Sleep(500 * time.Millisecond) // the decryptor's subscriptions
		pty.Write(stream)
		check(t, sub)
	})
}
