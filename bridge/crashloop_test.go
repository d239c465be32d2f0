package bridge

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestBrokerCrashLoop: the broker is killed (SIGKILL) every few seconds
// and restarted while a meter sends 20 frames a second through a
// forwarder to decryptors: every frame is published, none is lost, and a
// frame is published twice at most once per crash (its states reached the
// dying broker, its confirmation did not). With and without the broker's
// persistence, with one decryptor and with two in a share group.
func TestBrokerCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop: seconds of broker kills")
	}
	for _, tc := range []struct {
		name       string
		extra      string
		decryptors int
	}{
		{"persistence", "", 1},
		{"no persistence", "persistence false", 1},
		{"share group", "", 2},
	} {
		t.Run(tc.name, func(t *testing.T) { crashLoop(t, tc.extra, tc.decryptors) })
	}
}

func crashLoop(t *testing.T, extra string, decryptors int) {
	const frames = 300
	broker := testenv.Mosquitto(t, extra)
	m, keys := simMeter(9, 1000)

	var mu sync.Mutex
	published := map[string]int{} // telegram time → times published
	var decs []*Bridge
	for i := range decryptors {
		o := opts(t, broker.URL, fmt.Sprintf("dec%d", i), &logBuffer{}, keys)
		o.OnTelegram = func(_ string, tg *p1.Telegram) {
			for j := range tg.Objects {
				if tg.Objects[j].OBIS == (p1.OBIS{C: 1}) {
					mu.Lock()
					published[string(tg.Objects[j].Values[0].Text)]++
					mu.Unlock()
				}
			}
		}
		so := SplitOptions{StateDir: t.TempDir()}
		if decryptors > 1 {
			so.ShareGroup = "crash"
		}
		d, _ := runDecryptor(t, o, so)
		decs = append(decs, d)
		waitOnline(t, broker.URL, fmt.Sprintf("dec%d", i))
	}
	src := &slowReader{}
	fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", &logBuffer{}, decrypt.Options{}), ForwardOptions{ResendAfter: time.Second}, src)

	// The meter: one frame every 50 ms.
	kills := feedWhileKilling(broker, m, src, frames, 50*time.Millisecond)
	testenv.WaitFor(t, 90*time.Second, "every frame settled", func() bool { return fwd.Queued() == 0 })
	time.Sleep(500 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, n := range published {
		dups += n - 1
	}
	lost := frames - len(published)
	share := ""
	for _, d := range decs {
		share += fmt.Sprintf(" %d", d.Stats().Telegrams)
	}
	t.Logf("%d frames, %d broker kills: %d published, %d lost, %d published twice; telegrams per decryptor:%s",
		frames, kills, len(published), lost, dups, share)
	if lost != 0 {
		t.Errorf("%d frames lost", lost)
	}
	if dups > kills*decryptors {
		t.Errorf("%d frames published twice in %d crashes", dups, kills)
	}
	if kills < 3 {
		t.Errorf("only %d kills", kills)
	}
}

// feedWhileKilling feeds frames of m to src, one every gap, while the
// broker is killed (SIGKILL) every 2.5 s and started again 300 ms later;
// it returns the number of kills.
func feedWhileKilling(broker *testenv.Broker, m *sim.Meter, src *slowReader, frames int, gap time.Duration) int {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
		for range frames {
			src.feed(m.Frame(nil, at))
			at = at.Add(10 * time.Second)
			time.Sleep(gap)
		}
	}()
	kills := 0
	for {
		select {
		case <-sent:
			return kills
		case <-time.After(2500 * time.Millisecond):
			broker.Kill()
			kills++
			time.Sleep(300 * time.Millisecond)
			broker.Start()
		}
	}
}

// simMeter is a simulated meter (DemoKey) whose clock starts at
// 2026-06-01 00:00 UTC, with the keys that decrypt it.
func simMeter(seed uint64, counter uint32) (*sim.Meter, decrypt.Options) {
	m := sim.New(sim.Options{Start: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), Seed: seed, Counter: counter})
	return m, decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{m.Title(): sim.DemoKey}}
}
