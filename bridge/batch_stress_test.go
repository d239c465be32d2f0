package bridge

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

// stressPayload is a payload whose bytes say where they belong, so that a
// message spliced from two packets cannot pass for either.
func stressPayload(kind string, n, size int) []byte {
	p := make([]byte, size)
	seed := fmt.Sprintf("%s-%d:", kind, n)
	for i := range p {
		p[i] = seed[i%len(seed)]
	}
	return p
}

// TestBatchesInterleavedOverTLS checks what batch.go relies on: batches
// written by writeBatch, paho's QoS 1 publishes, subscriptions, PUBACKs
// for incoming QoS 1 messages and keep-alive pings, all from different
// goroutines at once, reach the broker as whole packets, over TLS (where
// paho writes a packet in several calls) and over TCP. A broken packet
// makes mosquitto drop the connection or garbles a message.
func TestBatchesInterleavedOverTLS(t *testing.T) {
	broker := testenv.MosquittoTLS(t)
	for _, tc := range []struct{ name, url string }{{"tls", broker.TLSURL}, {"tcp", broker.URL}} {
		t.Run(tc.name, func(t *testing.T) {
			stressConnection(t, broker.URL, tc.url, broker.ClientTLS(t))
		})
	}
}

func stressConnection(t *testing.T, plainURL, connURL string, tlsCfg *tls.Config) {
	const (
		batches     = 150
		perBatch    = 20
		qos1        = 600
		echoes      = 600
		subscribes  = 200
		prefix      = "stress/"
		batchTopics = prefix + "batch/"
	)
	u, _ := url.Parse(connURL)
	logs := &logBuffer{}
	var ups atomic.Int32
	var echoed atomic.Int32
	upCh := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := dial(ctx, MQTTOptions{URL: u, ClientID: "stress-" + u.Scheme, TLS: tlsCfg}, connectOptions{
		statusTopic: prefix + "status",
		keepAlive:   1, // a PINGREQ every second, from paho's pinger goroutine
		onUp: func() {
			if ups.Add(1) == 1 {
				upCh <- struct{}{}
			}
		},
		onMessage: func(topic string, payload []byte) {
			var n, size int
			if _, err := fmt.Sscanf(topic, prefix+"echo/%d", &n); err == nil {
				size = 50 + n%700
			}
			if string(payload) == string(stressPayload("echo", n, size)) {
				echoed.Add(1)
			}
		},
	}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer c.close(context.Background())
	select {
	case <-upCh:
	case <-time.After(10 * time.Second):
		t.Fatalf("no connection: %s", logs)
	}
	sub := testenv.Subscribe(t, plainURL, prefix+"#")
	if err := c.subscribe(ctx, prefix+"echo/#"); err != nil {
		t.Fatal(err)
	}
	echoer := testenv.Subscribe(t, plainURL)

	var wg sync.WaitGroup
	fail := make(chan error, 8)
	wg.Go(func() { // batches of QoS 0 states, as publishStates writes them
		var buf []byte
		for b := range batches {
			buf = buf[:0]
			for i := range perBatch {
				n := b*perBatch + i
				buf = appendPublish(buf, fmt.Sprintf("%s%d", batchTopics, n), stressPayload("batch", n, 200+n%1500), true)
			}
			if _, _, sent, err := c.writeBatch(buf); !sent || err != nil {
				fail <- fmt.Errorf("batch %d: sent=%v err=%v", b, sent, err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	wg.Go(func() { // paho's QoS 1 publishes (status, counters, frames)
		for n := range qos1 {
			if err := c.publish(ctx, fmt.Sprintf("%sq1/%d", prefix, n), stressPayload("q1", n, 100+n%3000), 1, false); err != nil {
				fail <- fmt.Errorf("QoS 1 publish %d: %v", n, err)
				return
			}
		}
	})
	wg.Go(func() { // subscriptions
		for n := range subscribes {
			if err := c.subscribe(ctx, fmt.Sprintf("%ssub/%d", prefix, n)); err != nil {
				fail <- fmt.Errorf("subscribe %d: %v", n, err)
				return
			}
		}
	})
	wg.Go(func() { // QoS 1 messages to our connection: paho answers each with a PUBACK
		for n := range echoes {
			if _, err := echoer.Client.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("%secho/%d", prefix, n), QoS: 1, Payload: stressPayload("echo", n, 50+n%700)}); err != nil {
				fail <- fmt.Errorf("echo %d: %v", n, err)
				return
			}
		}
	})
	time.Sleep(2500 * time.Millisecond) // let the pinger run a few times in the middle of it
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Error(err)
	}

	testenv.WaitFor(t, 20*time.Second, "every batch and QoS 1 message at the subscriber", func() bool {
		return len(sub.Topics(batchTopics)) == batches*perBatch && len(sub.Topics(prefix+"q1/")) == qos1
	})
	for n := range batches * perBatch {
		topic := fmt.Sprintf("%s%d", batchTopics, n)
		if got, _ := sub.Get(topic); got != string(stressPayload("batch", n, 200+n%1500)) {
			t.Fatalf("%s arrived garbled (%d bytes)", topic, len(got))
		}
	}
	for n := range qos1 {
		topic := fmt.Sprintf("%sq1/%d", prefix, n)
		if got, _ := sub.Get(topic); got != string(stressPayload("q1", n, 100+n%3000)) {
			t.Fatalf("%s arrived garbled (%d bytes)", topic, len(got))
		}
	}
	testenv.WaitFor(t, 10*time.Second, "every echo received", func() bool { return echoed.Load() == echoes })
	if n := ups.Load(); n != 1 {
		t.Errorf("connected %d times: the broker dropped the connection (a broken packet?)\n%s", n, logs)
	}
	if f := c.failures.Load(); f != 0 || !c.up.Load() {
		t.Errorf("connection failures %d, up %v", f, c.up.Load())
	}
}

// TestTLSErrorHints: each kind of TLS failure gets a hint that names what
// to change, not "check the address".
func TestTLSErrorHints(t *testing.T) {
	broker := testenv.MosquittoTLS(t)
	good := broker.ClientTLS(t)
	port := broker.TLSURL[strings.LastIndexByte(broker.TLSURL, ':'):]
	for _, tc := range []struct {
		name, url string
		tls       *tls.Config
		want      string
	}{
		{"unknown CA", broker.TLSURL, &tls.Config{MinVersion: tls.VersionTLS12}, "SMARTY_MQTT_CA_FILE"},
		{"wrong name", "mqtts://localhost" + port, &tls.Config{RootCAs: good.RootCAs, MinVersion: tls.VersionTLS12}, "another name"},
		{"TLS to a plain port", "mqtts://127.0.0.1:" + strconv.Itoa(broker.Port), good, "does not speak TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.url)
			logs := &logBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c, err := dial(ctx, MQTTOptions{URL: u, ClientID: "hint", TLS: tc.tls}, connectOptions{statusTopic: "x/status"}, slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 10*time.Second, "a connection error", func() bool { return strings.Contains(logs.String(), "cannot connect") })
			c.close(context.Background())
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("hint lacks %q:\n%s", tc.want, logs)
			}
		})
	}
}
