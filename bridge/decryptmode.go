package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

// Split mode, decrypting side.
//
// A decryptor subscribes to the frames forwarders publish,
//
//	<prefix>/raw/<SYSTEM-TITLE>        the frame's bytes, QoS 1
//
// (through the shared subscription $share/<group>/<prefix>/raw/+ when
// several decryptors split the meters), decrypts them and publishes
// exactly what bridge mode publishes. For every frame it accepts it
// publishes, retained,
//
//	<prefix>/counter/<SYSTEM-TITLE>    {"counter":N,"key_id":"…"}
//
// the last accepted frame counter: forwarders drop what it covers from
// their queues and re-send the rest, and the other decryptors of a group
// follow it, so that a frame whose counter does not grow is dropped as a
// duplicate or a replay everywhere. key_id is a short one-way hash of the
// meter's key: when the grid operator changes the key the meter's counter
// restarts at 0, and a frame under a new key starts a new sequence.

// SplitOptions configure decrypt mode.
type SplitOptions struct {
	ShareGroup    string        // "" subscribes directly, else $share/<group>/…
	StateDir      string        // where the last accepted counters are kept
	SessionExpiry time.Duration // how long the broker keeps our session while we are away
}

type replayState struct {
	Counter uint32 `json:"counter"`
	KeyID   string `json:"key_id"`
}

type rawFrame struct {
	topic   string
	payload []byte
}

// decryptor is the decrypt-mode part of a Bridge.
type decryptor struct {
	b      *Bridge
	o      SplitOptions
	frames chan rawFrame
	done   chan struct{} // closed when the loop stops taking frames
	keyIDs func(decrypt.Title) string

	mu      sync.Mutex
	last    map[string]replayState // by title hex
	dirty   bool
	lastAck map[string]time.Time // when a duplicate last re-published the counter

	// Decrypt loop only.
	told map[string]bool // "reason title" already logged

	duplicates, garbage atomic.Int64
}

// RunDecrypt runs decrypt mode: frames come from the broker instead of a
// port. It returns when ctx is done.
func (b *Bridge) RunDecrypt(ctx context.Context, o SplitOptions) error {
	if o.SessionExpiry <= 0 {
		o.SessionExpiry = 24 * time.Hour
	}
	d := &decryptor{
		b: b, o: o, frames: make(chan rawFrame, 4096), done: make(chan struct{}), keyIDs: keyIDs(b.o.Keys),
		last: map[string]replayState{}, lastAck: map[string]time.Time{}, told: map[string]bool{},
	}
	if err := d.load(); err != nil {
		return err
	}
	b.split.Store(d)
	co := connectOptions{sessionExpiry: uint32(o.SessionExpiry / time.Second)}
	return b.run(ctx, co, func(ctx context.Context) error {
		var wg sync.WaitGroup
		wg.Go(func() { d.saver(ctx) })
		d.loop(ctx)
		wg.Wait()
		return d.save()
	})
}

// Duplicates counts frames dropped because their counter did not grow.
func (b *Bridge) Duplicates() int64 {
	if d := b.split.Load(); d != nil {
		return d.duplicates.Load()
	}
	return 0
}

// Garbage counts raw messages that were no frame at all.
func (b *Bridge) Garbage() int64 {
	if d := b.split.Load(); d != nil {
		return d.garbage.Load()
	}
	return 0
}

func (d *decryptor) rawFilter() string {
	f := d.b.o.TopicPrefix + "/raw/+"
	if d.o.ShareGroup != "" {
		f = "$share/" + d.o.ShareGroup + "/" + f
	}
	return f
}

func (d *decryptor) counterTopic(title string) string {
	return d.b.o.TopicPrefix + "/counter/" + title
}

// subscribe runs after every connection: subscriptions are not restored
// when the broker lost the session.
func (d *decryptor) subscribe(ctx context.Context) {
	if err := d.b.conn.subscribe(ctx, d.b.o.TopicPrefix+"/counter/+", d.rawFilter()); err != nil {
		d.b.log.Warn("cannot subscribe to forwarded frames; retrying on the next connection", "filter", d.rawFilter(), "err", err)
		return
	}
	d.b.log.Info("receiving forwarded frames", "filter", d.rawFilter())
}

// message takes what the broker sends; it reports whether it was ours.
func (d *decryptor) message(topic string, payload []byte) bool {
	prefix := d.b.o.TopicPrefix + "/"
	switch {
	case strings.HasPrefix(topic, prefix+"raw/"):
		// The frame outlives the callback. A full queue holds up paho, and
		// so the broker: back-pressure instead of loss.
		select {
		case d.frames <- rawFrame{topic: topic, payload: bytes.Clone(payload)}:
		case <-d.done:
		}
		return true
	case strings.HasPrefix(topic, prefix+"counter/"):
		d.follow(strings.TrimPrefix(topic, prefix+"counter/"), payload)
		return true
	}
	return false
}

// follow adopts a counter another decryptor accepted (or one we published
// before a restart, kept by the broker).
func (d *decryptor) follow(title string, payload []byte) {
	var st replayState
	if json.Unmarshal(payload, &st) != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.last[title]
	if !ok || st.KeyID == cur.KeyID && st.Counter > cur.Counter {
		d.last[title] = st
		d.dirty = true
	}
}

func (d *decryptor) loop(ctx context.Context) {
	defer close(d.done)
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-d.frames:
			d.handle(ctx, f)
		}
	}
}

// handle checks, decrypts and publishes one forwarded frame.
func (d *decryptor) handle(ctx context.Context, f rawFrame) {
	b := d.b
	id := f.topic[strings.LastIndexByte(f.topic, '/')+1:]
	if len(f.payload) > 0 && f.payload[0] == '/' {
		// A plain telegram from a meter without encryption: no counter.
		if tg, from, err := b.dec.Decode(p1.Plain, f.payload); err == nil {
			b.handle(ctx, tg, from)
		} else {
			d.reject(id, err)
		}
		return
	}
	h, err := decrypt.ParseHeader(f.payload)
	if err != nil || h.Len != len(f.payload) || h.Title.String() != id {
		d.garbage.Add(1)
		d.tellOnce("garbage "+id, "a message on the raw topic is not a frame of that meter; ignored", "topic", f.topic, "bytes", len(f.payload))
		return
	}
	keyID := d.keyIDs(h.Title)
	d.mu.Lock()
	st, seen := d.last[id]
	d.mu.Unlock()
	if seen && h.Counter <= st.Counter && st.KeyID == keyID {
		d.duplicates.Add(1)
		b.log.Debug("duplicate or replayed frame dropped", "meter", id, "counter", h.Counter, "last", st.Counter)
		d.ackAgain(ctx, id, st)
		return
	}
	tg, from, err := b.dec.Decode(p1.Encrypted, f.payload)
	if err != nil {
		d.reject(id, err)
		return
	}
	b.handle(ctx, tg, from)
	st = replayState{Counter: h.Counter, KeyID: keyID}
	d.mu.Lock()
	if cur := d.last[id]; cur.KeyID != keyID || h.Counter > cur.Counter {
		d.last[id] = st
		d.dirty = true
	}
	d.mu.Unlock()
	d.ack(ctx, id, st)
}

func (d *decryptor) ack(ctx context.Context, title string, st replayState) {
	payload, _ := json.Marshal(st)
	d.b.send(ctx, d.counterTopic(title), payload, 0)
}

// ackAgain re-publishes the counter after a duplicate (at most once a
// second per meter): a forwarder that re-sends did not see it.
func (d *decryptor) ackAgain(ctx context.Context, title string, st replayState) {
	d.mu.Lock()
	due := time.Since(d.lastAck[title]) > time.Second
	if due {
		d.lastAck[title] = time.Now()
	}
	d.mu.Unlock()
	if due {
		d.ack(ctx, title, st)
	}
}

// reject counts a frame that did not decode and logs it once per meter and
// reason.
func (d *decryptor) reject(title string, err error) {
	reason := Reason(err)
	if !d.b.count(reason) {
		d.garbage.Add(1)
	}
	switch {
	case errors.Is(err, decrypt.ErrNoKey):
		d.tellOnce("nokey "+title, fmt.Sprintf("no key for meter %s: add %s:<key> to SMARTY_KEYS (or set SMARTY_KEY); its frames are counted and dropped", title, title), "meter", title)
	case errors.Is(err, decrypt.ErrAuthKey):
		d.tellOnce("authkey "+title, "frames of this meter decrypt with its key but fail authentication: the authentication key differs; set SMARTY_AUTH_KEY or SMARTY_VERIFY_TAG=false", "meter", title)
	case errors.Is(err, decrypt.ErrAuth):
		d.tellOnce("auth "+title, "frames of this meter fail authentication: its key in SMARTY_KEYS (or SMARTY_KEY) is wrong", "meter", title)
	default:
		d.tellOnce(reason+" "+title, "a forwarded frame was rejected", "meter", title, "err", err)
	}
}

func (d *decryptor) tellOnce(key, msg string, args ...any) {
	if d.told[key] {
		return
	}
	d.told[key] = true
	d.b.log.Warn(msg, args...)
}

// keyIDs returns, per system title, a short one-way hash of the key that
// decrypts it ("" without key).
func keyIDs(o decrypt.Options) func(decrypt.Title) string {
	id := func(k decrypt.Key) string {
		sum := sha256.Sum256(append([]byte("smartybridge key id\x00"), k[:]...))
		return hex.EncodeToString(sum[:4])
	}
	byTitle := map[decrypt.Title]string{}
	for t, k := range o.Keys {
		byTitle[t] = id(k)
	}
	def := ""
	if o.Key != nil {
		def = id(*o.Key)
	}
	return func(t decrypt.Title) string {
		if s, ok := byTitle[t]; ok {
			return s
		}
		return def
	}
}

func (d *decryptor) stateFile() string {
	if d.o.StateDir == "" {
		return ""
	}
	return filepath.Join(d.o.StateDir, "counters.json")
}

// load reads the counters saved by an earlier run.
func (d *decryptor) load() error {
	p := d.stateFile()
	if p == "" {
		return nil
	}
	if err := os.MkdirAll(d.o.StateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w (set SMARTY_STATE_DIR to a writable directory)", err)
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &d.last); err != nil {
		d.b.log.Warn("saved frame counters unreadable; starting afresh (replay protection then relies on the broker's retained counters)", "file", p, "err", err)
		d.last = map[string]replayState{}
	}
	return nil
}

// saver writes the counters once a second when they changed.
func (d *decryptor) saver(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.save(); err != nil {
				d.b.log.Warn("cannot save frame counters", "err", err)
			}
		}
	}
}

func (d *decryptor) save() error {
	p := d.stateFile()
	d.mu.Lock()
	if p == "" || !d.dirty {
		d.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(d.last)
	d.dirty = false
	d.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
