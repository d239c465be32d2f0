package bridge

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// The timing logic, on synctest's clock: no sleeps on the machine's, so a
// loaded CI machine cannot make these flaky.

// sent is a message a timedPublisher took, and when.
type sent struct {
	topic, payload string
	at             time.Duration // since the test's start
}

// timedPublisher keeps what is published through either path, with the
// bubble's time.
type timedPublisher struct {
	start time.Time
	fail  atomic.Bool // publish fails (the broker is away)

	mu   sync.Mutex
	msgs []sent
}

func (p *timedPublisher) add(topic string, payload []byte) {
	p.mu.Lock()
	p.msgs = append(p.msgs, sent{topic, string(payload), time.Since(p.start)})
	p.mu.Unlock()
}

func (p *timedPublisher) publish(_ context.Context, topic string, payload []byte, _ byte, _ bool) error {
	if p.fail.Load() {
		return context.DeadlineExceeded
	}
	p.add(topic, payload)
	return nil
}

func (p *timedPublisher) writeBatch(batch []byte) (gen, n int64, ok bool, err error) {
	return 0, 0, true, eachPublish(batch, func(pub *packets.Publish) { p.add(pub.Topic, pub.Payload) })
}

func (p *timedPublisher) isUp() bool { return !p.fail.Load() }

// take returns what was published on topics ending in suffix, and forgets
// everything.
func (p *timedPublisher) take(suffix string) []sent {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []sent
	for _, m := range p.msgs {
		if strings.HasSuffix(m.topic, suffix) {
			out = append(out, m)
		}
	}
	p.msgs = nil
	return out
}

// TestReporterTiming: the diagnostics are published at the first tick,
// then, while the Problem stays, at most every 10 s however often a
// counter moves; a new Problem goes out at the next tick with its
// explanation; after a reconnection (again) and after a failed publish,
// everything goes out at the next tick.
func TestReporterTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pub := &timedPublisher{start: time.Now()}
		r := newReporter(discovery.ModeBridge, "c", "", "smarty", slog.New(slog.DiscardHandler))
		var mu sync.Mutex
		telegramsSoFar, lastValid, reject := int64(0), time.Now(), rejection{}
		r.sample = func(now time.Time) (observation, diagnostics) {
			mu.Lock()
			defer mu.Unlock()
			telegramsSoFar++ // a telegram every second: the payload always changes
			lastValid = now
			return observation{now: now, started: pub.start, window: 30 * time.Second, mode: discovery.ModeBridge, lastValid: lastValid,
				lastByte: now, reject: reject}, diagnostics{telegrams: telegramsSoFar, lastTelegram: now}
		}
		r.publish = func(ctx context.Context, topic string, payload []byte) bool {
			return pub.publish(ctx, topic, payload, 1, true) == nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { r.run(ctx) })

		time.Sleep(35*time.Second + time.Millisecond)
		synctest.Wait()
		var at []time.Duration
		for _, m := range pub.take("/diagnostics") {
			at = append(at, m.at.Truncate(time.Second))
		}
		if want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second}; !equalDurations(at, want) {
			t.Errorf("diagnostics published at %v, want %v", at, want)
		}

		mu.Lock()
		reject = rejection{at: time.Now(), reason: telegrams.Authentication}
		mu.Unlock()
		time.Sleep(time.Second)
		synctest.Wait()
		if p := pub.take("/problem"); len(p) != 1 || !strings.Contains(p[0].payload, "authentication") {
			t.Errorf("a new Problem: %+v, want its explanation at the next tick", p)
		}

		r.again()
		time.Sleep(time.Second)
		synctest.Wait()
		if len(pub.take("/problem")) != 1 {
			t.Error("after a reconnection the Problem was not published again at the next tick")
		}

		pub.fail.Store(true) // the diagnostics due after 10 s fail
		time.Sleep(11 * time.Second)
		synctest.Wait()
		pub.fail.Store(false)
		time.Sleep(time.Second)
		synctest.Wait()
		if len(pub.take("/problem")) != 1 {
			t.Error("after failed publishes the Problem was not published again as soon as the broker took messages")
		}
		cancel()
		wg.Wait()
	})
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMeterTimeout: a meter is marked offline once no telegram came for
// MeterTimeout, not before, with one warning; its next telegram announces
// it online again, in the same write as its states.
func TestMeterTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &testenv.Buffer{}
		b, err := New(Options{Keys: decrypt.Options{Key: &sim.DemoKey}, MeterTimeout: time.Minute, Log: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		pub := &timedPublisher{start: time.Now()}
		b.pub = pub
		m := sim.New(sim.Options{Start: time.Now()})
		telegram := func() {
			tg, from, err := b.dec.Decode(p1.Encrypted, m.Frame(nil, time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			if !b.handle(context.Background(), tg, from) {
				t.Fatal("states not taken")
			}
		}
		telegram()
		avail := "/" + "availability"
		if a := pub.take(avail); len(a) != 1 || a[0].payload != "online" {
			t.Fatalf("first telegram: availability %+v, want online", a)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.watchdog(ctx) })

		time.Sleep(59 * time.Second)
		synctest.Wait()
		if a := pub.take(avail); len(a) != 0 {
			t.Fatalf("offline before the timeout: %+v", a)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if a := pub.take(avail); len(a) != 1 || a[0].payload != "offline" || a[0].at > 61*time.Second {
			t.Fatalf("after the timeout: %+v, want offline within 61 s", a)
		}
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if a := pub.take(avail); len(a) != 0 {
			t.Errorf("offline said again: %+v", a)
		}
		if n := strings.Count(logs.String(), "marking it offline"); n != 1 {
			t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
		}
		telegram()
		if a := pub.take(avail); len(a) != 1 || a[0].payload != "online" {
			t.Errorf("back: availability %+v, want online with its states", a)
		}
		cancel()
		wg.Wait()
	})
}

// TestLogLimiter: a line of one key at most every interval, at most burst
// lines a minute over all keys, and the next line says how many were held
// back.
func TestLogLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLogLimiter(10*time.Minute, 3)
		if ok, _ := l.allow("a"); !ok {
			t.Fatal("first line held back")
		}
		if ok, _ := l.allow("a"); ok {
			t.Error("the same key again at once")
		}
		for _, k := range []string{"b", "c"} {
			if ok, _ := l.allow(k); !ok {
				t.Errorf("%s held back within the burst", k)
			}
		}
		if ok, _ := l.allow("d"); ok {
			t.Error("a fourth key within a minute passed a burst of 3")
		}
		time.Sleep(time.Minute)
		if ok, held := l.allow("d"); !ok || held != 1 {
			t.Errorf("a minute later: %v, %d held back; want true, 1 (b's line reported a's)", ok, held)
		}
		if ok, _ := l.allow("a"); ok {
			t.Error("key a again within its 10 minutes")
		}
		time.Sleep(9 * time.Minute)
		if ok, _ := l.allow("a"); !ok {
			t.Error("key a held back after 10 minutes")
		}
	})
}
