package bridge

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// frameSource hands out one simulated frame per Read, for b.N frames.
type frameSource struct {
	m    *sim.Meter
	left int
	at   time.Time
	buf  []byte
}

func (f *frameSource) Read(p []byte) (int, error) {
	if len(f.buf) == 0 {
		if f.left == 0 {
			return 0, io.EOF
		}
		f.left--
		f.at = f.at.Add(10 * time.Second)
		f.buf = f.m.Frame(f.buf[:0], f.at)
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// BenchmarkTelegramToMQTT is one frame from bytes to its ~50 retained state
// messages on a real mosquitto (QoS 0, sent in one write per telegram).
func BenchmarkTelegramToMQTT(b *testing.B) {
	broker := testenv.Mosquitto(b, "")
	u, _ := url.Parse(broker.URL)
	br, err := New(Options{MQTT: MQTTOptions{URL: u, ClientID: "bench"}, Keys: decrypt.Options{Key: &sim.DemoKey},
		Discovery: discovery.Off})
	if err != nil {
		b.Fatal(err)
	}
	src := &frameSource{m: sim.New(sim.Options{Start: time.Now()}), left: b.N, at: time.Now()}
	b.ReportAllocs()
	b.ResetTimer()
	if err := br.Run(context.Background(), Source{Reader: src}); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	s := br.Stats()
	if s.Telegrams != int64(b.N) {
		b.Fatalf("%d telegrams of %d", s.Telegrams, b.N)
	}
	b.ReportMetric(float64(s.States)/float64(b.N), "states/op")
}

// BenchmarkPahoPublishQoS0 is the cost of one paho QoS 0 publish to a real
// mosquitto, one write each: what every state message would cost unbatched.
func BenchmarkPahoPublishQoS0(b *testing.B) {
	broker := testenv.Mosquitto(b, "")
	sub := testenv.Subscribe(b, broker.URL)
	payload := []byte("273.764")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sub.Client.Publish(context.Background(), &paho.Publish{Topic: "smarty/SAG1030700012701/1-0:1.8.0", Payload: payload, Retain: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendStates is the bridge's own work per telegram without MQTT:
// decrypt, parse, and the state payloads.
func BenchmarkAppendStates(b *testing.B) {
	m := sim.New(sim.Options{Start: time.Now()})
	frame := m.Frame(nil, time.Now())
	d, _ := telegrams.NewDecoder(decrypt.Options{Key: &sim.DemoKey})
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		tg, _, err := d.Decode(p1.Encrypted, frame)
		if err != nil {
			b.Fatal(err)
		}
		for i := range tg.Objects {
			buf = AppendState(buf[:0], &tg.Objects[i])
		}
	}
	_ = bytes.Clone(buf)
}
