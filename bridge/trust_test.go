package bridge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/crc16"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

// Split mode under line noise, damaged frames and hostile clients. Each
// test is a row of issue 8's table: what failed before.

var sysTitle = decrypt.Title{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}

// sealed is smarty-2026's telegram as the meter's frame with counter c.
func sealed(t *testing.T, c uint32) []byte {
	t.Helper()
	return decrypt.Seal(nil, *key(t, testKey), decrypt.DefaultAuthKey, sysTitle, c, readFile(t, "smarty-2026.telegram"))
}

func sysKeys(t *testing.T) decrypt.Options {
	return decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{sysTitle: *key(t, testKey)}}
}

// runForwarder runs forward mode on src until the test ends.
func runForwarder(t *testing.T, o Options, fo ForwardOptions, src *slowReader) (*Forwarder, func()) {
	t.Helper()
	if fo.StateDir == "" {
		fo.StateDir = t.TempDir()
	}
	f, err := NewForwarder(o, fo)
	if err != nil {
		t.Fatal(err)
	}
	stop := runInBackground(t, "forwarder", func(ctx context.Context) error { return f.Run(ctx, Source{Reader: src}) })
	waitSubscribed(t, f.node)
	return f, stop
}

func (r *slowReader) feed(chunks ...[]byte) {
	r.mu.Lock()
	r.chunks = append(r.chunks, chunks...)
	r.mu.Unlock()
}

// waitOnline waits for a client's status topic on a broker (its
// subscriptions are in place: runDecryptor and runForwarder wait for them).
func waitOnline(t *testing.T, brokerURL, clientID string) {
	t.Helper()
	s := testenv.Subscribe(t, brokerURL, "smarty/status/"+clientID)
	s.WaitValue("smarty/status/"+clientID, "online", 10*time.Second)
}

// TestNoiseBeforeAFrame: a false header of an unknown meter, declaring
// 255 bytes, right before an intact frame. The forwarder cannot check it,
// yet the intact frame behind it is forwarded and decrypted; the false one
// leaves the queue after UnconfirmedTTL.
func TestNoiseBeforeAFrame(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	noise := append([]byte{0xDB, 0x08}, "NOISE\x01\x02\x03\x81\xFF\x30\x00\x00\x00\x07"...)
	src := &slowReader{}
	fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", logs, decrypt.Options{}), ForwardOptions{UnconfirmedTTL: 2 * time.Second}, src)
	src.feed(append(append([]byte{}, noise...), sealed(t, 100)...))
	testenv.WaitFor(t, 10*time.Second, "the frame behind the noise decoded and confirmed", func() bool {
		_, confirmed, _ := fwd.Stats()
		return dec.Stats().Telegrams == 1 && confirmed == 1
	})
	// Now the meter is confirmed: noise before its next frame is cut where
	// the real header starts, and nothing false is forwarded.
	before, _, _ := fwd.Stats()
	src.feed(append(append([]byte{}, noise...), sealed(t, 101)...))
	testenv.WaitFor(t, 10*time.Second, "second frame", func() bool { return dec.Stats().Telegrams == 2 })
	testenv.WaitFor(t, 10*time.Second, "queue empty (the false frame expired)", func() bool { return fwd.Queued() == 0 })
	if after, _, _ := fwd.Stats(); after-before != 1 {
		t.Errorf("forwarded %d frames for the second burst, want only the real one\n%s", after-before, logs)
	}
	if strings.Contains(logs.String(), "is wrong") {
		t.Errorf("noise blamed on the key:\n%s", logs)
	}
}

// TestNoiseInBridgeModeWithKeys: the same noise read by a bridge that has
// keys per meter (the false title has none) costs no frame.
func TestNoiseInBridgeModeWithKeys(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/SAG1030700012701/1-0:1.8.0")
	noise := append([]byte{0xDB, 0x08}, "NOISE\x01\x02\x03\x81\xFF\x30\x00\x00\x00\x07"...)
	o := testOptions(broker.URL, &logBuffer{}, sysKeys(t))
	h := start(t, o, &slowReader{chunks: [][]byte{append(noise, sealed(t, 5)...)}})
	sub.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 10*time.Second)
	h.stop(t)
	if s := h.b.Stats(); s.Telegrams != 1 {
		t.Errorf("stats %+v: want the frame", s)
	}
}

// TestDamagedFrameCostsOnlyItself: one byte flipped in one frame's
// ciphertext. The decryptor settles it as failing authentication, blames
// the line and not the key, and the frames behind it flow at once, well
// within one re-send interval.
func TestDamagedFrameCostsOnlyItself(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	src := &slowReader{}
	fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", logs, decrypt.Options{}), ForwardOptions{ResendAfter: 30 * time.Second}, src)
	src.feed(sealed(t, 10))
	testenv.WaitFor(t, 10*time.Second, "first frame", func() bool { return dec.Stats().Telegrams == 1 })
	damaged := sealed(t, 11)
	damaged[400] ^= 0x20
	start := time.Now()
	src.feed(damaged, sealed(t, 12), sealed(t, 13), sealed(t, 14))
	testenv.WaitFor(t, 10*time.Second, "the frames behind the damaged one", func() bool { return dec.Stats().Telegrams == 4 && fwd.Queued() == 0 })
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s; the re-send interval is 30 s", took)
	}
	if fwd.Rejected() != 1 || dec.Stats().Rejected[telegrams.Authentication] != 1 {
		t.Errorf("rejected %d at the forwarder, %d authentication failures", fwd.Rejected(), dec.Stats().Rejected[telegrams.Authentication])
	}
	if !strings.Contains(logs.String(), "damaged on the line") || strings.Contains(logs.String(), "is wrong") {
		t.Errorf("the log should blame the line, not the key:\n%s", logs)
	}
}

// TestForgedCounterCannotFreeze: a retained confirmation with the highest
// counter and the meter's public key id, unsigned or signed with another
// key, before the decryptor starts: real frames are still accepted.
func TestForgedCounterCannotFreeze(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pub := testenv.Subscribe(t, broker.URL)
	topic := "smarty/confirm/" + sysTitle.String()
	kid := keyID(*key(t, testKey))
	retainedMsg := func(payload []byte) {
		if _, err := pub.Client.Publish(context.Background(), &paho.Publish{Topic: topic, Payload: payload, QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	retainedMsg(fmt.Appendf(nil, `{"counter":4294967295,"key_id":%q}`, kid))
	dec, stop := runDecryptor(t, opts(t, broker.URL, "dec", &logBuffer{}, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	// Signed, but with a key of the attacker's own.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	evil := confirmKey{priv: priv, pub: priv.Public().(ed25519.PublicKey), keyID: kid}
	retainedMsg(evil.sign(sysTitle.String(), &confirmation{Counter: 4294967295}))
	time.Sleep(200 * time.Millisecond)
	publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), sealed(t, 7))
	testenv.WaitFor(t, 5*time.Second, "a real frame accepted", func() bool { return dec.Stats().Telegrams == 1 })
	if dec.Forged() < 1 {
		t.Errorf("forged confirmations not counted: %d", dec.Forged())
	}
	// The frame is settled (and its counter booked) after its states.
	testenv.WaitFor(t, 5*time.Second, "the counter booked", func() bool { e, _ := dec.book.last(sysTitle.String()); return e.Counter == 7 })
	stop()
	// The forged state did not reach the state directory either.
	if e, _ := dec.book.last(sysTitle.String()); e.Counter != 7 {
		t.Errorf("book counter %d, want 7", e.Counter)
	}
}

// TestForgedConfirmationCannotEmptyTheQueue: frames wait at a forwarder
// for a decryptor; a client without the meter key publishes confirmations
// (unsigned, self-signed) that name them. With SMARTY_CONFIRM_KEY set,
// nothing leaves the queue until the real decryptor settles the frames.
// An old key's retained confirmation names old frames only.
func TestForgedConfirmationCannotEmptyTheQueue(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	src := &slowReader{}
	realPub, _ := ParseConfirmKey(ConfirmPublicKey(*key(t, testKey)))
	fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", logs, decrypt.Options{}), ForwardOptions{ConfirmKey: realPub}, src)
	waitOnline(t, broker.URL, "fwd")
	frames := [][]byte{sealed(t, 1), sealed(t, 2), sealed(t, 3)}
	src.feed(frames...)
	testenv.WaitFor(t, 5*time.Second, "queued", func() bool { return fwd.Queued() == 3 })
	attacker := testenv.Subscribe(t, broker.URL)
	topic := "smarty/confirm/" + sysTitle.String()
	var named []string
	for _, f := range frames {
		named = append(named, frameID(f)+":ok")
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	evil := confirmKey{priv: priv, pub: priv.Public().(ed25519.PublicKey), keyID: "00000000"}
	oldKey := deriveConfirmKey(decrypt.Key{9, 9, 9})
	for _, payload := range [][]byte{
		[]byte(`{"counter":4294967295}`),
		evil.sign(sysTitle.String(), &confirmation{Counter: 4294967295, Settled: named}),
		oldKey.sign(sysTitle.String(), &confirmation{Counter: 4294967295, Settled: []string{"0011223344556677:ok"}}),
	} {
		attacker.Client.Publish(context.Background(), &paho.Publish{Topic: topic, Payload: payload, QoS: 1, Retain: true})
	}
	time.Sleep(500 * time.Millisecond)
	if n := fwd.Queued(); n != 3 || fwd.Forged() < 3 {
		t.Fatalf("queued %d (want 3), forged %d (want 3)", n, fwd.Forged())
	}
	// The real decryptor settles them.
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	testenv.WaitFor(t, 30*time.Second, "real decryptor settles the queue", func() bool { return fwd.Queued() == 0 && dec.Stats().Telegrams == 3 })
}

// TestPlainImpostorRefused: a CRC-valid plain telegram naming an encrypted
// meter is refused; mutated plain telegrams make at most MaxPlainMeters
// meters.
func TestPlainImpostorRefused(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/#", "homeassistant/#")
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", &logBuffer{}, sysKeys(t)), SplitOptions{StateDir: t.TempDir(), MaxPlainMeters: 4})
	waitOnline(t, broker.URL, "dec")
	pub := testenv.Subscribe(t, broker.URL)
	publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), sealed(t, 1))
	sub.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 5*time.Second)
	forged := plainWithCRC(strings.Replace(string(readFile(t, "smarty-2026.telegram")), "1-0:1.8.0(000273.764*kWh)", "1-0:1.8.0(999999.999*kWh)", 1))
	publishRaw(t, pub.Client, "smarty/raw/Lux5_253663629_D", forged)
	for i := range 10 {
		id := hex.EncodeToString([]byte(fmt.Sprintf("FAKE%012d", i)))
		publishRaw(t, pub.Client, "smarty/raw/x", plainWithCRC("/FAK5 meter\r\n\r\n0-0:96.1.1("+id+")\r\n1-0:1.8.1(000001.000*kWh)\r\n!"))
	}
	testenv.WaitFor(t, 5*time.Second, "refusals", func() bool { return dec.Forged() == 1+6 })
	time.Sleep(300 * time.Millisecond)
	if v, _ := sub.Get("smarty/SAG1030700012701/1-0:1.8.0"); v != "273.764" {
		t.Errorf("the impostor's total was published: %s", v)
	}
	devices := func() int {
		n := 0
		for topic := range sub.Topics("homeassistant/device/") {
			if strings.Contains(topic, "FAKE") {
				n++
			}
		}
		return n
	}
	// Each meter is announced after its discovery topics were probed
	// (switch.go).
	testenv.WaitFor(t, 5*time.Second, "fake plain meters announced", func() bool { return devices() >= 4 })
	time.Sleep(2 * probeWait)
	if n := devices(); n != 4 {
		t.Errorf("%d fake plain meters announced, want the bound 4", n)
	}
}

// plainWithCRC ends a telegram (up to and including '!') with its CRC.
func plainWithCRC(s string) []byte {
	if i := strings.LastIndexByte(s, '!'); i >= 0 {
		s = s[:i+1]
	}
	return fmt.Appendf([]byte(s), "%04X\r\n", crc16.Checksum([]byte(s)))
}

// TestHostileRawMessages: a 100 MB payload, a frame of 4,097 bytes and
// 20,000 frames of made-up meters. Nothing is buffered beyond a frame,
// state and log lines stay bounded, and nothing is saved or retained.
func TestHostileRawMessages(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	state := t.TempDir()
	// A default key, so that every made-up meter is tried and fails.
	dec, stop := runDecryptor(t, opts(t, broker.URL, "dec", logs, decrypt.Options{Key: key(t, testKey)}), SplitOptions{StateDir: state})
	waitOnline(t, broker.URL, "dec")
	pub := testenv.Subscribe(t, broker.URL)
	publishRaw(t, pub.Client, "smarty/raw/x", bytes.Repeat([]byte{0xDB}, 100<<20))
	big := sealed(t, 3)
	big = append(big[:len(big):len(big)], make([]byte, 4097-len(big))...)
	publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), big)
	for i := range 20000 {
		title := decrypt.Title{'S', 'A', 'G', byte(i >> 16), byte(i >> 8), byte(i), 0xEE, 0xEE}
		f := decrypt.Seal(nil, decrypt.Key{1}, decrypt.DefaultAuthKey, title, 1, []byte("/x"))
		pub.Client.Publish(context.Background(), &paho.Publish{Topic: "smarty/raw/" + title.String(), Payload: f, QoS: 0})
	}
	publishRaw(t, pub.Client, "smarty/raw/"+sysTitle.String(), sealed(t, 4))
	testenv.WaitFor(t, 60*time.Second, "the real frame after the flood", func() bool { return dec.Stats().Telegrams == 1 })
	stop()
	if n := dec.part.(*decryptor).titles.len(); n > 8192 {
		t.Errorf("%d titles kept", n)
	}
	if dec.Garbage() != 1 {
		t.Errorf("garbage %d: want the 4,097-byte frame only (the broker drops the 100 MB one)", dec.Garbage())
	}
	if lines := strings.Count(logs.String(), "\n"); lines > 60 {
		t.Errorf("%d log lines for the flood", lines)
	}
	b, _ := os.ReadFile(filepath.Join(state, "counters.json"))
	var saved map[string]replayEntry
	json.Unmarshal(b, &saved)
	if len(saved) != 1 {
		t.Errorf("counters.json holds %d meters, want the real one", len(saved))
	}
	retainedConfirms := 0
	for topic := range testenv.Retained(t, broker.URL) {
		if strings.HasPrefix(topic, "smarty/confirm/") {
			retainedConfirms++
		}
	}
	if retainedConfirms != 1 {
		t.Errorf("%d retained confirmations, want the real meter's only", retainedConfirms)
	}
}

// TestBridgeModeDropsReplays: a TCP source (or any stream) replayed into
// a bridge: the repeated frame and an older one are dropped and counted.
func TestBridgeModeDropsReplays(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/SAG1030700012701/1-0:1.8.0")
	logs := &logBuffer{}
	o := testOptions(broker.URL, logs, sysKeys(t))
	o.StateDir = t.TempDir()
	h := start(t, o, &slowReader{chunks: [][]byte{sealed(t, 20), sealed(t, 20), sealed(t, 19), sealed(t, 21)}})
	testenv.WaitFor(t, 10*time.Second, "frames handled", func() bool { s := h.b.Stats(); return s.Telegrams+s.Rejected[telegrams.Replayed] == 4 })
	h.stop(t)
	if s := h.b.Stats(); s.Telegrams != 2 || s.Rejected[telegrams.Replayed] != 2 {
		t.Errorf("stats %+v: want 2 telegrams, 2 replays", s)
	}
	if sub.N("smarty/SAG1030700012701/1-0:1.8.0") != 2 {
		t.Errorf("%d states published", sub.N("smarty/SAG1030700012701/1-0:1.8.0"))
	}
	// Across a restart too: the state directory remembers.
	h = start(t, o, &slowReader{chunks: [][]byte{sealed(t, 21), sealed(t, 22)}})
	testenv.WaitFor(t, 10*time.Second, "frames handled after restart", func() bool { s := h.b.Stats(); return s.Telegrams+s.Rejected[telegrams.Replayed] == 2 })
	h.stop(t)
	if s := h.b.Stats(); s.Telegrams != 1 || s.Rejected[telegrams.Replayed] != 1 {
		t.Errorf("after restart: %+v", s)
	}
	if !strings.Contains(logs.String(), "counter did not grow") {
		t.Errorf("replay not logged")
	}
}

// TestForwarderDiskFull: the queue's directory cannot be written (here: it
// was replaced by a file, as a full disk fails a write). The forwarder
// keeps forwarding from memory, says so once, and recovers.
func TestForwarderDiskFull(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	state := t.TempDir()
	src := &slowReader{}
	fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", logs, decrypt.Options{}), ForwardOptions{StateDir: state}, src)
	waitOnline(t, broker.URL, "fwd")
	queue := filepath.Join(state, "queue")
	os.RemoveAll(queue)
	os.WriteFile(queue, []byte("not a directory"), 0o600)
	src.feed(sealed(t, 1), sealed(t, 2), sealed(t, 3))
	testenv.WaitFor(t, 5*time.Second, "frames held in memory", func() bool { return fwd.Queued() == 3 })
	if n := strings.Count(logs.String(), "cannot write the queue to disk"); n != 1 {
		t.Errorf("disk failure logged %d times, want once", n)
	}
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, sysKeys(t)), SplitOptions{StateDir: t.TempDir()})
	testenv.WaitFor(t, 30*time.Second, "frames from memory delivered", func() bool { return dec.Stats().Telegrams == 3 && fwd.Queued() == 0 })
	os.Remove(queue)
	os.Mkdir(queue, 0o700)
	src.feed(sealed(t, 4))
	testenv.WaitFor(t, 10*time.Second, "disk queue again", func() bool { return dec.Stats().Telegrams == 4 })
	if !strings.Contains(logs.String(), "the queue on disk works again") {
		t.Errorf("recovery not logged")
	}
}
