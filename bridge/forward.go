package bridge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
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
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/spool"
	"github.com/smartybridge/smartybridge/internal/statefile"
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
	o           Options
	fo          ForwardOptions
	log         *slog.Logger
	statusTopic string
	spool       *spool.Spool
	conn        *conn
	ready       chan struct{}
	wake        chan struct{}
	logs        *logLimiter
	pinFile     string

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

	// The instance's own device (report.go, switch.go).
	report     *reporter
	sw         *switcher
	connCtx    context.Context
	bytesIn    atomic.Int64
	skipped    atomic.Int64 // the reading loop's count of bytes in no frame
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
	if o.TopicPrefix == "" {
		o.TopicPrefix = "smarty"
	}
	if o.DiscoveryPrefix == "" {
		o.DiscoveryPrefix = "homeassistant"
	}
	if o.Discovery == "" {
		o.Discovery = discovery.DeviceStyle
	}
	if o.MeterTimeout <= 0 {
		o.MeterTimeout = time.Minute
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sp, err := spool.Open(filepath.Join(fo.StateDir, "queue"), fo.QueueMax)
	diskBad := err != nil
	if err != nil {
		log.Error("cannot keep the queue on disk; keeping frames in memory (lost if the forwarder stops)",
			"err", err, "hint", "set SMARTY_STATE_DIR to a writable directory")
		sp = spool.Broken(err)
	}
	f := &Forwarder{
		o: o, fo: fo, log: log, spool: sp, statusTopic: o.TopicPrefix + "/status/" + o.MQTT.ClientID,
		ready: make(chan struct{}), wake: make(chan struct{}, 1), titles: map[string]bool{}, pins: map[string]string{},
		lastAck: time.Now(), resendGap: fo.ResendAfter, logs: newLogLimiter(10*time.Minute, 20),
		pinFile: filepath.Join(fo.StateDir, "confirm-keys.json"), diskBad: diskBad,
	}
	f.sw = newSwitcher(o.DiscoveryPrefix, o.Discovery, log)
	f.sw.conn = func() *conn { return f.conn }
	f.sw.send = func(ctx context.Context, topic string, payload []byte) bool {
		return f.conn.publish(ctx, topic, payload, 1, true) == nil
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
func (f *Forwarder) Run(ctx context.Context, src io.Reader) error {
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	f.connCtx = connCtx
	f.startReport()
	// The own device is announced after its discovery topics were probed
	// (switch.go); registered before the first connection announces it.
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer func() { stopProbe(); f.sw.wait() }()
	f.sw.begin(probeCtx)
	startProbe := f.sw.add(discovery.BridgeNode(f.o.MQTT.ClientID))
	c, err := dial(connCtx, f.o.MQTT, connectOptions{
		statusTopic: f.statusTopic,
		onUp: func() {
			f.report.again()
			go f.connected(connCtx)
		},
		onMessage: f.message,
		maxPacket: maxConfirmLen + 1024,
	}, f.log)
	if err != nil {
		return err
	}
	f.conn = c
	close(f.ready)
	startProbe()

	loopCtx, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { f.sender(loopCtx) })
	wg.Go(func() { f.report.run(loopCtx) })
	err = f.read(ctx, src)
	stopLoops()
	wg.Wait()

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.up.Load() {
		if err := c.publish(sctx, f.statusTopic, []byte("offline"), 1, true); err != nil {
			f.log.Debug("offline not published; the broker sends the Last Will", "err", err)
		}
	}
	c.close(sctx)
	fw, cf, dr := f.Stats()
	f.log.Info("stopped", "forwarded", fw, "confirmed", cf, "rejected", f.rejected.Load(), "dropped", dr, "queued", f.Queued())
	return err
}

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

// connected publishes status and description and subscribes to the
// decryptors' confirmations, after every (re)connection.
func (f *Forwarder) connected(ctx context.Context) {
	<-f.ready
	if err := f.conn.publish(ctx, f.statusTopic, []byte("online"), 1, true); err != nil {
		f.log.Debug("status not published", "err", err)
	}
	f.publishDescription(ctx)
	if err := f.conn.subscribe(ctx, f.o.TopicPrefix+"/confirm/+"); err != nil {
		f.log.Warn("cannot subscribe to the decryptors' confirmations; frames stay queued", "err", err)
	}
	if f.o.Discovery != discovery.Off {
		if err := f.conn.subscribe(ctx, f.o.DiscoveryPrefix+"/status"); err != nil {
			f.log.Warn("cannot subscribe to Home Assistant's status; discovery is still sent on every connection", "err", err)
		}
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
	// Last: it waits for the probe of the own device (switch.go).
	f.announceSelf(ctx)
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
		if err := f.conn.publish(ctx, f.o.TopicPrefix+"/forwarder/"+f.o.MQTT.ClientID, []byte(text), 1, true); err != nil {
			f.log.Debug("description not published", "err", err)
		}
	}
}

// message takes a decryptor's confirmation: the frames it names are
// settled, if it is signed with the key trusted for the meter.
func (f *Forwarder) message(topic string, payload []byte) {
	if f.sw.message(topic, payload) {
		return
	}
	if topic == f.o.DiscoveryPrefix+"/status" {
		if string(payload) == "online" {
			f.log.Info("Home Assistant came online; sending discovery again")
			go f.announceSelf(f.connCtx)
		}
		return
	}
	title, ok := strings.CutPrefix(topic, f.o.TopicPrefix+"/confirm/")
	if !ok {
		return
	}
	c, pub, err := parseConfirmation(title, payload)
	f.mu.Lock()
	defer f.mu.Unlock()
	ok = err == nil && f.trusted(title, pub, c)
	if !ok && err == nil && f.fo.ConfirmKey == nil && f.pins[title] == "" {
		// A meter no decryptor confirmed yet, and nothing here to check
		// this key against: wait for one that names a frame as published.
		f.log.Debug("confirmation of a meter without trusted key yet; waiting for one that confirms a frame", "meter", title)
		return
	}
	if !ok {
		f.forged.Add(1)
		if ok, held := f.logs.allow("forged " + title); ok {
			f.log.Warn("ignored a confirmation not signed with the key trusted for this meter", "meter", title, "similar_lines_held_back", held,
				"hint", "another client publishes on "+topic+" (restrict it with the broker's ACL), or the meter key changed: then set SMARTY_CONFIRM_KEY to the confirm_key the decryptors log, or delete "+f.pinFile)
		}
		return
	}
	verdicts := map[string]string{}
	for _, s := range c.Settled {
		id, v, _ := strings.Cut(s, ":")
		verdicts[id] = v
	}
	published, rejected := 0, 0
	f.entries = slices.DeleteFunc(f.entries, func(e *entry) bool {
		v, hit := verdicts[e.id]
		if !hit || e.plain || e.title != title {
			return false
		}
		f.drop(e)
		if v == verdictOK {
			published++
		} else {
			rejected++
			if ok, held := f.logs.allow("rejected " + title + v); ok {
				f.log.Warn("a decryptor rejected a frame of this meter; dropped it, the next ones follow", "meter", title, "verdict", verdictText(v),
					"similar_lines_held_back", held)
			}
		}
		return true
	})
	if published+rejected == 0 {
		return
	}
	if published > 0 {
		f.pin(title, pub)
	}
	f.nConfirmed.Add(int64(published))
	f.rejected.Add(int64(rejected))
	f.lastAck, f.resendGap = time.Now(), f.fo.ResendAfter
	select {
	case f.wake <- struct{}{}: // the next frame of the meter may go
	default:
	}
	if f.stuck {
		f.stuck = false
		f.log.Info("a decryptor confirms frames again", "meter", title, "queued", len(f.entries))
	}
}

func verdictText(v string) string {
	switch v {
	case verdictDup:
		return "duplicate (its counter did not grow)"
	case verdictAuth:
		return "failed authentication (damaged on the line, or the decryptor has the wrong key)"
	case verdictBad:
		return "no valid telegram inside (damaged on the line)"
	}
	return v
}

// trusted decides whether pub may settle frames of title: the configured
// key, else the key pinned for the meter; a meter without pin trusts a key
// on a confirmation that names one of the frames held here as published.
// Called with f.mu held.
func (f *Forwarder) trusted(title string, pub ed25519.PublicKey, c *confirmation) bool {
	if f.fo.ConfirmKey != nil {
		return pub.Equal(f.fo.ConfirmKey)
	}
	if pinned, ok := f.pins[title]; ok {
		return pinned == hex.EncodeToString(pub)
	}
	for _, s := range c.Settled {
		id, v, _ := strings.Cut(s, ":")
		if v != verdictOK {
			continue
		}
		for _, e := range f.entries {
			if e.id == id && e.title == title {
				return true
			}
		}
	}
	return false
}

// pin records that a decryptor confirmed a frame of title as published
// with pub: the meter is real, and pub is its key from now on. Called
// with f.mu held.
func (f *Forwarder) pin(title string, pub ed25519.PublicKey) {
	if _, ok := f.pins[title]; ok || len(f.pins) >= maxTitles {
		return
	}
	hexPub := hex.EncodeToString(pub)
	f.pins[title] = hexPub
	if t, err := decrypt.ParseTitle(title); err == nil {
		f.fresh = append(f.fresh, t)
	}
	f.savePins()
	if f.fo.ConfirmKey == nil {
		f.log.Info("trusting the decryptors' confirmation key for this meter from now on", "meter", title, "confirm_key", hexPub,
			"hint", "set SMARTY_CONFIRM_KEY to it to trust only this key from the start")
	}
}

// loadPins reads the keys pinned by an earlier run. A file that cannot be
// read is set aside: the forwarder then trusts, for each meter, the first
// key that confirms one of its frames again, as on its first start.
func (f *Forwarder) loadPins() {
	pins := map[string]string{}
	if aside, err := statefile.ReadJSON(f.pinFile, &pins); err != nil {
		f.log.Warn("pinned confirmation keys unreadable; starting afresh: the first decryptor key that confirms a frame of a meter is trusted again",
			"file", f.pinFile, "set_aside", aside, "err", err,
			"hint", "set SMARTY_CONFIRM_KEY to the confirm_key the decryptors log, to trust only that key")
		return
	}
	for t, p := range pins {
		if len(f.pins) < maxTitles {
			f.pins[t] = p
		}
	}
}

// savePins writes the pinned keys. A forwarder that cannot keep them
// trusts the next key after a restart, so a failure is said (once per
// pin; pins are few). Called with f.mu held.
func (f *Forwarder) savePins() {
	b, err := json.Marshal(f.pins)
	if err == nil {
		err = statefile.Write(f.pinFile, b, 0o600)
	}
	if err != nil {
		f.log.Warn("cannot save the pinned confirmation key; after a restart the first key that confirms a frame is trusted again",
			"file", f.pinFile, "err", err, "hint", "free space or fix permissions in SMARTY_STATE_DIR, or set SMARTY_CONFIRM_KEY")
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
		f.expire()
		if f.conn.up.Load() {
			f.sendDue(ctx)
		}
		f.checkStuck()
	}
}

// expire drops the frames of meters that no decryptor ever confirmed once
// they are older than UnconfirmedTTL: line noise shaped like a header, or
// a meter whose key no decryptor has.
func (f *Forwarder) expire() {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	f.entries = slices.DeleteFunc(f.entries, func(e *entry) bool {
		if e.plain || now.Sub(e.queuedAt) < f.fo.UnconfirmedTTL {
			return false
		}
		if _, confirmed := f.pins[e.title]; confirmed {
			return false
		}
		f.drop(e)
		n++
		return true
	})
	if n > 0 {
		f.dropped.Add(int64(n))
		if ok, held := f.logs.allow("expired"); ok {
			f.log.Warn("dropped frames of meters that no decryptor confirmed in time", "frames", n, "after", f.fo.UnconfirmedTTL,
				"similar_lines_held_back", held, "hint", "line noise, or no decryptor holds the key of that meter")
		}
	}
}

// sendDue sends, per meter, the oldest frame no decryptor has settled yet
// (again, once ResendAfter has passed), and the next one only after that
// one is settled. One frame in flight per meter keeps the order: were
// frame n lost by the broker after n+1 was accepted, n would be refused as
// a replay when re-sent.
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
		// A meter no decryptor has confirmed yet gets no answer for a
		// frame that does not authenticate (a frame cut short, a false
		// header): after ResendAfter its next frame goes too, or the
		// damaged one would hold the meter's every frame for
		// UnconfirmedTTL (issue 20).
		if !(e.sent && now.Sub(e.firstSent) >= f.fo.ResendAfter && f.pins[e.title] == "") {
			inFlight[e.title] = true
		}
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
		f.mu.Lock()
		held := slices.Contains(f.entries, e)
		f.mu.Unlock()
		if !held {
			continue
		}
		b, err := f.frame(e)
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
		f.log.Debug("forwarded", "topic", e.topic, "bytes", len(b), "id", e.id)
		f.mu.Lock()
		if !e.sent {
			e.firstSent = time.Now()
		}
		e.sent, e.sentAt = true, time.Now()
		if e.plain {
			f.drop(e)
			f.entries = slices.DeleteFunc(f.entries, func(x *entry) bool { return x == e })
		}
		f.mu.Unlock()
	}
}

// unconfirmedLocked counts the frames sent and not yet settled (a sent
// plain telegram leaves the queue at once). Called with f.mu held.
func (f *Forwarder) unconfirmedLocked() int {
	n := 0
	for _, e := range f.entries {
		if e.sent {
			n++
		}
	}
	return n
}

// checkStuck says once when no decryptor has confirmed anything for a while.
func (f *Forwarder) checkStuck() {
	f.mu.Lock()
	defer f.mu.Unlock()
	waiting := f.unconfirmedLocked()
	if waiting == 0 || f.stuck || time.Since(f.lastAck) < f.fo.StuckAfter {
		return
	}
	f.stuck = true
	f.log.Warn("no decryptor has confirmed frames for a while; keeping them queued and re-sending",
		"for", time.Since(f.lastAck).Round(time.Second), "queued", len(f.entries), "max", f.fo.QueueMax,
		"hint", "start a decryptor (SMARTY_MODE=decrypt) on the same broker and topic prefix, with the meter's key")
}
