package bridge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/spool"
	"github.com/smartybridge/smartybridge/internal/telegrams"
)

// Split mode, meter side.
//
// A forwarder reads the port like the bridge, holds no key, and publishes
// every frame unchanged:
//
//	<prefix>/raw/<SYSTEM-TITLE>   the frame's bytes, QoS 1, not retained
//	<prefix>/raw/<HEADER-ID>      a plain DSMR telegram, by its identification line
//
// Every frame first goes to a queue on disk (the spool; in memory while
// the disk fails), and leaves it only when a decryptor settles it with a
// signed confirmation (confirm.go) that names it: the broker's
// acknowledgement is not enough, since a broker restart can drop frames
// before the decryptors subscribe again (mosquitto 2.0 does not restore
// shared subscriptions). Unsettled frames are re-sent, in order, after
// ResendAfter, one frame in flight per meter so that they arrive in order;
// duplicates are harmless because decryptors drop frames whose counter
// does not grow. A frame a decryptor rejects (damaged on the line, say) is
// settled too, so it costs only itself. Plain telegrams carry no counter
// and leave the queue once the broker has them.
//
// A forwarder cannot check a frame, so it cannot tell line noise shaped
// like a header from a real frame: it forwards such a candidate and
// searches its bytes again (p1.Scanner.Overlap), unless its meter is one a
// decryptor confirmed. Frames of meters no decryptor ever confirmed are
// dropped after UnconfirmedTTL, so that noise does not fill the queue.

// ForwardOptions configure forward mode.
type ForwardOptions struct {
	Device      string        // named in the forwarder's description
	StateDir    string        // the queue lives in <StateDir>/queue
	QueueMax    int           // frames kept at most; the oldest go first. Default 10000
	ResendAfter time.Duration // re-send what no decryptor confirmed. Default 10 s
	// StuckAfter: warn when no decryptor confirmed anything for this long.
	// Default 60 s.
	StuckAfter time.Duration
	// UnconfirmedTTL: frames of a meter that no decryptor ever confirmed
	// are dropped after this long. Default 1 h.
	UnconfirmedTTL time.Duration
	// ConfirmKey, if set, is the only key whose confirmations count (the
	// public key the decryptors log as confirm_key). Without it the first
	// key that confirms a frame of a meter is trusted for that meter from
	// then on, and kept in <StateDir>/confirm-keys.json.
	ConfirmKey ed25519.PublicKey
}

type entry struct {
	seq       uint64 // in the spool; 0 when held in memory
	data      []byte // the frame, when held in memory
	id        string // frameID
	topic     string
	title     string
	plain     bool
	sent      bool
	sentAt    time.Time
	firstSent time.Time
	queuedAt  time.Time
}

// Forwarder is forward mode.
type Forwarder struct {
	*node
	fo      ForwardOptions
	spool   *spool.Spool
	wake    chan struct{}
	logs    *logLimiter
	pinFile string

	mu      sync.Mutex
	entries []*entry
	titles  map[string]bool // meters named in the description (at most maxTitles)
	// pins: meters a decryptor confirmed, with the key that signed it
	// (hex); kept in pinFile.
	pins      map[string]string
	fresh     [][8]byte // confirmed titles the reading loop has not told its scanner yet
	lastAck   time.Time
	resendGap time.Duration
	stuck     bool
	diskBad   bool

	forwarded, nConfirmed, rejected, dropped, forged atomic.Int64

	bytesIn    atomic.Int64
	skipped    atomic.Int64 // the reading loop's count of bytes in no frame
	portError  func() error
	lastQueued atomic.Int64 // unix nanoseconds
}

// maxTitles bounds the meters a forwarder describes and pins.
const maxTitles = 64

// NewForwarder opens the queue and prepares forward mode.
func NewForwarder(o Options, fo ForwardOptions) (*Forwarder, error) {
	if fo.QueueMax <= 0 {
		fo.QueueMax = 10000
	}
	if fo.ResendAfter <= 0 {
		fo.ResendAfter = 10 * time.Second
	}
	if fo.StuckAfter <= 0 {
		fo.StuckAfter = time.Minute
	}
	if fo.UnconfirmedTTL <= 0 {
		fo.UnconfirmedTTL = time.Hour
	}
	n := newNode(o)
	log := n.log
	sp, err := spool.Open(filepath.Join(fo.StateDir, "queue"), fo.QueueMax)
	diskBad := err != nil
	if err != nil {
		log.Error("cannot keep the queue on disk; keeping frames in memory (lost if the forwarder stops)",
			"err", err, "hint", "set SMARTY_STATE_DIR to a writable directory")
		sp = spool.Broken(err)
	}
	f := &Forwarder{
		node: n, fo: fo, spool: sp,
		wake: make(chan struct{}, 1), titles: map[string]bool{}, pins: map[string]string{},
		lastAck: time.Now(), resendGap: fo.ResendAfter, logs: newLogLimiter(10*time.Minute, 20),
		pinFile: filepath.Join(fo.StateDir, "confirm-keys.json"), diskBad: diskBad,
	}
	f.loadPins()
	now := time.Now()
	for _, seq := range sp.Seqs() {
		b, err := sp.Read(seq)
		if err != nil {
			continue
		}
		if e := f.describe(seq, b, now); e != nil {
			f.entries = append(f.entries, e)
		} else if err := sp.Remove(seq); err != nil {
			log.Warn("cannot remove a damaged record from the queue; it is skipped again at every start", "err", err)
		}
	}
	for t := range f.pins {
		if tt, err := decrypt.ParseTitle(t); err == nil {
			f.fresh = append(f.fresh, tt)
		}
	}
	if n := len(f.entries); n > 0 {
		log.Info("frames queued from the last run will be sent", "frames", n)
	}
	return f, nil
}

// Stats: frames published to the broker, settled as published by a
// decryptor, and dropped (queue full, or never confirmed).
func (f *Forwarder) Stats() (forwarded, confirmed, dropped int64) {
	return f.forwarded.Load(), f.nConfirmed.Load(), f.dropped.Load()
}

// Rejected counts frames a decryptor settled as rejected (damaged, or a
// duplicate), and Forged the confirmations that were not signed with the
// meter's key.
func (f *Forwarder) Rejected() int64 { return f.rejected.Load() }

// Forged counts confirmations ignored because of their signature.
func (f *Forwarder) Forged() int64 { return f.forged.Load() }

// Queued returns how many frames wait for a decryptor.
func (f *Forwarder) Queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.entries)
}

// describe makes the queue entry for a frame.
func (f *Forwarder) describe(seq uint64, frame []byte, now time.Time) *entry {
	if len(frame) > 0 && frame[0] == '/' {
		line := frame[1:]
		if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
			line = line[:i]
		}
		id := TopicSafe(string(line))
		return &entry{seq: seq, id: frameID(frame), topic: f.o.TopicPrefix + "/raw/" + id, title: id, plain: true, queuedAt: now}
	}
	// A record cut short (a damaged disk) would hold its meter's later
	// frames behind it forever: no decryptor settles it.
	h, err := decrypt.ParseHeader(frame)
	if err != nil || h.Len != len(frame) {
		return nil
	}
	t := h.Title.String()
	return &entry{seq: seq, id: frameID(frame), topic: f.o.TopicPrefix + "/raw/" + t, title: t, queuedAt: now}
}

// Run forwards what src delivers until ctx is done or src ends.
func (f *Forwarder) Run(ctx context.Context, src Source) error {
	f.portError = src.OpenError
	f.startReport()
	// The largest packet a forwarder takes: a confirmation, or its own
	// device's discovery config read back when the style changes
	// (switch.go; the broker drops a larger one, and the config would not
	// be moved). Confirmations longer than maxConfirmLen are still refused.
	err := f.run(ctx, connectOptions{maxPacket: max(maxConfirmLen+1024, 16<<10)}, f, []func(context.Context){f.sender},
		func(ctx context.Context) error { return f.read(ctx, src) })
	fw, cf, dr := f.Stats()
	f.log.Info("stopped", "forwarded", fw, "confirmed", cf, "rejected", f.rejected.Load(), "dropped", dr, "queued", f.Queued())
	return err
}

// stop: a forwarder has nothing to say but its status (part).
func (f *Forwarder) stop(context.Context) {}

// read queues every frame of src.
func (f *Forwarder) read(ctx context.Context, src io.Reader) error {
	var rd *telegrams.Reader
	// Meters confirmed meanwhile are known before every read, so that a
	// false header waiting for its declared bytes is cut at theirs.
	rd = telegrams.NewFrameReader(hookedReader{countingReader{ctx, src, &f.bytesIn}, func() {
		f.mu.Lock()
		for _, t := range f.fresh {
			rd.Know(t)
		}
		f.fresh = f.fresh[:0]
		f.mu.Unlock()
		f.skipped.Store(int64(rd.Stats().Skipped))
	}})
	for {
		fr, err := rd.Next()
		if err != nil {
			f.skipped.Store(int64(rd.Stats().Skipped))
			if err == io.EOF || errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("read meter: %w", err)
		}
		f.queue(ctx, fr.Bytes)
	}
}

// hookedReader calls before ahead of every Read.
type hookedReader struct {
	r      io.Reader
	before func()
}

func (h hookedReader) Read(p []byte) (int, error) {
	h.before()
	return h.r.Read(p)
}

// queue stores a frame on disk, or in memory while the disk fails, and
// wakes the sender.
func (f *Forwarder) queue(ctx context.Context, frame []byte) {
	now := time.Now()
	e := f.describe(0, frame, now)
	if e == nil {
		return
	}
	f.lastQueued.Store(now.UnixNano())
	seq, dropped, err := f.spool.Append(frame)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case err != nil && !f.diskBad:
		f.diskBad = true
		f.log.Error("cannot write the queue to disk; keeping frames in memory (lost if the forwarder stops) until it works again",
			"err", err, "hint", "free space or fix permissions in SMARTY_STATE_DIR")
	case err == nil && f.diskBad:
		f.diskBad = false
		f.log.Info("the queue on disk works again")
	}
	if err != nil {
		e.data = bytes.Clone(frame)
	} else {
		e.seq = seq
	}
	if dropped > 0 {
		f.entries = slices.DeleteFunc(f.entries, func(x *entry) bool { return x.seq != 0 && !f.spool.Has(x.seq) })
	}
	f.entries = append(f.entries, e)
	// The bound covers frames held in memory too.
	for over := len(f.entries) - f.fo.QueueMax; over > 0; over-- {
		f.drop(f.entries[0])
		f.entries = f.entries[1:]
		dropped++
	}
	if dropped > 0 {
		f.dropped.Add(int64(dropped))
		if ok, held := f.logs.allow("queue full"); ok {
			f.log.Warn("queue full: dropped the oldest frames", "dropped", dropped, "max", f.fo.QueueMax, "similar_lines_held_back", held,
				"hint", "no decryptor confirms frames; check that one runs and has the key")
		}
	}
	if !f.titles[e.title] && len(f.titles) < maxTitles {
		f.titles[e.title] = true
		f.log.Info("forwarding meter", "meter", e.title, "topic", e.topic)
		go f.publishDescription(ctx)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// drop removes an entry's frame from the spool. Called with f.mu held.
func (f *Forwarder) drop(e *entry) {
	if e.seq == 0 {
		return
	}
	if err := f.spool.Remove(e.seq); err != nil {
		// Harmless but for the disk: after a restart the frame is sent
		// again and the decryptors settle it as a duplicate.
		if ok, _ := f.logs.allow("spool remove"); ok {
			f.log.Warn("cannot remove a settled frame from the queue", "err", err, "hint", "check free space and permissions of SMARTY_STATE_DIR")
		}
	}
}

// frame returns the bytes of an entry.
func (f *Forwarder) frame(e *entry) ([]byte, error) {
	if e.seq == 0 {
		return e.data, nil
	}
	return f.spool.Read(e.seq)
}

// connected publishes the description, subscribes to the decryptors'
// confirmations and announces the own device, after every
// (re)connection (part). What was sent and not yet settled goes again at
// once: the broker of the old connection (a cluster node that died, say)
// may never have passed it on.
func (f *Forwarder) connected(ctx context.Context) {
	f.publishDescription(ctx)
	if err := f.conn.subscribe(ctx, f.o.TopicPrefix+"/confirm/+"); err != nil {
		f.log.Warn("cannot subscribe to the decryptors' confirmations; frames stay queued", "err", err)
	}
	f.mu.Lock()
	for _, e := range f.entries {
		e.sentAt = time.Time{}
	}
	f.resendGap = f.fo.ResendAfter
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	// Last: it waits for the probe of the own device (switch.go).
	f.announceSelf(ctx)
}

// homeAssistantOnline announces the own device again (part).
func (f *Forwarder) homeAssistantOnline(ctx context.Context) { go f.announceSelf(ctx) }

func (f *Forwarder) publishDescription(ctx context.Context) {
	f.mu.Lock()
	titles := make([]string, 0, len(f.titles))
	for t := range f.titles {
		titles = append(titles, t)
	}
	f.mu.Unlock()
	sort.Strings(titles)
	seen := "none yet"
	if len(titles) > 0 {
		seen = strings.Join(titles, ", ")
	}
	text := fmt.Sprintf("smartybridge %s forwards the encrypted P1 frames read from %s, unchanged, to %s/raw/<SYSTEM-TITLE> (QoS 1). It holds no key; a decryptor (SMARTY_MODE=decrypt) turns them into Home Assistant sensors. Meters seen: %s.",
		f.o.Version, f.fo.Device, f.o.TopicPrefix, seen)
	if f.conn.up.Load() {
		if err := f.conn.publish(ctx, f.o.TopicPrefix+"/forwarder/"+f.o.MQTT.ClientID, []byte(text), 1, true); err != nil {
			f.log.Debug("description not published", "err", err)
		}
	}
}
