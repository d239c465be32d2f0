package bridge

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

// recordingPublisher keeps what a decryptor publishes, without a broker.
type recordingPublisher struct {
	mu     sync.Mutex
	topics []string
}

func (r *recordingPublisher) publish(_ context.Context, topic string, _ []byte, _ byte, _ bool) error {
	r.mu.Lock()
	r.topics = append(r.topics, topic)
	r.mu.Unlock()
	return nil
}

func (r *recordingPublisher) isUp() bool { return true }

// writeBatch records the topics of the PUBLISH packets in a batch.
func (r *recordingPublisher) writeBatch(batch []byte) (gen, n int64, ok bool, err error) {
	return 0, 0, true, eachPublish(batch, func(p *packets.Publish) { _ = r.publish(context.Background(), p.Topic, nil, 0, true) })
}

// eachPublish calls f for every PUBLISH packet of a batch (batch.go), as a
// broker would read them; what test publishers make of a batch.
func eachPublish(batch []byte, f func(*packets.Publish)) error {
	rd := bytes.NewReader(batch)
	for rd.Len() > 0 {
		cp, err := packets.ReadPacket(rd)
		if err != nil {
			return err
		}
		if p, ok := cp.Content.(*packets.Publish); ok {
			f(p)
		}
	}
	return nil
}

func (r *recordingPublisher) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.topics
	r.topics = nil
	return t
}

// FuzzDecryptMessage feeds any message, on a raw or a confirmation topic,
// to decrypt mode's message path. Properties: it never panics; states and
// "ok" confirmations come only from a frame that authenticates with the
// key or from a plain telegram with a good CRC (or well formed without);
// per-title state stays bounded; the replay book only learns meters whose
// frames authenticated.
func FuzzDecryptMessage(f *testing.F) {
	k := key(f, testKey)
	frame := readFile(f, "smarty-2026.frame")
	f.Add(byte(0), "53595354454D4944", frame)
	f.Add(byte(0), "53595354454D4944", frame[:600])
	f.Add(byte(0), "x", readFile(f, "dsmr5-nl.telegram"))
	good := deriveConfirmKey(*k).sign("53595354454D4944", &confirmation{Counter: 1 << 30, Settled: []string{"0011223344556677:ok"}})
	f.Add(byte(1), "53595354454D4944", good)
	f.Add(byte(1), "53595354454D4944", []byte(`{"counter":4294967295,"key_id":"x"}`))
	opener, err := decrypt.NewOpener(decrypt.Options{Key: k})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind byte, title string, payload []byte) {
		if strings.ContainsAny(title, "/+#") || len(title) > 64 {
			return
		}
		b, err := New(Options{Keys: decrypt.Options{Key: k}, MeterTimeout: 3600e9})
		if err != nil {
			t.Fatal(err)
		}
		rec := &recordingPublisher{}
		b.pub = rec
		d := newDecryptor(b, SplitOptions{})
		ctx := context.Background()
		if kind%2 == 1 {
			d.follow(title, payload)
			if _, moved := b.book.last(title); moved {
				c, pub, err := parseConfirmation(title, payload)
				if err != nil || !pub.Equal(deriveConfirmKey(*k).pub) || c.KeyID != keyID(*k) {
					t.Fatalf("a confirmation not signed with the meter's key moved the book")
				}
			}
			return
		}
		d.handle(ctx, rawFrame{topic: "smarty/raw/" + title, payload: payload})
		d.wg.Wait()
		published := rec.take()
		_, _, openErr := opener.Open(nil, payload)
		var plainOK bool
		if len(payload) > 0 && payload[0] == '/' {
			var tg p1.Telegram
			plainOK = tg.Parse(payload) == nil
		}
		for _, topic := range published {
			if !strings.HasPrefix(topic, "smarty/confirm/") && openErr != nil && !plainOK {
				t.Fatalf("published %s for a message that neither authenticates nor parses", topic)
			}
		}
		if _, inBook := b.book.last(title); inBook && openErr != nil {
			t.Fatalf("the book learned %s from a frame that does not authenticate", title)
		}
		if d.titles.len() > 8192 {
			t.Fatalf("%d titles", d.titles.len())
		}
	})
}
