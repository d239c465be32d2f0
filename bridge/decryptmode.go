package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
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
// exactly what bridge mode publishes. It settles every frame it can judge
// with a signed confirmation (confirm.go): published, a duplicate, failed
// authentication, or no valid telegram. A frame is confirmed as published
// only once the broker acknowledged the confirmation, which it sends after
// the frame's states on the same connection: a broker that crashed before
// it took the states never confirms the frame, and the forwarder sends it
// again. Frames of meters without a key here are not settled: another
// decryptor of the group may hold it.
//
// The other decryptors of a group follow the confirmations they can verify,
// so that a frame whose counter does not grow is dropped as a duplicate or
// a replay everywhere; one that is not signed with the meter's key is
// ignored and counted.

// SplitOptions configure decrypt mode.
type SplitOptions struct {
	ShareGroup    string        // "" subscribes directly, else $share/<group>/…
	StateDir      string        // where the last accepted counters are kept
	SessionExpiry time.Duration // how long the broker keeps our session while we are away
	// MaxPlainMeters bounds the unencrypted meters served (a plain
	// telegram carries no authentication). Default 16.
	MaxPlainMeters int
}

type rawFrame struct {
	topic   string
	payload []byte
}

// titleState is what a decryptor keeps about one system title between
// frames; bounded by an LRU.
type titleState struct {
	authFails int          // failed authentications in a row
	okAt      time.Time    // when a frame last decoded
	confirms  confirmState // settle.go
}

// plainState is what a decryptor keeps about one unencrypted meter.
type plainState struct {
	lastTime string    // the telegram's 0-0:1.0.0, which must grow
	lastAt   time.Time // when it came (host time)
	// Stamps in a row before lastTime, growing among themselves: a clock
	// set back, or a forged stamp before them (plainStampOK).
	back     int
	backLast string
}

// decryptor is the decrypt-mode part of a Bridge.
type decryptor struct {
	b      *Bridge
	o      SplitOptions
	frames chan rawFrame
	done   chan struct{} // closed when the loop stops taking frames
	keys   *confirmKeys

	mu     sync.Mutex
	titles *lru[*titleState]
	plain  *lru[*plainState]
	wg     sync.WaitGroup

	logs *logLimiter
}

// confirmKeys derives, once per meter key, the key that signs its
// confirmations.
type confirmKeys struct {
	def     *confirmKey
	byTitle map[decrypt.Title]confirmKey
	titles  map[string]bool // byTitle's titles in hex, as topics and meter ids name them
}

func newConfirmKeys(o decrypt.Options) *confirmKeys {
	c := &confirmKeys{byTitle: map[decrypt.Title]confirmKey{}, titles: map[string]bool{}}
	for t, k := range o.Keys {
		c.byTitle[t] = deriveConfirmKey(k)
		c.titles[t.String()] = true
	}
	if o.Key != nil {
		k := deriveConfirmKey(*o.Key)
		c.def = &k
	}
	return c
}

func (c *confirmKeys) lookup(t decrypt.Title) (confirmKey, bool) {
	if k, ok := c.byTitle[t]; ok {
		return k, true
	}
	if c.def != nil {
		return *c.def, true
	}
	return confirmKey{}, false
}

func newDecryptor(b *Bridge, o SplitOptions) *decryptor {
	if o.MaxPlainMeters <= 0 {
		o.MaxPlainMeters = 16
	}
	return &decryptor{
		b: b, o: o, frames: make(chan rawFrame, 4096), done: make(chan struct{}), keys: newConfirmKeys(b.o.Keys),
		titles: newLRU[*titleState](8192), plain: newLRU[*plainState](o.MaxPlainMeters),
		logs: newLogLimiter(10*time.Minute, 20),
	}
}

// maxRawPacket is the largest MQTT packet a bridge or decryptor accepts
// (MQTT 5 Maximum Packet Size): a frame is at most p1.MaxFrameLen bytes,
// and a meter's discovery config, read back when the discovery style
// changes (switch.go), about 25 KB. A larger raw message is counted and
// dropped (decryptor.handle).
const maxRawPacket = max(p1.MaxFrameLen+1024, 64<<10)

// maxLookPacket is a decryptor's Maximum Packet Size when it looks at
// every node's discovery (switch.go): other devices' configs come too, and
// some brokers (rmqtt) close a connection rather than drop a message over
// the client's maximum. 1 MB is the usual broker's own limit.
const maxLookPacket = 1 << 20

// RunDecrypt runs decrypt mode: frames come from the broker instead of a
// port. It returns when ctx is done.
func (b *Bridge) RunDecrypt(ctx context.Context, o SplitOptions) error {
	if o.SessionExpiry <= 0 {
		o.SessionExpiry = 24 * time.Hour
	}
	d := newDecryptor(b, o)
	if b.book.file == "" && o.StateDir != "" {
		b.book = newReplayBook(o.StateDir)
		b.quarters = newQuarterBook(o.StateDir, b.quarters.defaults)
	}
	b.book.load(b.log)
	b.quarters.load(b.log)
	b.startReport(discovery.ModeDecrypt)
	co := connectOptions{sessionExpiry: uint32(o.SessionExpiry / time.Second), maxPacket: maxRawPacket}
	if b.o.Discovery == discovery.Off {
		b.sw.disable() // an operator's broker: no configs to move (switch.go)
	} else {
		b.sw.lookAtAll()
		co.maxPacket = maxLookPacket
	}
	for t, k := range d.keys.byTitle {
		b.log.Info("confirmations of this meter are signed with", "meter", t.String(), "confirm_key", fmt.Sprintf("%x", []byte(k.pub)))
	}
	if d.keys.def != nil {
		b.log.Info("confirmations of meters under SMARTY_KEY are signed with", "confirm_key", fmt.Sprintf("%x", []byte(d.keys.def.pub)),
			"hint", "set SMARTY_CONFIRM_KEY to this on the forwarders")
	}
	err := b.run(ctx, co, d, false, func(ctx context.Context) error {
		var wg sync.WaitGroup
		wg.Go(func() { b.saver(ctx) })
		d.loop(ctx)
		wg.Wait()
		d.wg.Wait()
		b.saveAll() // a last time
		return nil
	})
	b.logStopped()
	return err
}

// connected subscribes to the forwarded frames and the confirmations,
// then marks for publishing what the broker may have lost (part).
func (d *decryptor) connected(ctx context.Context) {
	d.subscribe(ctx)
	d.b.connected(ctx)
}

// homeAssistantOnline sends every discovery again (part).
func (d *decryptor) homeAssistantOnline(ctx context.Context) { d.b.homeAssistantOnline(ctx) }

// stop says "offline" for every meter (part).
func (d *decryptor) stop(ctx context.Context) { d.b.stop(ctx) }

// Duplicates counts frames dropped because their counter did not grow.
func (b *Bridge) Duplicates() int64 { return b.counts.rejected[telegrams.Replayed].Load() }

// Garbage counts raw messages that were no frame at all.
func (b *Bridge) Garbage() int64 { return b.counts.garbage.Load() + b.counts.oversized.Load() }

// Forged counts confirmations not signed with the meter's key, and plain
// telegrams refused because they named an encrypted meter.
func (b *Bridge) Forged() int64 { return b.counts.forged.Load() + b.counts.plainRefused.Load() }

func (d *decryptor) rawFilter() string {
	f := d.b.o.TopicPrefix + "/raw/+"
	if d.o.ShareGroup != "" {
		f = "$share/" + d.o.ShareGroup + "/" + f
	}
	return f
}

func (d *decryptor) confirmTopic(title string) string {
	return d.b.o.TopicPrefix + "/confirm/" + title
}

// subscribe runs after every connection: subscriptions are not restored
// when the broker lost the session.
func (d *decryptor) subscribe(ctx context.Context) {
	subs := []paho.SubscribeOptions{
		// NoLocal: our own confirmations need no checking.
		{Topic: d.b.o.TopicPrefix + "/confirm/+", QoS: 1, NoLocal: true},
		{Topic: d.rawFilter(), QoS: 1},
	}
	if err := d.b.conn.subscribeWith(ctx, subs); err != nil {
		d.b.log.Warn("cannot subscribe to forwarded frames; retrying on the next connection", "filter", d.rawFilter(), "err", err)
		return
	}
	d.b.log.Info("receiving forwarded frames", "filter", d.rawFilter())
}

// message takes what the broker sends for decrypt mode (part).
func (d *decryptor) message(topic string, payload []byte) {
	if !d.take(topic, payload) {
		d.b.message(topic, payload)
	}
}

// take takes a forwarded frame or a confirmation; it reports whether the
// message was one.
func (d *decryptor) take(topic string, payload []byte) bool {
	prefix := d.b.o.TopicPrefix + "/"
	switch {
	case strings.HasPrefix(topic, prefix+"raw/"):
		d.b.bytesIn.Add(int64(len(payload))) // what the Problem sensor sees arrive
		if len(payload) > p1.MaxFrameLen {
			// Never queued: the queue holds 4096 frames, not 4096 of
			// whatever size the broker lets through.
			d.b.counts.oversized.Add(1)
			d.warnLimited("oversized", "a message on a raw topic is larger than any frame; ignored", "topic", topic, "bytes", len(payload), "max", p1.MaxFrameLen)
			return true
		}
		// The frame outlives the callback. A full queue holds up paho, and
		// so the broker: back-pressure instead of loss.
		select {
		case d.frames <- rawFrame{topic: topic, payload: bytes.Clone(payload)}:
		case <-d.done:
		}
		return true
	case strings.HasPrefix(topic, prefix+"confirm/"):
		d.follow(strings.TrimPrefix(topic, prefix+"confirm/"), payload)
		return true
	}
	return false
}

// follow adopts a counter another decryptor accepted (or one we confirmed
// before a restart, kept by the broker), if it is signed with the meter's
// key.
func (d *decryptor) follow(title string, payload []byte) {
	t, err := decrypt.ParseTitle(title)
	if err != nil {
		return
	}
	k, ok := d.keys.lookup(t)
	if !ok {
		return // not a meter of ours
	}
	c, pub, err := parseConfirmation(title, payload)
	if err != nil || !pub.Equal(k.pub) {
		d.b.counts.forged.Add(1)
		d.warnLimited("forged "+title, "a confirmation for this meter is not signed with its key; ignored",
			"meter", title, "hint", "another client publishes on "+d.confirmTopic(title)+": restrict who may publish there with the broker's ACL (README, split mode)")
		return
	}
	if c.KeyID == k.keyID {
		d.b.book.commit(title, c.KeyID, c.Counter, "", time.Time{})
	}
}

// state returns what is kept about title id. Called with d.mu held.
func (d *decryptor) state(id string) *titleState {
	return d.titles.getOrAdd(id, func() *titleState { return &titleState{} })
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

// handle checks, decrypts and publishes one forwarded frame (take has
// turned away what is larger than any frame).
func (d *decryptor) handle(ctx context.Context, f rawFrame) {
	b := d.b
	id := f.topic[strings.LastIndexByte(f.topic, '/')+1:]
	if len(f.payload) > 0 && f.payload[0] == '/' {
		d.handlePlain(ctx, id, f.payload)
		return
	}
	h, err := decrypt.ParseHeader(f.payload)
	if err != nil || h.Len != len(f.payload) || h.Title.String() != id {
		d.b.counts.garbage.Add(1)
		d.warnLimited("garbage "+id, "a message on the raw topic is not a frame of that meter; ignored", "topic", f.topic, "bytes", len(f.payload))
		return
	}
	k, hasKey := d.keys.lookup(h.Title)
	if !hasKey {
		b.countReject(telegrams.NoKey)
		b.noteReject(decrypt.ErrNoKey, telegrams.NoKey, h.Title, false)
		d.warnLimited("nokey "+id, fmt.Sprintf("no key for meter %s: add %s:<key> to SMARTY_KEYS (or set SMARTY_KEY); its frames are counted and left for a decryptor that has it", id, id), "meter", id)
		return
	}
	fid := frameID(f.payload)
	d.mu.Lock()
	st := d.state(id)
	inFlight := st.confirms.inFlight(h.Counter)
	d.mu.Unlock()
	if inFlight {
		b.countReject(telegrams.Replayed) // a repeat of the frame whose confirmation is on its way
		return
	}
	// Every frame is decrypted, repeats included (3 µs): only
	// authentication tells a forwarder's re-send of a real frame, which
	// must always be answered, from a forgery, which must not crowd it out.
	tg, from, err := b.dec.Decode(p1.Encrypted, f.payload)
	if err != nil {
		d.mu.Lock()
		worked := time.Since(st.okAt) < problemWindow(b.o.MeterTimeout)
		d.mu.Unlock()
		b.noteReject(err, telegrams.ReasonOf(err), h.Title, worked)
		d.reject(ctx, id, k, fid, h.Counter, err)
		return
	}
	d.mu.Lock()
	st.authFails, st.okAt = 0, time.Now()
	d.mu.Unlock()
	at, _ := tg.Time()
	// A repeat of the last accepted frame is a forwarder's re-send; an
	// older counter a replay, or a meter that restarted its counter,
	// which only the telegram's clock tells apart (replay.go).
	last, _ := b.book.last(id)
	repeat := !b.book.fresh(id, k.keyID, h.Counter) && h.Counter >= last.Counter
	if repeat || !b.replayGuard(id, k.keyID, h.Counter, at) {
		b.countReject(telegrams.Replayed)
		b.log.Debug("duplicate frame dropped", "meter", id, "counter", h.Counter, "last", last.Counter)
		d.settle(ctx, id, k, fid, verdictDup, h.Counter, false, "", time.Time{})
		return
	}
	meterID := b.meterID(tg, from)
	if !b.handle(ctx, tg, from) {
		// The broker did not take the states: no confirmation, so the
		// forwarder sends the frame again.
		return
	}
	d.settle(ctx, id, k, fid, verdictOK, h.Counter, true, meterID, at)
}

// reject settles a frame that failed, and says why: the key is blamed only
// when no frame of the meter ever authenticated with it.
func (d *decryptor) reject(ctx context.Context, id string, k confirmKey, fid string, counter uint32, err error) {
	b := d.b
	b.countReject(telegrams.ReasonOf(err))
	verdict := verdictBad
	if errors.Is(err, decrypt.ErrAuth) {
		verdict = verdictAuth
	}
	d.mu.Lock()
	st := d.state(id)
	if verdict == verdictAuth {
		st.authFails++
	}
	fails := st.authFails
	d.mu.Unlock()
	last, known := b.book.last(id)
	provenKey := known && last.KeyID == k.keyID
	switch {
	case errors.Is(err, decrypt.ErrAuthKey):
		d.warnLimited("authkey "+id, "frames of this meter decrypt with its key but fail authentication: the authentication key differs; set SMARTY_AUTH_KEY or SMARTY_VERIFY_TAG=false", "meter", id)
	case verdict == verdictAuth && provenKey:
		d.warnLimited("damaged "+id, "a frame of this meter failed authentication although its key decrypts its other frames: damaged on the line (noise on the P1 cable); skipped", "meter", id, "counter", counter)
	case verdict == verdictAuth && fails >= 3:
		d.warnLimited("auth "+id, fmt.Sprintf("%d frames of this meter in a row fail authentication and none ever passed: its key in SMARTY_KEYS (or SMARTY_KEY) is wrong", fails), "meter", id)
	case verdict == verdictAuth:
		d.warnLimited("auth1 "+id, "a frame failed authentication (line noise, or the wrong key if it goes on); skipped", "meter", id)
	default:
		d.warnLimited("bad "+id, "a forwarded frame decrypted but holds no valid telegram; skipped", "meter", id, "err", err)
	}
	if known {
		// Settled only for meters whose frames authenticated before: a
		// forwarder trusts no key for any other meter yet, and noise or
		// forged frames of made-up meters cost no signature.
		d.settle(ctx, id, k, fid, verdict, counter, false, "", time.Time{})
	}
}

func (d *decryptor) warnLimited(key, msg string, args ...any) {
	ok, held := d.logs.allow(key)
	if !ok {
		return
	}
	if held > 0 {
		args = append(args, "similar_lines_held_back", held)
	}
	d.b.log.Warn(msg, args...)
}
