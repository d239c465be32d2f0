package bridge

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestBrokerOrderSpreads: instances start at different brokers of a list
// by their client id, and each tries all of them in turn.
func TestBrokerOrderSpreads(t *testing.T) {
	var urls []*url.URL
	for _, h := range []string{"a:1883", "b:1883", "c:1883"} {
		urls = append(urls, &url.URL{Scheme: "mqtt", Host: h})
	}
	first := map[string]int{}
	for i := range 60 {
		order := brokerOrder(fmt.Sprintf("decrypt-host%d", i), urls)
		if len(order) != 3 {
			t.Fatalf("%d brokers", len(order))
		}
		k := strings.IndexByte("abc", order[0].Host[0])
		for j := range 3 {
			if want := urls[(k+j)%3].Host; order[j].Host != want {
				t.Fatalf("order %v is not the list rotated", order)
			}
		}
		first[order[0].Host]++
	}
	for _, u := range urls {
		if first[u.Host] < 10 {
			t.Errorf("%d of 60 instances start at %s", first[u.Host], u.Host)
		}
	}
	if got := brokerOrder("x", urls[:1]); len(got) != 1 || got[0] != urls[0] {
		t.Errorf("one broker: %v", got)
	}
}

// TestDecryptorMovesToTheNextBroker: a decryptor given two brokers comes
// up on one; when that one is killed it goes on, at once, on the other,
// says which one it is on, and decrypts what arrives there.
func TestDecryptorMovesToTheNextBroker(t *testing.T) {
	brokers := []*testenv.Broker{testenv.Mosquitto(t, ""), testenv.Mosquitto(t, "")}
	logs := &logBuffer{}
	o := opts(t, brokers[0].URL, "dec", logs, sysKeys(t))
	other, _ := url.Parse(brokers[1].URL)
	o.MQTT.MoreURLs = []*url.URL{other}
	dec, _ := runDecryptor(t, o, SplitOptions{StateDir: t.TempDir()})

	subs, on := onlineOnOne(t, brokers, "dec")
	next := 1 - on
	if !strings.Contains(logs.String(), "connected to MQTT broker") || !strings.Contains(logs.String(), "broker="+brokers[on].URL) {
		t.Errorf("the log does not say which broker is in use:\n%s", logs)
	}
	brokers[on].Kill()
	killed := time.Now()
	subs[next].WaitValue("smarty/status/dec", "online", 10*time.Second)
	t.Logf("on the other broker %v after the kill", time.Since(killed).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "broker="+brokers[next].URL) {
		t.Errorf("the log does not say it moved to %s:\n%s", brokers[next].URL, logs)
	}
	time.Sleep(300 * time.Millisecond) // its subscriptions
	pub := testenv.Subscribe(t, brokers[next].URL)
	publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), sealed(t, 1))
	subs[next].WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 10*time.Second)
	if dec.Stats().Telegrams != 1 {
		t.Errorf("%d telegrams decoded", dec.Stats().Telegrams)
	}
}

// TestForwarderResendsOnTheNextBroker: a frame sent to a broker that dies
// before passing it on goes again, at once, on the broker the forwarder
// moves to (not ResendAfter later).
func TestForwarderResendsOnTheNextBroker(t *testing.T) {
	brokers := []*testenv.Broker{testenv.Mosquitto(t, ""), testenv.Mosquitto(t, "")}
	var urls []*url.URL
	for _, b := range brokers {
		u, _ := url.Parse(b.URL)
		urls = append(urls, u)
	}
	// The broker the forwarder starts at has no decryptor: what it sends
	// there is lost. The decryptor is on the other one.
	first := 0
	if brokerOrder("fwd", urls)[0].Host != urls[0].Host {
		first = 1
	}
	second := 1 - first
	logs := &logBuffer{}
	dec, _ := runDecryptor(t, opts(t, brokers[second].URL, "dec", logs, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	o := opts(t, brokers[0].URL, "fwd", logs, decrypt.Options{})
	o.MQTT.MoreURLs = urls[1:]
	src := &slowReader{}
	fwd, _ := runForwarder(t, o, ForwardOptions{ResendAfter: time.Hour}, src)
	waitOnline(t, brokers[first].URL, "fwd")
	waitOnline(t, brokers[second].URL, "dec")
	src.feed(sealed(t, 1))
	testenv.WaitFor(t, 10*time.Second, "the frame sent", func() bool { n, _, _ := fwd.Stats(); return n == 1 })
	if fwd.Queued() != 1 {
		t.Fatalf("%d frames queued", fwd.Queued())
	}
	brokers[first].Kill()
	killed := time.Now()
	testenv.WaitFor(t, 10*time.Second, "the frame decrypted after the move", func() bool { return dec.Stats().Telegrams == 1 })
	testenv.WaitFor(t, 10*time.Second, "the frame confirmed", func() bool { return fwd.Queued() == 0 })
	t.Logf("decrypted and confirmed %v after the kill", time.Since(killed).Round(time.Millisecond))
}

// TestForwardersOfOtherMetersStayQuiet: forwarders of two meters on one
// broker, each trusting only its own meter's confirmation key, see each
// other's confirmations: they ignore them without calling them forged.
func TestForwardersOfOtherMetersStayQuiet(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	m := sim.New(sim.Options{Start: time.Now(), Seed: 9})
	keys := sysKeys(t)
	keys.Keys[m.Title()] = sim.DemoKey
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, keys), SplitOptions{StateDir: t.TempDir()})
	var fwds []*Forwarder
	srcs := []*slowReader{{}, {}}
	for i, k := range []decrypt.Key{*key(t, testKey), sim.DemoKey} {
		f, _ := runForwarder(t, opts(t, broker.URL, fmt.Sprintf("fwd%d", i), logs, decrypt.Options{}),
			ForwardOptions{ConfirmKey: deriveConfirmKey(k).pub}, srcs[i])
		fwds = append(fwds, f)
	}
	waitOnline(t, broker.URL, "dec")
	srcs[0].feed(sealed(t, 1))
	srcs[1].feed(m.Frame(nil, time.Now()))
	testenv.WaitFor(t, 10*time.Second, "both meters decoded", func() bool { return dec.Stats().Telegrams == 2 })
	for _, f := range fwds {
		testenv.WaitFor(t, 10*time.Second, "settled", func() bool { return f.Queued() == 0 })
		if f.Forged() != 0 {
			t.Errorf("%d confirmations called forged", f.Forged())
		}
	}
	if strings.Contains(logs.String(), "not signed with the key trusted") {
		t.Errorf("a forwarder warned of the other meter's confirmations:\n%s", logs)
	}
}

// TestBridgeMovesToTheNextBroker: bridge mode given two brokers goes on
// on the other one when its broker is killed, and publishes there what
// the meter sends next.
func TestBridgeMovesToTheNextBroker(t *testing.T) {
	brokers := []*testenv.Broker{testenv.Mosquitto(t, ""), testenv.Mosquitto(t, "")}
	logs := &logBuffer{}
	o := opts(t, brokers[0].URL, "hub", logs, decrypt.Options{Key: key(t, testKey)})
	other, _ := url.Parse(brokers[1].URL)
	o.MQTT.MoreURLs = []*url.URL{other}
	src := &slowReader{}
	start(t, o, src)
	subs, on := onlineOnOne(t, brokers, "hub")
	brokers[on].Kill()
	next := 1 - on
	subs[next].WaitValue("smarty/status/hub", "online", 10*time.Second)
	src.feed(sealed(t, 1))
	subs[next].WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 10*time.Second)
}

// TestDecryptorDropsOversizedRawAtOnce: a decryptor that looks at every
// node's discovery accepts packets up to 1 MB; a raw message larger than
// any frame is counted and dropped before it is queued, and frames after
// it decode.
func TestDecryptorDropsOversizedRawAtOnce(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	pub := testenv.Subscribe(t, broker.URL)
	for range 3 {
		publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), bytes.Repeat([]byte{0xDB}, 300<<10))
	}
	publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), sealed(t, 1))
	testenv.WaitFor(t, 10*time.Second, "the frame after them", func() bool { return dec.Stats().Telegrams == 1 })
	if dec.Garbage() != 3 || strings.Count(logs.String(), "larger than any frame") != 1 {
		t.Errorf("%d oversized counted, warnings:\n%s", dec.Garbage(), logs)
	}
}

// onlineOnOne subscribes to each broker and waits until client is online
// on one of them; it returns the subscribers and that broker's index.
func onlineOnOne(t *testing.T, brokers []*testenv.Broker, client string) ([]*testenv.Subscriber, int) {
	t.Helper()
	var subs []*testenv.Subscriber
	for _, b := range brokers {
		subs = append(subs, testenv.Subscribe(t, b.URL, "smarty/#"))
	}
	on := -1
	testenv.WaitFor(t, 10*time.Second, client+" online on one broker", func() bool {
		for i, s := range subs {
			if v, _ := s.Get("smarty/status/" + client); v == "online" {
				on = i
				return true
			}
		}
		return false
	})
	return subs, on
}
