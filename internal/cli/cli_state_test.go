package cli

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// damages are the ways a power cut, a full disk or a hand edit leaves a
// state file: each turns the file's good content into what is found.
var damages = map[string]func(good []byte) []byte{
	"empty":     func([]byte) []byte { return nil },
	"truncated": func(good []byte) []byte { return good[:len(good)/2] },
	"garbled":   func(good []byte) []byte { return append([]byte("\x00\xff{garbage"), good[3:]...) },
}

// TestDamagedStateFiles starts every mode on a state directory whose every
// file is empty, cut short or garbled. Nothing stops: each mode publishes
// the meter's states, says once what the damage costs, and sets a damaged
// file aside for a person to look at (it stopped bridge and decrypt mode
// with exit 1 before, a loop under Restart=on-failure).
func TestDamagedStateFiles(t *testing.T) {
	for name, damage := range damages {
		t.Run(name+"/bridge", func(t *testing.T) {
			broker := testenv.Mosquitto(t, "")
			state := t.TempDir()
			writeDamaged(t, state, "counters.json", damage([]byte(`{"53414731":{"counter":7,"key_id":"0badc0de","meter":"SAG1030700012701","seen":20400}}`)))
			writeDamaged(t, state, "client-id-suffix", damage([]byte("a1b2c3\n")))
			pty := testenv.Socat(t)
			sub := testenv.Subscribe(t, broker.URL, "smarty/#")
			// No SMARTY_MQTT_CLIENT_ID: the default reads client-id-suffix.
			cmd, logs := startBinary(t, map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
				"SMARTY_KEY": testKey, "SMARTY_STATE_DIR": state})
			testenv.WaitFor(t, 10*time.Second, "connected", func() bool { return strings.Contains(logs.String(), "connected to MQTT broker") })
			frame, _ := os.ReadFile("testdata/smarty-2026.frame")
			pty.Write(frame)
			sub.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 10*time.Second)
			stopProcess(t, cmd)
			wantSetAside(t, state, "counters.json", logs.String())
			// The suffix drawn anew is six hex digits again.
			b, _ := os.ReadFile(filepath.Join(state, "client-id-suffix"))
			if s := strings.TrimSpace(string(b)); len(s) != 6 || !isHex(s) {
				t.Errorf("client-id-suffix %q after the run", b)
			}
		})
		t.Run(name+"/split", func(t *testing.T) {
			broker := testenv.Mosquitto(t, "")
			m := sim.New(sim.Options{Start: time.Now(), Seed: 11, Counter: sim.ClockCounter(time.Now())})
			frame := m.Frame(nil, time.Now())
			decState, fwdState := t.TempDir(), t.TempDir()
			writeDamaged(t, decState, "counters.json", damage([]byte(`{"`+m.Title().String()+`":{"counter":7,"key_id":"0badc0de","seen":20400}}`)))
			writeDamaged(t, fwdState, "confirm-keys.json", damage([]byte(`{"`+m.Title().String()+`":"`+strings.Repeat("ab", 32)+`"}`)))
			writeDamaged(t, fwdState, "queue/00000000000000000001.rec", damage(frame))
			pty := testenv.Socat(t)
			sub := testenv.Subscribe(t, broker.URL, "smarty/#")
			dec, decLogs := startBinary(t, map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": sim.DemoKeyHex,
				"SMARTY_STATE_DIR": decState, "SMARTY_MQTT_CLIENT_ID": "dec-" + name})
			fwd, fwdLogs := startBinary(t, map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
				"SMARTY_STATE_DIR": fwdState, "SMARTY_MQTT_CLIENT_ID": "fwd-" + name})
			sub.WaitValue("smarty/status/dec-"+name, "online", 10*time.Second)
			sub.WaitValue("smarty/status/fwd-"+name, "online", 10*time.Second)
			time.Sleep(500 * time.Millisecond) // the decryptor's subscriptions
			pty.Write(m.Frame(nil, time.Now().Add(10*time.Second)))
			testenv.WaitFor(t, 15*time.Second, "the meter's states", func() bool {
				_, ok := sub.Get("smarty/" + m.ID() + "/1-0:1.8.0")
				return ok
			})
			stopProcess(t, fwd)
			stopProcess(t, dec)
			wantSetAside(t, decState, "counters.json", decLogs.String())
			wantSetAside(t, fwdState, "confirm-keys.json", fwdLogs.String())
			if e, _ := os.ReadDir(filepath.Join(fwdState, "queue")); len(e) != 0 {
				t.Errorf("%d records left in the queue: a damaged record held the meter", len(e))
			}
		})
	}
}

// writeDamaged writes a state file as found after the damage.
func writeDamaged(t *testing.T, dir, name string, content []byte) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantSetAside checks that a damaged file was set aside and said once.
func wantSetAside(t *testing.T, dir, name, logs string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, name+".unreadable")); err != nil {
		t.Errorf("%s not set aside: %v", name, err)
	}
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "unreadable") && strings.Contains(line, "file="+filepath.Join(dir, name)+" ") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d log lines say %s is unreadable, want 1:\n%s", n, name, logs)
	}
	if !strings.Contains(logs, "starting afresh") {
		t.Errorf("the log does not say what the damage costs:\n%s", logs)
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// immutable makes dir refuse every change, even root's (chattr +i: what a
// read-only mount or a full disk is to smartybridge), until the test ends
// or the returned function is called.
func immutable(t *testing.T, dir string) (undo func()) {
	t.Helper()
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chattr +i: %v %s", err, out)
		}
		t.Skipf("chattr +i: %v %s (needs root on ext4)", err, out)
	}
	undo = func() { exec.Command("chattr", "-i", dir).Run() }
	t.Cleanup(undo)
	return undo
}

// TestReadOnlyStateDirectory: bridge mode on a state directory it cannot
// write, from the start or from the middle of a run, still publishes every
// telegram and says once what that costs (no replay protection across
// restarts), not once a second (22 warnings in 20 s before). Started on
// one, it says when saving works again; turned read-only while running,
// the clean stop's save says it. It stopped with exit 1 on a read-only
// directory before.
func TestReadOnlyStateDirectory(t *testing.T) {
	for _, from := range []string{"start", "running"} {
		t.Run(from, func(t *testing.T) {
			broker := testenv.Mosquitto(t, "")
			pty := testenv.Socat(t)
			sub := testenv.Subscribe(t, broker.URL, "smarty/#")
			state := t.TempDir()
			undo := func() {}
			if from == "start" {
				undo = immutable(t, state)
			}
			m := sim.New(sim.Options{Start: time.Now(), Seed: 12, Counter: 100})
			at := time.Now()
			frame := func() []byte { at = at.Add(10 * time.Second); return m.Frame(nil, at) }
			cmd, logs := startBinary(t, map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
				"SMARTY_KEY": sim.DemoKeyHex, "SMARTY_STATE_DIR": state, "SMARTY_MQTT_CLIENT_ID": "ro-" + from})
			sub.WaitValue("smarty/status/ro-"+from, "online", 10*time.Second)
			topic := "smarty/" + m.ID() + "/0-0:1.0.0"
			seen := 0
			if from == "running" {
				pty.Write(frame())
				seen++
				testenv.WaitFor(t, 5*time.Second, "the first save", func() bool {
					_, err := os.Stat(filepath.Join(state, "counters.json"))
					return err == nil
				})
				undo = immutable(t, state)
			}
			for range 5 {
				pty.Write(frame())
				seen++
				testenv.WaitFor(t, 5*time.Second, "the telegram", func() bool { return sub.N(topic) >= seen })
				time.Sleep(time.Second)
			}
			if from == "running" {
				// The next save is due only minutes later: the stop's fails.
				stopProcess(t, cmd)
			}
			if n := strings.Count(logs.String(), "cannot save frame counters"); n != 1 {
				t.Errorf("%d warnings about saving, want 1:\n%s", n, logs)
			}
			undo()
			if from == "start" {
				pty.Write(frame())
				testenv.WaitFor(t, 15*time.Second, "saved again", func() bool { return strings.Contains(logs.String(), "frame counters saved again") })
				stopProcess(t, cmd)
			}
		})
	}
}
