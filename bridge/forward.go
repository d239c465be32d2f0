package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/spool"
	"github.com/smartybridge/smartybridge/p1"
)

// Split mode, meter side.
//
// A forwarder reads the port like the bridge, holds no key, and publishes
// every intact frame unchanged:
//
//	<prefix>/raw/<SYSTEM-TITLE>   the frame's bytes, QoS 1, not retained
//	<prefix>/raw/<HEADER-ID>      a plain DSMR telegram, by its identification line
//
// Every frame first goes to a queue on disk (the spool), and leaves it only
// when a decryptor confirms it through <prefix>/counter/<SYSTEM-TITLE>: the
// broker's acknowledgement is not enough, since a broker restart can drop
// frames before the decryptors subscribe again (mosquitto 2.0 does not
// restore shared subscriptions). Unconfirmed frames are re-sent, in order,
// after ResendAfter, one frame in flight per meter so that they arrive in
// order; duplicates are harmless because decryptors drop frames whose
// counter does not grow. Plain telegrams carry no counter and leave
// the queue once the broker has them.

// ForwardOptions configure forward mode.
type ForwardOptions struct {
	Device      string        // named in the forwarder's description
	StateDir    string        // the queue lives in <StateDir>/queue
	QueueMax    int           // frames kept at most; the oldest go first. Default 10000
	ResendAfter time.Duration // re-send what no decryptor confirmed. Default 10 s
	// StuckAfter: warn when no decryptor confirmed anything for this long.
	// Default 60 s.
	StuckAfter time.Duration
}

type entry struct {
	seq     uint64
	topic   string
	title   string
	counter uint32
	plain   bool
	sent    bool
	sentAt  time.Time
}

// Forwarder is forward mode.
type Forwarder struct {
	o           Options
	fo          ForwardOptions
	log         *slog.Logger
	statusTopic string
	spool       *spool.Spool
	conn        *conn
	ready       chan struct{}
	wake        chan struct{}

	mu      sync.Mutex
	entries []*entry
	titles  map[string]bool
	// confirmed: titles a decryptor confirmed, so real meters; fresh holds
	// those the reading loop has not told its scanner yet.
	confirmed map[string]bool
	fresh     [][8]byte
	lastAck   time.Time
	resendGap time.Duration
	stuck     bool

	forwarded, nConfirmed, dropped atomic.Int64
}

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
	if o.TopicPrefix == "" {
		o.TopicPrefix = "smarty"
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sp, err := spool.Open(filepath.Join(fo.StateDir, "queue"), fo.QueueMax)
	if err != nil {
		return nil, fmt.Errorf("%w (set SMARTY_STATE_DIR to a writable directory)", err)
	}
	f := &Forwarder{
		o: o, fo: fo, log: log, spool: sp, statusTopic: o.TopicPrefix + "/status/" + o.MQTT.ClientID,
		ready: make(chan struct{}), wake: make(chan struct{}, 1), titles: map[string]bool{}, confirmed: map[string]bool{},
		lastAck: time.Now(), resendGap: fo.ResendAfter,
	}
	for _, seq := range sp.Seqs() {
		b, err := sp.Read(seq)
		if err != nil {
			continue
		}
		if e := f.describe(seq, b); e != nil {
			f.entries = append(f.entries, e)
		} else {
			sp.Remove(seq)
		}
	}
	if n := len(f.entries); n > 0 {
		log.Info("frames queued from the last run will be sent", "frames", n)
	}
	return f, nil
}

// Stats: frames published to the broker, confirmed by a decryptor, and
// dropped because the queue was full.
func (f *Forwarder) Stats() (forwarded, confirmed, dropped int64) {
	return f.forwarded.Load(), f.nConfirmed.Load(), f.dropped.Load()
}

// Queued returns how many frames wait for confirmation.
func (f *Forwarder) Queued() int { return f.spool.Len() }

// describe makes the queue entry for a frame.
func (f *Forwarder) describe(seq uint64, frame []byte) *entry {
	if len(frame) > 0 && frame[0] == '/' {
		line := frame[1:]
		if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
			line = line[:i]
		}
		id := TopicSafe(string(line))
		return &entry{seq: seq, topic: f.o.TopicPrefix + "/raw/" + id, title: id, plain: true}
	}
	h, err := decrypt.ParseHeader(frame)
	if err != nil {
		return nil
	}
	t := h.Title.String()
	return &entry{seq: seq, topic: f.o.TopicPrefix + "/raw/" + t, title: t, counter: h.Counter}
}

// Run forwards what src delivers until ctx is done or src ends.
func (f *Forwarder) Run(ctx context.Context, src io.Reader) error {
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	c, err := dial(connCtx, f.o.MQTT, connectOptions{
		statusTopic: f.statusTopic,
		onUp:        func() { go f.connected(connCtx) },
		onMessage:   f.message,
	}, f.log)
	if err != nil {
		return err
	}
	f.conn = c
	close(f.ready)

	loopCtx, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { f.sender(loopCtx) })
	err = f.read(ctx, src)
	stopLoops()
	wg.Wait()

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.up.Load() {
		c.publish(sctx, f.statusTopic, []byte("offline"), 1, true)
	}
	c.close(sctx)
	fw, cf, dr := f.Stats()
	f.log.Info("stopped", "forwarded", fw, "confirmed", cf, "dropped", dr, "queued", f.spool.Len())
	return err
}

// read queues every frame of src.
func (f *Forwarder) read(ctx context.Context, src io.Reader) error {
	var n atomic.Int64
	sc := p1.NewScanner(countingReader{ctx, src, &n})
	known := map[[8]byte]bool{}
	for sc.Scan() {
		frame := sc.Frame()
		// The forwarder cannot authenticate: a frame of a meter no
		// decryptor has confirmed may be line noise shaped like a header
		// whose declared span swallowed the real frame. Forward it, and
		// search its bytes again.
		f.mu.Lock()
		for _, t := range f.fresh {
			known[t] = true
			sc.Know(t)
		}
		f.fresh = f.fresh[:0]
		f.mu.Unlock()
		if sc.Kind() == p1.Encrypted && len(frame) >= 10 && !known[[8]byte(frame[2:10])] {
			sc.Overlap()
		}
		seq, dropped, err := f.spool.Append(frame)
		if err != nil {
			f.log.Error("cannot queue a frame; forwarding it without a copy on disk is not possible", "err", err)
			continue
		}
		if dropped > 0 {
			f.dropped.Add(int64(dropped))
			f.log.Warn("queue full: dropped the oldest frames", "dropped", dropped, "max", f.fo.QueueMax, "hint", "no decryptor confirms frames; check that one runs and has the key")
		}
		e := f.describe(seq, frame)
		if e == nil {
			f.spool.Remove(seq)
			continue
		}
		f.mu.Lock()
		if dropped > 0 {
			f.entries = slices.DeleteFunc(f.entries, func(x *entry) bool { return !f.spool.Has(x.seq) })
		}
		f.entries = append(f.entries, e)
		if !f.titles[e.title] {
			f.titles[e.title] = true
			f.log.Info("forwarding meter", "meter", e.title, "topic", e.topic)
			go f.publishDescription(ctx)
		}
		f.mu.Unlock()
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("read meter: %w", err)
	}
	return nil
}

// connected publishes status and description and subscribes to the
// decryptors' confirmations, after every (re)connection.
func (f *Forwarder) connected(ctx context.Context) {
	<-f.ready
	f.conn.publish(ctx, f.statusTopic, []byte("online"), 1, true)
	f.publishDescription(ctx)
	if err := f.conn.subscribe(ctx, f.o.TopicPrefix+"/counter/+"); err != nil {
		f.log.Warn("cannot subscribe to the decryptors' confirmations; frames stay queued", "err", err)
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

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
		f.conn.publish(ctx, f.o.TopicPrefix+"/forwarder/"+f.o.MQTT.ClientID, []byte(text), 1, true)
	}
}

// message takes a decryptor's confirmation: every frame of that meter up
// to the counter is done.
func (f *Forwarder) message(topic string, payload []byte) {
	title, ok := strings.CutPrefix(topic, f.o.TopicPrefix+"/counter/")
	if !ok {
		return
	}
	var st replayState
	if json.Unmarshal(payload, &st) != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	f.entries = slices.DeleteFunc(f.entries, func(e *entry) bool {
		if e.plain || e.title != title || e.counter > st.Counter {
			return false
		}
		f.spool.Remove(e.seq)
		n++
		return true
	})
	if n == 0 {
		return
	}
	f.nConfirmed.Add(int64(n))
	f.lastAck, f.resendGap = time.Now(), f.fo.ResendAfter
	if !f.confirmed[title] {
		if t, err := decrypt.ParseTitle(title); err == nil {
			f.confirmed[title] = true
			f.fresh = append(f.fresh, t)
		}
	}
	select {
	case f.wake <- struct{}{}: // the next frame of the meter may go
	default:
	}
	if f.stuck {
		f.stuck = false
		f.log.Info("a decryptor confirms frames again", "meter", title, "queued", len(f.entries))
	}
}

// sender publishes new frames and re-sends unconfirmed ones, in order.
func (f *Forwarder) sender(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-t.C:
		}
		if f.conn.up.Load() {
			f.sendDue(ctx)
		}
		f.checkStuck()
	}
}

// sendDue sends, per meter, the oldest frame no decryptor has confirmed
// yet (again, once ResendAfter has passed), and the next one only after
// that one's confirmation. One frame in flight per meter keeps the order:
// were frame n lost by the broker after n+1 was accepted, n would be
// refused as a replay when re-sent.
func (f *Forwarder) sendDue(ctx context.Context) {
	now := time.Now()
	f.mu.Lock()
	var due []*entry
	resent := false
	inFlight := map[string]bool{}
	for _, e := range f.entries {
		if e.plain {
			if !e.sent {
				due = append(due, e)
			}
			continue
		}
		if inFlight[e.title] {
			continue
		}
		inFlight[e.title] = true
		if !e.sent || now.Sub(e.sentAt) >= f.resendGap {
			due = append(due, e)
			resent = resent || e.sent
		}
	}
	if resent {
		// No confirmation since the last round: back off, up to 5 minutes.
		f.resendGap = min(2*f.resendGap, 5*time.Minute)
	}
	f.mu.Unlock()
	for _, e := range due {
		if !f.spool.Has(e.seq) {
			continue
		}
		b, err := f.spool.Read(e.seq)
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = f.conn.publish(pctx, e.topic, b, 1, false)
		cancel()
		if err != nil {
			f.log.Debug("frame not forwarded yet", "topic", e.topic, "err", err)
			return
		}
		f.forwarded.Add(1)
		f.mu.Lock()
		e.sent, e.sentAt = true, time.Now()
		if e.plain {
			f.spool.Remove(e.seq)
			f.entries = slices.DeleteFunc(f.entries, func(x *entry) bool { return x == e })
		}
		f.mu.Unlock()
	}
}

// checkStuck says once when no decryptor has confirmed anything for a while.
func (f *Forwarder) checkStuck() {
	f.mu.Lock()
	defer f.mu.Unlock()
	waiting := 0
	for _, e := range f.entries {
		if e.sent {
			waiting++
		}
	}
	if waiting == 0 || f.stuck || time.Since(f.lastAck) < f.fo.StuckAfter {
		return
	}
	f.stuck = true
	f.log.Warn("no decryptor has confirmed frames for a while; keeping them queued and re-sending",
		"for", time.Since(f.lastAck).Round(time.Second), "queued", len(f.entries), "max", f.fo.QueueMax,
		"hint", "start a decryptor (SMARTY_MODE=decrypt) on the same broker and topic prefix, with the meter's key")
}
