package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// counterRestart is a meter that sends three frames, restarts its frame
// counter (a firmware update) and sends five more; old are the frames
// before the restart, to replay.
func counterRestart() (before, after [][]byte) {
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	m := sim.New(sim.Options{Start: t0, Seed: 4, Counter: 5000})
	for i := range 3 {
		before = append(before, m.Frame(nil, t0.Add(time.Duration(i)*10*time.Second)))
	}
	m = sim.New(sim.Options{Start: t0, Seed: 4, Counter: 10})
	for i := range 5 {
		after = append(after, m.Frame(nil, t0.Add(time.Duration(3+i)*10*time.Second)))
	}
	return before, after
}

// TestCounterRestartBridge: after the restart the first frames look like
// a replay; the third in a row with a later clock proves the restart and
// the bridge follows the new counter, saying so. Replays of the frames
// from before the restart, whose counters are now the higher ones, stay
// refused. Before, the meter was dropped forever.
func TestCounterRestartBridge(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	src := &slowReader{}
	o := testOptions(broker.URL, logs, decrypt.Options{Key: &sim.DemoKey})
	o.StateDir = t.TempDir()
	h := start(t, o, src)
	before, after := counterRestart()
	src.feed(before...)
	testenv.WaitFor(t, 10*time.Second, "the frames before the restart", func() bool { return h.b.Stats().Telegrams == 3 })
	src.feed(before[1:]...) // a replay
	testenv.WaitFor(t, 10*time.Second, "the replay dropped", func() bool { return h.b.Stats().Rejected[telegrams.Replayed] == 2 })
	src.feed(after...)
	testenv.WaitFor(t, 10*time.Second, "the frames from the third after the restart", func() bool { return h.b.Stats().Telegrams == 3+3 })
	src.feed(before...) // the old sequence again
	src.feed(after[4])  // and a repeat of the last
	testenv.WaitFor(t, 10*time.Second, "the replays dropped", func() bool { return h.b.Stats().Rejected[telegrams.Replayed] == 2+2+3+1 })
	if s := h.b.Stats(); s.Telegrams != 6 {
		t.Errorf("%d telegrams published, want 6: %+v", s.Telegrams, s)
	}
	if n := strings.Count(logs.String(), "restarted its frame counter"); n != 1 {
		t.Errorf("%d lines about the restart, want 1:\n%s", n, logs)
	}
}

// TestCounterRestartDecrypt: the same through a decryptor, which also
// retains the new counter in its confirmation: a decryptor started afresh
// (no counters.json) follows it instead of the old one.
func TestCounterRestartDecrypt(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	keys := decrypt.Options{Key: &sim.DemoKey}
	dec, stop := runDecryptor(t, opts(t, broker.URL, "dec", logs, keys), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	pub := testenv.Subscribe(t, broker.URL)
	before, after := counterRestart()
	topic := "smarty/raw/" + sim.New(sim.Options{}).Title().String()
	send := func(frames ...[]byte) {
		for _, f := range frames {
			publishRaw(t, pub.Client, topic, f)
			time.Sleep(50 * time.Millisecond)
		}
	}
	send(before...)
	testenv.WaitFor(t, 10*time.Second, "the frames before the restart", func() bool { return dec.Stats().Telegrams == 3 })
	send(after...)
	testenv.WaitFor(t, 10*time.Second, "the frames from the third after the restart", func() bool { return dec.Stats().Telegrams == 6 })
	if !strings.Contains(logs.String(), "restarted its frame counter") {
		t.Errorf("the restart is not logged at WARN:\n%s", logs)
	}
	send(before...)
	time.Sleep(time.Second)
	if n := dec.Stats().Telegrams; n != 6 {
		t.Errorf("%d telegrams after replaying the old sequence, want 6", n)
	}
	stop()

	// A new decryptor without state: the retained confirmation gives it
	// the new counter, so the next frame of the meter passes.
	dec2, _ := runDecryptor(t, opts(t, broker.URL, "dec2", &logBuffer{}, keys), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec2")
	m := sim.New(sim.Options{Start: time.Date(2026, 6, 1, 12, 1, 20, 0, time.UTC), Seed: 4, Counter: 15})
	send(after[4], m.Frame(nil, time.Date(2026, 6, 1, 12, 1, 20, 0, time.UTC)))
	testenv.WaitFor(t, 10*time.Second, "the next frame", func() bool { return dec2.Stats().Telegrams == 1 })
	if d := dec2.Duplicates(); d != 1 {
		t.Errorf("%d duplicates, want the repeat of the last frame", d)
	}
}
