package bridge

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestForgedFloodCannotStallAMeter: a client that may publish on the raw
// topics (no ACL) floods a real meter's topic with forged frames, 200 a
// second, half with fresh counters and half with old ones, while the
// meter sends 30 real frames through a real forwarder. Every real frame
// is published at once and settled (before: 0 of 30 in 60 s, 3.4 s median
// latency), the forgeries cost at most about one confirmation a second
// (before: one each), and the retained confirmation still names the real
// frames.
func TestForgedFloodCannotStallAMeter(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds of flood")
	}
	broker := testenv.Mosquitto(t, "")
	m, keys := simMeter(3, 50000)
	var mu sync.Mutex
	fed := map[string]time.Time{}
	var latencies []time.Duration
	o := opts(t, broker.URL, "dec", &logBuffer{}, keys)
	o.OnTelegram = func(_ string, tg *p1.Telegram) {
		at, _ := tg.Time()
		mu.Lock()
		if f, ok := fed[at.UTC().Format(time.RFC3339)]; ok {
			latencies = append(latencies, time.Since(f))
		}
		mu.Unlock()
	}
	dec, _ := runDecryptor(t, o, SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	confirmTopic := "smarty/confirm/" + m.Title().String()
	watch := testenv.Subscribe(t, broker.URL, confirmTopic)
	src := &slowReader{}
	fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", &logBuffer{}, decrypt.Options{}), ForwardOptions{}, src)
	waitOnline(t, broker.URL, "fwd")

	// The first real frame pins the decryptors' key at the forwarder.
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	feed := func() {
		mu.Lock()
		fed[at.Format(time.RFC3339)] = time.Now()
		mu.Unlock()
		src.feed(m.Frame(nil, at))
		at = at.Add(10 * time.Second)
	}
	feed()
	testenv.WaitFor(t, 10*time.Second, "the first frame settled", func() bool { return fwd.Queued() == 0 && dec.Stats().Telegrams == 1 })

	ctx, stopFlood := context.WithCancel(context.Background())
	flooded := make(chan int)
	plaintext := sim.New(sim.Options{Seed: 99}).Telegram(at) // the forger's own meter: the real one is fed alone
	go func() {
		attacker := testenv.Subscribe(t, broker.URL)
		wrong := decrypt.Key{0x66}
		n := 0
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			<-tick.C
			counter := uint32(90000 + n) // fresh
			if n%2 == 1 {
				counter = uint32(50000 + n%7) // old
			}
			f := decrypt.Seal(nil, wrong, decrypt.DefaultAuthKey, m.Title(), counter, plaintext)
			attacker.Client.Publish(context.Background(), &paho.Publish{Topic: "smarty/raw/" + m.Title().String(), Payload: f, QoS: 0})
			n++
		}
		flooded <- n
	}()
	floodStart := time.Now()
	for range 29 {
		feed()
		time.Sleep(200 * time.Millisecond)
	}
	testenv.WaitFor(t, 15*time.Second, "every real frame published and settled", func() bool {
		return dec.Stats().Telegrams == 30 && fwd.Queued() == 0
	})
	stopFlood()
	forged := <-flooded
	floodFor := time.Since(floodStart)

	mu.Lock()
	slices.Sort(latencies)
	median, worst := latencies[len(latencies)/2], latencies[len(latencies)-1]
	mu.Unlock()
	confirmations := watch.N(confirmTopic)
	t.Logf("%d forged frames in %v; real frames: median latency %v, worst %v; %d confirmations",
		forged, floodFor.Round(100*time.Millisecond), median.Round(time.Millisecond), worst.Round(time.Millisecond), confirmations)
	if worst > 2*time.Second {
		t.Errorf("a real frame took %v under the flood", worst)
	}
	// One per real frame, and about one a second for the forgeries.
	if limit := 30 + int(floodFor/failGap) + 3; confirmations > limit {
		t.Errorf("%d confirmations for %d forged and 30 real frames, want at most %d", confirmations, forged, limit)
	}
	last, _ := watch.Get(confirmTopic)
	var c confirmation
	json.Unmarshal([]byte(last), &c)
	ok := 0
	for _, s := range c.Settled {
		if strings.HasSuffix(s, ":"+verdictOK) {
			ok++
		}
	}
	if ok < okKept {
		t.Errorf("the retained confirmation names %d published frames, want %d: %v", ok, okKept, c.Settled)
	}
}
