package cli

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

// TestProblemStates produces each cause of the bridge's Problem sensor for
// real (a pty, mosquitto and the real binary), checks the state, its
// explanation and the log line, then removes the cause and waits for "ok".
// SMARTY_METER_TIMEOUT=3s makes the window 3 s instead of 30 s.
func TestProblemStates(t *testing.T) {
	good, _ := os.ReadFile("testdata/smarty-2026.telegram")
	key, _ := decrypt.ParseKey(testKey)
	other, _ := decrypt.ParseKey("0123456789ABCDEF0123456789ABCDEF")
	title := decrypt.Title{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}
	seal := func(k, auth decrypt.Key, counter uint32) []byte {
		return decrypt.Seal(nil, k, auth, title, counter, good)
	}
	noise := func(uint32) []byte {
		b := make([]byte, 200)
		rand.Read(b)
		for i := range b {
			if b[i] == 0xDB || b[i] == '/' {
				b[i] = 0 // no frame start: bytes that never make a frame
			}
		}
		return b
	}
	crcBad, _ := os.ReadFile("testdata/crc-mismatch.frame")
	realTelegram, _ := os.ReadFile("testdata/smarty-2018-real.telegram")
	realKeyK, _ := decrypt.ParseKey(realKey)
	realTitle, _ := decrypt.ParseTitle("534147677001BD54")

	cases := []struct {
		problem string
		env     map[string]string
		bad     func(counter uint32) []byte // nil: silence
		fixed   func(counter uint32) []byte
		meter   string // the meter the attributes name
	}{
		{problem: "no_data", env: map[string]string{"SMARTY_KEY": testKey},
			fixed: func(c uint32) []byte { return seal(key, decrypt.DefaultAuthKey, c) }},
		{problem: "no_frames", env: map[string]string{"SMARTY_KEY": testKey}, bad: noise,
			fixed: func(c uint32) []byte { return seal(key, decrypt.DefaultAuthKey, c) }},
		{problem: "wrong_key", env: map[string]string{"SMARTY_KEY": testKey}, meter: title.String(),
			bad:   func(c uint32) []byte { return seal(other, decrypt.DefaultAuthKey, c) },
			fixed: func(c uint32) []byte { return seal(key, decrypt.DefaultAuthKey, c) }},
		{problem: "auth_key", env: map[string]string{"SMARTY_KEY": testKey}, meter: title.String(),
			bad:   func(c uint32) []byte { return seal(key, other, c) },
			fixed: func(c uint32) []byte { return seal(key, decrypt.DefaultAuthKey, c) }},
		{problem: "no_key", env: map[string]string{"SMARTY_KEYS": realTitle.String() + ":" + realKey}, meter: title.String(),
			bad: func(c uint32) []byte { return seal(key, decrypt.DefaultAuthKey, c) },
			fixed: func(c uint32) []byte {
				return decrypt.Seal(nil, realKeyK, decrypt.DefaultAuthKey, realTitle, 0x0005A8E3+c, realTelegram)
			}},
		{problem: "crc_errors", env: map[string]string{"SMARTY_KEY": realKey}, meter: realTitle.String(),
			bad: func(uint32) []byte { return crcBad },
			fixed: func(c uint32) []byte {
				return decrypt.Seal(nil, realKeyK, decrypt.DefaultAuthKey, realTitle, 0x0005A8E3+c, realTelegram)
			}},
	}
	for _, c := range cases {
		t.Run(c.problem, func(t *testing.T) {
			t.Parallel()
			broker := testenv.Mosquitto(t, "")
			pty := testenv.Socat(t)
			client := "problem-" + strings.ReplaceAll(c.problem, "_", "-")
			sub := testenv.Subscribe(t, broker.URL, "smarty/bridge/#")
			env := map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_MQTT_CLIENT_ID": client,
				"SMARTY_METER_TIMEOUT": "3s"}
			for k, v := range c.env {
				env[k] = v
			}
			_, stderr := startBinary(t, env)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			feed := make(chan func(uint32) []byte, 1)
			go func() {
				var gen func(uint32) []byte
				var counter uint32 = 100
				tick := time.NewTicker(500 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case gen = <-feed:
					case <-tick.C:
						if gen != nil {
							counter++
							pty.Write(gen(counter))
						}
					}
				}
			}()
			diag, attrs := "smarty/bridge/"+client+"/diagnostics", "smarty/bridge/"+client+"/problem"
			waitProblem := func(want string) {
				t.Helper()
				testenv.WaitFor(t, 20*time.Second, "problem "+want, func() bool {
					v, _ := sub.Get(diag)
					var d struct{ Problem string }
					return json.Unmarshal([]byte(v), &d) == nil && d.Problem == want
				})
			}
			if c.bad != nil {
				feed <- c.bad
			}
			waitProblem(c.problem)
			var a struct{ Explanation, Fix, Meter string }
			v, _ := sub.Get(attrs)
			if err := json.Unmarshal([]byte(v), &a); err != nil || a.Explanation == "" || a.Fix == "" || a.Meter != c.meter {
				t.Errorf("attributes %s: %q, want an explanation, a fix and meter %q", attrs, v, c.meter)
			}
			if !strings.Contains(stderr.String(), "problem: "+a.Explanation) {
				t.Errorf("the log does not say %q", a.Explanation)
			}
			feed <- c.fixed
			waitProblem("ok")
			testenv.WaitFor(t, 5*time.Second, "problem solved in the log", func() bool { return strings.Contains(stderr.String(), "problem solved") })
		})
	}
	t.Run("no_decryptor", func(t *testing.T) {
		t.Parallel()
		broker := testenv.Mosquitto(t, "")
		pty := testenv.Socat(t)
		sub := testenv.Subscribe(t, broker.URL, "smarty/bridge/#")
		startBinary(t, map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
			"SMARTY_MQTT_CLIENT_ID": "problem-fwd", "SMARTY_METER_TIMEOUT": "3s"})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for c := uint32(1); ctx.Err() == nil; c++ {
				pty.Write(seal(key, decrypt.DefaultAuthKey, c))
				time.Sleep(500 * time.Millisecond)
			}
		}()
		problem := func(want string) func() bool {
			return func() bool {
				v, _ := sub.Get("smarty/bridge/problem-fwd/diagnostics")
				return strings.Contains(v, `"problem":"`+want+`"`)
			}
		}
		testenv.WaitFor(t, 20*time.Second, "problem no_decryptor", problem("no_decryptor"))
		startBinary(t, map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_KEY": testKey, "SMARTY_MQTT_URL": broker.URL,
			"SMARTY_MQTT_CLIENT_ID": "problem-dec", "SMARTY_METER_TIMEOUT": "3s"})
		testenv.WaitFor(t, 30*time.Second, "forwarder problem ok", problem("ok"))
		testenv.WaitFor(t, 20*time.Second, "decryptor problem ok", func() bool {
			v, _ := sub.Get("smarty/bridge/problem-dec/diagnostics")
			return strings.Contains(v, `"problem":"ok"`) && strings.Contains(v, `"meters_served":1`)
		})
	})
}
