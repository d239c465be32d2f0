package bridge

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// splitInput is a stream of several frames of two meters: the simulator's
// (demo key) and smarty-2026 (key AAAA…, title SYSTEMID).
func splitInput(t *testing.T, n int) ([]byte, decrypt.Options) {
	t.Helper()
	m := sim.New(sim.Options{Start: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Seed: 3})
	var in []byte
	for i := range n {
		in = m.Frame(in, time.Date(2026, 5, 1, 12, 0, 10*i, 0, time.UTC))
	}
	in = append(in, readFile(t, "smarty-2026.frame")...)
	in = append(in, readFile(t, "dsmr5-nl.telegram")...) // a plain meter rides along
	sysid, _ := decrypt.ParseTitle("SYSTEMID")
	return in, decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{m.Title(): sim.DemoKey, sysid: *key(t, testKey)}}
}

func opts(t *testing.T, brokerURL, clientID string, logs *logBuffer, keys decrypt.Options) Options {
	o := testOptions(brokerURL, logs, keys)
	u, _ := url.Parse(brokerURL)
	o.MQTT = MQTTOptions{URL: u, ClientID: clientID}
	o.MeterTimeout = time.Hour
	return o
}

// runDecryptor starts decrypt mode in the background.
func runDecryptor(t *testing.T, o Options, so SplitOptions) (*Bridge, func()) {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	stop := runInBackground(t, "RunDecrypt", func(ctx context.Context) error { return b.RunDecrypt(ctx, so) })
	waitSubscribed(t, b.node)
	return b, stop
}

// waitSubscribed waits until n's subscriptions of its first connection are
// in place: a message published after it reaches n.
func waitSubscribed(t *testing.T, n *node) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "subscriptions in place", func() bool { return n.subscribed.Load() > 0 })
}

// runInBackground runs run until the returned stop is called or the test
// ends, and reports its error.
func runInBackground(t *testing.T, name string, run func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestSplitMatchesBridge(t *testing.T) {
	in, keys := splitInput(t, 4)
	logs := &logBuffer{}

	// Bridge mode on broker 1.
	b1 := testenv.Mosquitto(t, "")
	br, err := New(opts(t, b1.URL, "hub", logs, keys))
	if err != nil {
		t.Fatal(err)
	}
	if err := br.Run(context.Background(), Source{Reader: bytes.NewReader(in)}); err != nil {
		t.Fatal(err)
	}
	want := testenv.Retained(t, b1.URL)
	if s := br.Stats(); len(want) < 90 || s.Resent != 0 || s.Lost != 0 {
		t.Fatalf("%d retained messages in bridge mode, want 90 or more, none held (stats %+v):\n%s", len(want), s, logs.String())
	}

	// Forward + decrypt on broker 2.
	b2 := testenv.Mosquitto(t, "")
	dec, stopDec := runDecryptor(t, opts(t, b2.URL, "hub", logs, keys), SplitOptions{StateDir: t.TempDir()})
	testenv.Subscribe(t, b2.URL).Client.Publish(context.Background(), &paho.Publish{Topic: "noop"})
	fwd, err := NewForwarder(opts(t, b2.URL, "meterside", logs, decrypt.Options{}), ForwardOptions{Device: "test", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	fdone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { fdone <- fwd.Run(ctx, Source{Reader: pr}) }()
	pw.Write(in)
	testenv.WaitFor(t, 10*time.Second, "all frames decoded", func() bool { return dec.Stats().Telegrams == 6 })
	testenv.WaitFor(t, 10*time.Second, "all frames confirmed", func() bool { return fwd.Queued() == 0 })
	cancel()
	pw.Close()
	if err := <-fdone; err != nil {
		t.Fatal(err)
	}
	stopDec()
	got := testenv.Retained(t, b2.URL)

	// The instances' own devices differ by mode (forward.go, report.go);
	// the meters' topics must not.
	own := func(topic string) bool {
		return strings.HasPrefix(topic, "smarty/bridge/") || topic == "homeassistant/device/hub/config" || topic == "homeassistant/device/meterside/config"
	}
	for topic, v := range want {
		if own(topic) {
			continue
		}
		if got[topic] != v {
			t.Errorf("%s differs:\nbridge:  %.200s\nsplit:   %.200s", topic, v, got[topic])
		}
	}
	for topic := range got {
		_, inBridge := want[topic]
		split := strings.HasPrefix(topic, "smarty/confirm/") || strings.HasPrefix(topic, "smarty/forwarder/") || topic == "smarty/status/meterside" || own(topic)
		if !inBridge && !split {
			t.Errorf("split mode retained %s, bridge mode did not", topic)
		}
	}
	if !strings.Contains(got["smarty/forwarder/meterside"], "holds no key") {
		t.Errorf("forwarder description: %q", got["smarty/forwarder/meterside"])
	}
}

func publishRaw(t *testing.T, c *paho.Client, topic string, frame []byte) {
	t.Helper()
	if _, err := c.Publish(context.Background(), &paho.Publish{Topic: topic, Payload: frame, QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestDecryptorDropsDuplicatesAndJunk(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	frame := readFile(t, "smarty-2026.frame")
	realTitle, _ := decrypt.ParseTitle("534147677001BD54")
	keys := decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{
		{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}: *key(t, testKey),
		realTitle:                                *key(t, testKey), // the wrong key for the real meter
	}}
	dec, stop := runDecryptor(t, opts(t, broker.URL, "dec", logs, keys), SplitOptions{StateDir: t.TempDir()})
	sub := testenv.Subscribe(t, broker.URL, "smarty/#")
	sub.WaitValue("smarty/status/dec", "online", 10*time.Second)
	pub := testenv.Subscribe(t, broker.URL)

	publishRaw(t, pub.Client, "smarty/raw/53595354454D4944", frame)
	publishRaw(t, pub.Client, "smarty/raw/53595354454D4944", frame)
	testenv.WaitFor(t, 5*time.Second, "one telegram, one duplicate", func() bool { return dec.Stats().Telegrams == 1 && dec.Duplicates() == 1 })
	topics := expectedTopics(t)
	testenv.WaitFor(t, 5*time.Second, "states", func() bool { return meterTopics(sub, "smarty/SAG1030700012701/") == topics })
	statesAfterOne := meterTopics(sub, "smarty/SAG1030700012701/")

	// Junk: a meter without key, a wrong key, garbage, a frame on the wrong
	// meter's topic. Each more than once: logged once, counted each time.
	// The key is blamed only after three failures in a row with none
	// passing.
	unknown := decrypt.Seal(nil, *key(t, testKey), decrypt.DefaultAuthKey, decrypt.Title{'S', 'A', 'G', 9}, 1, []byte("/x"))
	real := readFile(t, "smarty-2018-real.frame")
	for i := range 3 {
		publishRaw(t, pub.Client, "smarty/raw/534147677001BD54", real)
		if i == 2 {
			break
		}
		publishRaw(t, pub.Client, "smarty/raw/5341470900000000", unknown)
		publishRaw(t, pub.Client, "smarty/raw/53595354454D4944", []byte("garbage \xDB\x08 bytes"))
		publishRaw(t, pub.Client, "smarty/raw/534147677001BD54", frame)
	}
	testenv.WaitFor(t, 5*time.Second, "junk counted", func() bool {
		s := dec.Stats()
		return s.Rejected[telegrams.NoKey] == 2 && s.Rejected[telegrams.Authentication] == 3 && dec.Garbage() == 4
	})
	stop()
	// Once per meter: the garbage and the misplaced frame came on two topics.
	for msg, want := range map[string]int{"no key for meter 5341470900000000": 1, "its key in SMARTY_KEYS (or SMARTY_KEY) is wrong": 1, "is not a frame of that meter": 2} {
		if n := strings.Count(logs.String(), msg); n != want {
			t.Errorf("%q logged %d times, want %d", msg, n, want)
		}
	}
	if n := meterTopics(sub, "smarty/SAG1030700012701/"); n != statesAfterOne {
		t.Errorf("junk changed the published states: %d topics, was %d", n, statesAfterOne)
	}
	if c, ok := sub.Get("smarty/confirm/534147677001BD54"); ok {
		t.Errorf("settled frames of a meter that never authenticated: %q", c)
	}
	for topic := range testenv.Retained(t, broker.URL) {
		if strings.Contains(topic, "534147677001BD54") || strings.Contains(topic, "5341470900000000") {
			t.Errorf("retained %s for frames that did not decode", topic)
		}
	}
	for topic := range sub.Topics("smarty/") {
		if strings.HasPrefix(topic, "smarty/raw/") || strings.HasPrefix(topic, "smarty/confirm/") {
			continue // what the test itself sent, and the settlements
		}
		if strings.Contains(topic, "534147677001BD54") || strings.Contains(topic, "SAG1030700114004") || strings.Contains(topic, "5341470900000000") {
			t.Errorf("published %s for a frame that did not decode", topic)
		}
	}
	if s := dec.Stats(); s.Telegrams != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestShareGroupHundredMeters: two decryptors in one share group, 100
// meters with their own titles and keys; every frame is decoded exactly
// once in total, and both decryptors did part of the work.
func TestShareGroupHundredMeters(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	const meters, rounds = 100, 3
	keys := decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{}}
	var sims []*sim.Meter
	for i := range meters {
		k := decrypt.Key{0xA0, byte(i), 0x5A, byte(i * 7)}
		m := sim.New(sim.Options{Key: k, MeterID: fmt.Sprintf("SAG11%011d", i+1), Seed: uint64(i), Start: time.Now()})
		keys.Keys[m.Title()] = k
		sims = append(sims, m)
	}
	var mu sync.Mutex
	decoded := map[string]int{}
	count := func(meter string, tg *p1.Telegram) {
		mu.Lock()
		decoded[meter+" "+string(tg.Objects[1].Values[0].Text)]++
		mu.Unlock()
	}
	o1, o2 := opts(t, broker.URL, "dec1", logs, keys), opts(t, broker.URL, "dec2", logs, keys)
	o1.OnTelegram, o2.OnTelegram = count, count
	d1, _ := runDecryptor(t, o1, SplitOptions{ShareGroup: "g", StateDir: t.TempDir()})
	d2, _ := runDecryptor(t, o2, SplitOptions{ShareGroup: "g", StateDir: t.TempDir()})
	sub := testenv.Subscribe(t, broker.URL, "smarty/status/#")
	sub.WaitValue("smarty/status/dec1", "online", 10*time.Second)
	sub.WaitValue("smarty/status/dec2", "online", 10*time.Second)
	pub := testenv.Subscribe(t, broker.URL)
	start := time.Now()
	for r := range rounds {
		for _, m := range sims {
			publishRaw(t, pub.Client, "smarty/raw/"+m.Title().String(), m.Frame(nil, start.Add(time.Duration(r)*10*time.Second)))
		}
	}
	total := func() int64 { return d1.Stats().Telegrams + d2.Stats().Telegrams }
	testenv.WaitFor(t, 30*time.Second, "every frame decoded", func() bool { return total() >= meters*rounds })
	time.Sleep(300 * time.Millisecond)
	if total() != meters*rounds || d1.Duplicates()+d2.Duplicates() != 0 {
		t.Errorf("decoded %d+%d (duplicates %d+%d), want %d in total", d1.Stats().Telegrams, d2.Stats().Telegrams, d1.Duplicates(), d2.Duplicates(), meters*rounds)
	}
	if d1.Stats().Telegrams == 0 || d2.Stats().Telegrams == 0 {
		t.Errorf("one decryptor did nothing: %d and %d", d1.Stats().Telegrams, d2.Stats().Telegrams)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range decoded {
		if n != 1 {
			t.Errorf("%s decoded %d times", k, n)
		}
	}
	if len(decoded) != meters*rounds {
		t.Errorf("%d distinct telegrams, want %d", len(decoded), meters*rounds)
	}
}

// TestBrokerOutage: the broker is down for 30 s while the meter keeps
// sending one frame a second; after its restart every frame reaches the
// decryptor, in order, once.
func TestBrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s outage")
	}
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	m := sim.New(sim.Options{Start: time.Now(), Seed: 9})
	keys := decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{m.Title(): sim.DemoKey}}
	var mu sync.Mutex
	var seen []string
	o := opts(t, broker.URL, "dec", logs, keys)
	o.OnTelegram = func(_ string, tg *p1.Telegram) {
		mu.Lock()
		seen = append(seen, string(tg.Objects[1].Values[0].Text))
		mu.Unlock()
	}
	dec, _ := runDecryptor(t, o, SplitOptions{ShareGroup: "g", StateDir: t.TempDir()})
	fwd, err := NewForwarder(opts(t, broker.URL, "fwd", logs, decrypt.Options{}), ForwardOptions{Device: "test", StateDir: t.TempDir(), ResendAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	fdone := make(chan error, 1)
	go func() { fdone <- fwd.Run(ctx, Source{Reader: pr}) }()
	defer func() {
		cancel()
		pw.Close()
		<-fdone
	}()
	waitSubscribed(t, fwd.node)

	var sent []string
	start := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	send := func(n int) {
		for range n {
			at := start.Add(time.Duration(len(sent)) * 10 * time.Second)
			pw.Write(m.Frame(nil, at))
			tg, _ := p1.Parse(sim.New(sim.Options{}).Telegram(at))
			sent = append(sent, string(tg.Objects[1].Values[0].Text))
			time.Sleep(time.Second)
		}
	}
	send(5)
	testenv.WaitFor(t, 10*time.Second, "first frames", func() bool { return dec.Stats().Telegrams == 5 })
	broker.Stop()
	send(30)
	broker.Start()
	send(5)
	testenv.WaitFor(t, 60*time.Second, "every frame after the outage", func() bool { return dec.Stats().Telegrams >= int64(len(sent)) })
	time.Sleep(2 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, " ") != strings.Join(sent, " ") {
		t.Errorf("decoded %d frames, sent %d; in order and once each: %v", len(seen), len(sent), strings.Join(seen, " ") == strings.Join(sent, " "))
	}
	testenv.WaitFor(t, 10*time.Second, "queue drained", func() bool { return fwd.Queued() == 0 })
}

// TestSplitOverTLS: forwarder and decryptor reach the broker over mqtts://
// with a test CA, as when the broker sits on another site.
func TestSplitOverTLS(t *testing.T) {
	broker := testenv.MosquittoTLS(t)
	tlsOpts := func(clientID string, keys decrypt.Options) Options {
		o := opts(t, broker.TLSURL, clientID, &logBuffer{}, keys)
		o.MQTT.TLS = broker.ClientTLS(t)
		return o
	}
	in, keys := splitInput(t, 3)
	dec, _ := runDecryptor(t, tlsOpts("dec", keys), SplitOptions{StateDir: t.TempDir()})
	status := testenv.Subscribe(t, broker.URL, "smarty/status/dec")
	status.WaitValue("smarty/status/dec", "online", 10*time.Second)
	fwd, err := NewForwarder(tlsOpts("fwd", decrypt.Options{}), ForwardOptions{Device: "test", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx, Source{Reader: &slowReader{chunks: [][]byte{in}}}) }()
	testenv.WaitFor(t, 15*time.Second, "frames over TLS", func() bool { return dec.Stats().Telegrams == 5 && fwd.Queued() == 0 })
	// Check on the broker's plain listener that the states arrived whole.
	sub := testenv.Subscribe(t, broker.URL, "smarty/SAG1030700012701/#")
	sub.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 5*time.Second)
	want := expectedStates(t)
	testenv.WaitFor(t, 5*time.Second, "every state", func() bool { return meterTopics(sub, "smarty/SAG1030700012701/") == expectedTopics(t) })
	for topic, v := range want {
		if got, _ := sub.Get(topic); got != v {
			t.Errorf("%s = %q over TLS, want %q", topic, got, v)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestReplayAcrossRestartAndKeyChange: the last accepted counter survives a
// restart of the decryptor (same state directory, broker's retained
// counters wiped); a frame under a newly configured key starts a new
// sequence even with a lower counter.
func TestReplayAcrossRestartAndKeyChange(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	state := t.TempDir()
	title := decrypt.Title{'S', 'A', 'G', 0x11, 0x22, 0x33, 0x44, 0x55}
	oldKey, newKey := decrypt.Key{1, 2, 3}, decrypt.Key{4, 5, 6}
	tg, err := os.ReadFile("../testdata/smarty-2026.telegram")
	if err != nil {
		t.Fatal(err)
	}
	frame := func(k decrypt.Key, counter uint32) []byte {
		return decrypt.Seal(nil, k, decrypt.DefaultAuthKey, title, counter, tg)
	}
	pub := testenv.Subscribe(t, broker.URL)
	topic := "smarty/raw/" + title.String()
	run := func(k decrypt.Key, frames ...[]byte) *Bridge {
		dec, stop := runDecryptor(t, opts(t, broker.URL, "dec", &logBuffer{}, decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{title: k}}), SplitOptions{StateDir: state})
		sub := testenv.Subscribe(t, broker.URL, "smarty/status/dec")
		sub.WaitValue("smarty/status/dec", "online", 10*time.Second)
		for _, f := range frames {
			publishRaw(t, pub.Client, topic, f)
		}
		testenv.WaitFor(t, 5*time.Second, "frames handled", func() bool {
			return dec.Stats().Telegrams+dec.Duplicates()+dec.Stats().Rejected[telegrams.Authentication] == int64(len(frames))
		})
		stop()
		return dec
	}
	if d := run(oldKey, frame(oldKey, 500)); d.Stats().Telegrams != 1 {
		t.Fatalf("first frame not accepted: %+v", d.Stats())
	}
	// Forget the broker's copy: only the state directory remembers.
	pub.Client.Publish(context.Background(), &paho.Publish{Topic: "smarty/confirm/" + title.String(), Retain: true, QoS: 1})
	if d := run(oldKey, frame(oldKey, 500), frame(oldKey, 499)); d.Stats().Telegrams != 0 || d.Duplicates() != 2 {
		t.Errorf("after a restart, replays accepted: %d telegrams, %d duplicates", d.Stats().Telegrams, d.Duplicates())
	}
	if d := run(newKey, frame(newKey, 0), frame(newKey, 1), frame(newKey, 1)); d.Stats().Telegrams != 2 || d.Duplicates() != 1 {
		t.Errorf("new key: %d telegrams, %d duplicates; want a new sequence 0, 1 and the repeat dropped", d.Stats().Telegrams, d.Duplicates())
	}
}

// TestForwarderWithoutDecryptor: nobody confirms, so the forwarder keeps
// its bounded queue (dropping the oldest, with a warning) and says once
// that no decryptor answers.
func TestForwarderWithoutDecryptor(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	m := sim.New(sim.Options{Start: time.Now()})
	fwd, err := NewForwarder(opts(t, broker.URL, "fwd", logs, decrypt.Options{}),
		ForwardOptions{Device: "test", StateDir: t.TempDir(), QueueMax: 3, ResendAfter: 500 * time.Millisecond, StuckAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sub := testenv.Subscribe(t, broker.URL, "smarty/raw/#")
	var in []byte
	for i := range 5 {
		in = m.Frame(in, time.Now().Add(time.Duration(i)*10*time.Second))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx, Source{Reader: &slowReader{chunks: [][]byte{in}}}) }()
	testenv.WaitFor(t, 10*time.Second, "stuck warning", func() bool {
		return strings.Contains(logs.String(), "no decryptor has confirmed frames for a while")
	})
	cancel()
	<-done
	if _, _, dropped := fwd.Stats(); dropped != 2 || fwd.Queued() != 3 {
		t.Errorf("dropped %d, queued %d; want 2 and 3", dropped, fwd.Queued())
	}
	if !strings.Contains(logs.String(), "queue full: dropped the oldest frames") {
		t.Error("no warning when the queue overflowed")
	}
	if n := strings.Count(logs.String(), "no decryptor has confirmed frames for a while"); n != 1 {
		t.Errorf("stuck warning %d times", n)
	}
	// One frame in flight: only the oldest queued frame was sent (again).
	if n := sub.N("smarty/raw/" + m.Title().String()); n < 2 {
		t.Errorf("the unconfirmed frame was sent %d times; want it re-sent", n)
	}
}
