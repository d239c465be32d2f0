package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/p1"
)

// Options configure a Bridge.
type Options struct {
	MQTT            MQTTOptions
	Keys            decrypt.Options
	TopicPrefix     string          // state topics: <prefix>/<meter>/<OBIS>
	DiscoveryPrefix string          // Home Assistant's, usually "homeassistant"
	Discovery       discovery.Style // device, entity or off
	// MeterTimeout marks a meter offline when no valid telegram came for
	// this long. Default 60 s.
	MeterTimeout time.Duration
	// NoFrameWarning: bytes arrive but no telegram decodes for this long,
	// warn once. Default 60 s.
	NoFrameWarning time.Duration
	Version        string
	SupportURL     string
	// StateDir keeps the last frame counter of every meter across
	// restarts (replay protection); "" keeps it in memory only.
	StateDir string
	// SaveEvery: the frame counters are written when they changed, at
	// most this often, and at a clean stop. Default 5 min (saver).
	SaveEvery time.Duration
	// Log receives the bridge's messages; nil discards them.
	Log *slog.Logger
	// OnTelegram, if set, sees every telegram after its states were
	// written to the broker connection, in the reading goroutine (the demo
	// prints a line from it).
	OnTelegram func(meter string, tg *p1.Telegram)
}

// Stats counts what a Bridge did. Read it with Bridge.Stats.
type Stats struct {
	Telegrams int64 // telegrams decoded and published
	States    int64 // state messages published
	Dropped   int64 // messages not published because the broker was away
	// Rejected frames by reason; Replayed counts frames whose counter
	// did not grow (a replay, or in decrypt mode a duplicate).
	Rejected      telegrams.Counts
	Decreasing    int64 // totals not published: they went down, or a plain meter's grew implausibly (totals.go)
	Announcements int64 // discovery messages published
	Quiet         int64 // spells of bytes without a valid telegram (NoFrameWarning)
	// Bridge mode: telegrams sent again because the broker had not taken
	// them (it was away, or the connection died), and telegrams given up
	// because it stayed away longer than the hold keeps them (hold.go).
	Resent int64
	Lost   int64
}

type counters struct {
	telegrams, states, dropped, decreasing, announcements, quiet, resent, lost atomic.Int64
	rejected                                                                   [len(telegrams.Counts{})]atomic.Int64
}

// Bridge reads frames, decodes them and publishes Home Assistant discovery,
// states and availability.
type Bridge struct {
	o           Options
	log         *slog.Logger
	dec         *telegrams.Decoder
	statusTopic string
	conn        *conn
	pub         publisher

	mu     sync.Mutex
	meters map[string]*meter

	announce chan struct{}
	ready    chan struct{}             // closed once conn is set
	connGen  atomic.Int64              // counts connections
	split    atomic.Pointer[decryptor] // decrypt mode only
	bytesIn  atomic.Int64
	skipped  atomic.Int64 // the reading loop's count of bytes in no frame
	counts   counters
	book     *replayBook
	// saveState: how saving the book went (saveBook).
	saveState struct {
		failures int
		warned   time.Time
	}
	keyID func(decrypt.Title) string
	logs  *logLimiter

	// Reading goroutine only.
	streak   map[telegrams.Reason]int
	lastRaw  []byte
	lastID   string
	stateBuf []byte
	packets  []byte // QoS 0 packets of one telegram
	pending  []int  // objects of one telegram to publish
	// Telegrams the broker has not confirmed (hold.go); lastWrite names
	// the PINGREQ that closed the last batch (0: none written).
	held       holdRing
	redec      *telegrams.Decoder
	lastWrite  struct{ gen, ping int64 }
	warnedLost bool
	holdBack   bool // older telegrams wait: hold this one too

	// The instance's own device (report.go): nil until Run or RunDecrypt.
	report     *reporter
	selfDirty  atomic.Bool // its discovery must be (re)published
	lastReject atomic.Pointer[rejection]
	sw         *switcher // discovery of another style (switch.go)

	// Shared with the watchdog.
	lastValid   atomic.Int64  // unix nanoseconds of the last telegram
	lastReason  atomic.Uint32 // telegrams.Reason: why the last frame was rejected
	warnedQuiet atomic.Bool
}

// meter is what the bridge knows of one meter.
type meter struct {
	id      string
	device  discovery.Device
	sensors []discovery.Sensor
	known   map[p1.OBIS]int // index into sensors
	dirty   bool            // discovery must be (re)published
	// announcedGen is the connection on which discovery last went out.
	announcedGen int64
	online       bool
	avail        bool // availability must be (re)published
	seen         time.Time
	telegrams    int64

	// Reading goroutine only.
	topics    map[p1.OBIS]string
	authentic bool // its telegrams authenticate (encrypted)
	last      map[p1.OBIS]float64
	lastAt    map[p1.OBIS]time.Time
	down      map[p1.OBIS]downStreak // totals.go
	texts     map[p1.OBIS]string     // the whole text of each message, as last published
	textsGen  int64                  // the connection they went out on
}

// New checks the options and prepares a Bridge.
func New(o Options) (*Bridge, error) {
	if o.MeterTimeout <= 0 {
		o.MeterTimeout = 60 * time.Second
	}
	if o.NoFrameWarning <= 0 {
		o.NoFrameWarning = 60 * time.Second
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = saveEvery
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
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dec, err := telegrams.NewDecoder(o.Keys)
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		o: o, log: log, dec: dec,
		statusTopic: o.TopicPrefix + "/status/" + o.MQTT.ClientID,
		meters:      map[string]*meter{},
		announce:    make(chan struct{}, 1),
		ready:       make(chan struct{}),
		streak:      map[telegrams.Reason]int{},
		book:        newReplayBook(o.StateDir),
		keyID:       keyIDs(o.Keys),
		logs:        newLogLimiter(10*time.Minute, 20),
		sw:          newSwitcher(o.DiscoveryPrefix, o.Discovery, log),
	}
	b.sw.conn = func() *conn { return b.conn }
	b.sw.send = func(ctx context.Context, topic string, payload []byte) bool { return b.send(ctx, topic, payload, 1) }
	b.sw.trigger = b.trigger
	return b, nil
}

// StatusTopic is this instance's availability topic.
func (b *Bridge) StatusTopic() string { return b.statusTopic }

// Stats returns the counters so far.
func (b *Bridge) Stats() Stats {
	c := &b.counts
	s := Stats{
		Telegrams: c.telegrams.Load(), States: c.states.Load(), Dropped: c.dropped.Load(),
		Decreasing: c.decreasing.Load(), Announcements: c.announcements.Load(), Quiet: c.quiet.Load(),
		Resent: c.resent.Load(), Lost: c.lost.Load(),
	}
	for i := range c.rejected {
		s.Rejected[i] = c.rejected[i].Load()
	}
	return s
}

// Run connects to the broker and publishes what src delivers until ctx is
// done or src ends (a capture file). On the way out it publishes "offline"
// and disconnects cleanly.
func (b *Bridge) Run(ctx context.Context, src io.Reader) error {
	b.book.load(b.log)
	// A port (serial or TCP) says it is live: see run.
	lp, ok := src.(interface{ Live() bool })
	live := ok && lp.Live()
	b.startReport(discovery.ModeBridge)
	return b.run(ctx, connectOptions{maxPacket: maxRawPacket}, live, func(ctx context.Context) error {
		var wg sync.WaitGroup
		sctx, stop := context.WithCancel(ctx)
		wg.Go(func() { b.saver(sctx) })
		err := b.read(ctx, src)
		stop()
		wg.Wait()
		b.saveBook() // a last time
		return err
	})
}

// run connects, starts the background loops, runs body until it returns,
// then shuts down cleanly.
func (b *Bridge) run(ctx context.Context, co connectOptions, live bool, body func(context.Context) error) error {
	// The connection outlives ctx so that "offline" can still be sent.
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	co.statusTopic = b.statusTopic
	co.onUp = func() {
		b.connGen.Add(1)
		if b.report != nil {
			b.report.again()
		}
		go b.connected(connCtx)
	}
	co.onMessage = b.message
	c, err := dial(connCtx, b.o.MQTT, co, b.log)
	if err != nil {
		return err
	}
	b.conn, b.pub = c, c
	close(b.ready)

	loopCtx, stopLoops := context.WithCancel(ctx)
	b.sw.begin(loopCtx)
	var wg sync.WaitGroup
	wg.Go(func() { b.announcer(loopCtx) })
	wg.Go(func() { b.watchdog(loopCtx) })
	if b.report != nil {
		b.selfDirty.Store(true)
		b.sw.probeNode(discovery.BridgeNode(b.o.MQTT.ClientID))
		wg.Go(func() { b.report.run(loopCtx) })
	}

	// A live port is read at once, broker or not, so that its trouble (a
	// permission, a wrong device) is logged while the broker is away too;
	// a capture waits for the broker a while, or its telegrams would be
	// read before anything can take them.
	if live {
		wg.Go(func() {
			if !c.awaitConnection(loopCtx, 10*time.Second) && loopCtx.Err() == nil {
				b.log.Warn("MQTT broker not reachable yet; reading the meter and retrying in the background", "broker", c.url)
			}
		})
	} else if !c.awaitConnection(ctx, 10*time.Second) && ctx.Err() == nil {
		b.log.Warn("MQTT broker not reachable yet; going on and retrying in the background", "broker", c.url)
	}
	err = body(ctx)
	stopLoops()
	wg.Wait()
	b.sw.wait()
	b.shutdown()
	return err
}

// read is the reading loop: frames in, states out.
func (b *Bridge) read(ctx context.Context, src io.Reader) error {
	var rd *telegrams.Reader
	// Held telegrams go out as soon as the broker is back, even while the
	// port is silent.
	rd, err := telegrams.NewReader(hookedReader{countingReader{ctx, src, &b.bytesIn}, func() {
		b.skipped.Store(int64(rd.Stats().Skipped))
		b.flushHeld(ctx)
	}}, b.o.Keys)
	if err != nil {
		return err
	}
	// A live port is read before the broker answers (run); the first
	// telegrams wait for it a little, so that none is lost at start.
	holdUntil := time.Now().Add(10 * time.Second)
	for {
		f, err := rd.Next()
		if fe, ok := telegrams.AsFrameError(err); ok {
			b.rejected(fe.Err, fe.Reason, fe.Origin)
			continue
		}
		if err != nil {
			b.skipped.Store(int64(rd.Stats().Skipped))
			b.drainHeld(ctx)
			if err == io.EOF || errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("read meter: %w", err)
		}
		if b.connGen.Load() == 0 && time.Now().Before(holdUntil) {
			b.conn.awaitConnection(ctx, time.Until(holdUntil))
		}
		tg, from := f.Telegram, f.Origin
		if from.Encrypted {
			// Replay protection: a TCP source or a capture can be replayed.
			title, kid := decrypt.Title(from.SystemTitle).String(), b.keyID(from.SystemTitle)
			at, _ := tg.Time()
			if !b.replayGuard(title, kid, from.FrameCounter, at) {
				b.counts.rejected[telegrams.Replayed].Add(1)
				continue
			}
			b.book.commit(title, kid, from.FrameCounter, b.meterID(tg, from), at)
		}
		b.deliver(ctx, f)
	}
}

// replayGuard decides whether an authentic frame of title with counter,
// whose telegram the meter stamped at, is new: its counter grew and it is
// not of a sequence from before the meter's counter restarted, or it
// completes the proof of such a restart (replay.go). It says so at WARN,
// a limited number of times.
func (b *Bridge) replayGuard(title, kid string, counter uint32, at time.Time) bool {
	last, _ := b.book.last(title)
	if b.book.fresh(title, kid, counter) {
		if !b.book.earlierSequence(title, kid, at) {
			return true
		}
	} else if ok, n := b.book.restarted(title, kid, counter, at); ok {
		b.log.Warn("the meter restarted its frame counter (a firmware update or a reset?): following the new counter", "meter", title,
			"counter", counter, "was", last.Counter, "frames", n)
		return true
	} else if n > 0 {
		if ok, _ := b.logs.allow("restart " + title); ok {
			b.log.Warn(fmt.Sprintf("the meter's frame counter went back while its clock went on; following it after %d such frames in a row", restartAfter),
				"meter", title, "counter", counter, "was", last.Counter)
		}
		return false
	}
	if ok, held := b.logs.allow("replay " + title); ok {
		b.log.Warn("a frame whose counter did not grow was dropped: the meter sent it before the last one accepted (a replayed or repeated stream?)", "meter", title,
			"counter", counter, "last", last.Counter, "similar_lines_held_back", held)
	}
	return false
}

// deliver publishes a telegram of the port after those still held, and
// holds it until the broker confirms it (hold.go).
func (b *Bridge) deliver(ctx context.Context, f *telegrams.Frame) {
	// Never ahead of an older telegram: Home Assistant would keep its
	// states as the latest.
	b.holdBack = !b.flushHeld(ctx)
	ok := b.handle(ctx, f.Telegram, f.Origin)
	b.holdBack = false
	if ok && b.lastWrite.ping == 0 {
		return // published through paho (a test's publisher): nothing to confirm
	}
	b.keep(f.Kind, f.Bytes, b.lastWrite.gen, b.lastWrite.ping)
}

// countingReader counts the bytes it passes on and stops at ctx's end:
// the scanner keeps reading through silence, so the loop would not see ctx.
type countingReader struct {
	ctx context.Context
	r   io.Reader
	n   *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// handle publishes one telegram; it reports whether the broker connection
// took every state.
func (b *Bridge) handle(ctx context.Context, tg *p1.Telegram, from p1.Origin) bool {
	id := b.meterID(tg, from)
	now := time.Now()
	b.lastValid.Store(now.UnixNano())
	b.warnedQuiet.Store(false)
	clear(b.streak)

	b.mu.Lock()
	m := b.meters[id]
	if m == nil {
		m = &meter{id: id, device: discovery.Device{ID: id, Header: string(tg.Header)}, known: map[p1.OBIS]int{},
			topics: map[p1.OBIS]string{}, last: map[p1.OBIS]float64{}, lastAt: map[p1.OBIS]time.Time{}, down: map[p1.OBIS]downStreak{},
			texts: map[p1.OBIS]string{}, authentic: from.Encrypted}
		b.meters[id] = m
		b.log.Info("reading meter", "meter", id, "header", string(tg.Header))
		defer b.sw.add(id)() // registered now, started after b.mu is released
	}
	if m.learn(tg) {
		m.dirty = true
		b.trigger()
	}
	wasOnline := m.online
	m.online, m.seen = true, now
	m.telegrams++
	b.mu.Unlock()

	if b.implausible(m, tg, now) {
		b.lastWrite.gen, b.lastWrite.ping = 0, 0
		return true // dropped: nothing to send again
	}
	ok := b.publishStates(ctx, m, id, tg, !wasOnline, false)
	b.counts.telegrams.Add(1)
	if ok && b.o.OnTelegram != nil {
		b.o.OnTelegram(id, tg)
	}
	return ok
}

// AppendState appends the state payload of o: the plain value, RFC 3339
// for timestamps, decoded text for identifiers and messages, as Home
// Assistant keeps it: an empty text is one space (an empty retained
// payload would delete the state; discovery trims it back to empty), and
// a text is cut at discovery.MaxState characters (Home Assistant drops
// longer states; AppendFullText carries the whole).
func AppendState(dst []byte, o *p1.Object) []byte {
	if v := o.Reading(); !o.OBIS.HexText() {
		switch {
		case v.IsNumber():
			return v.AppendNumber(dst)
		case v.IsTimestamp():
			if t, ok := v.AppendRFC3339(dst); ok {
				return t
			}
		}
	}
	start := len(dst)
	dst = AppendFullText(dst, o)
	switch text := dst[start:]; {
	case len(text) == 0:
		return append(dst, ' ')
	case len(text) > discovery.MaxState && utf8.RuneCount(text) > discovery.MaxState:
		cut, n := start, 0
		for i := range string(text) {
			if n == discovery.MaxState-1 {
				cut = start + i
				break
			}
			n++
		}
		return append(dst[:cut], "…"...)
	}
	return dst
}

// AppendFullText appends the text of o: decoded for identifiers and
// messages, else as the telegram has it.
func AppendFullText(dst []byte, o *p1.Object) []byte {
	v := o.Reading()
	if o.OBIS.HexText() {
		if t, ok := v.AppendHexText(dst); ok {
			return t
		}
	}
	return append(dst, v.Text...)
}

// learn adds the telegram's new objects to the meter's sensors and reports
// whether there were any. Called with b.mu held.
func (m *meter) learn(tg *p1.Telegram) bool {
	fresh := false
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if _, ok := m.known[o.OBIS]; !ok && !o.Unused() {
			fresh = true
			break
		}
	}
	if !fresh {
		return false
	}
	for _, s := range discovery.Sensors(tg) {
		if _, ok := m.known[s.OBIS]; !ok {
			m.known[s.OBIS] = len(m.sensors)
			m.sensors = append(m.sensors, s)
		}
	}
	return true
}

// meterID names the meter of a telegram: its printed number, else the
// system title, else the identification line; safe for MQTT topics.
func (b *Bridge) meterID(tg *p1.Telegram, from p1.Origin) string {
	raw := tg.MeterID()
	if len(raw) == 0 {
		if from.Encrypted {
			return decrypt.Title(from.SystemTitle).String()
		}
		raw = tg.Header
	}
	if bytes.Equal(raw, b.lastRaw) {
		return b.lastID
	}
	b.lastRaw = append(b.lastRaw[:0], raw...)
	b.lastID = TopicSafe(string(raw))
	return b.lastID
}

// TopicSafe replaces what may not stand in one MQTT topic level (and what
// Home Assistant does not accept in discovery ids) with '_'.
func TopicSafe(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			out[i] = '_'
		}
	}
	return string(out)
}

// publishStates publishes the state of every object of tg: in one write
// where the connection allows (see batch.go), else one message at a time.
//
// A meter that was offline is announced "online" first, in the same write:
// waiting for a QoS 1 acknowledgement here would hold up every meter behind
// it (a decryptor serving a thousand meters), and availability is
// published again after every reconnection anyway.
//
// resend: a held telegram (hold.go) whose totals were checked when it was
// read; later ones have moved the meter's last totals on since.
func (b *Bridge) publishStates(ctx context.Context, m *meter, id string, tg *p1.Telegram, announce, resend bool) bool {
	b.pending = b.pending[:0]
	now := time.Now()
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if o.Unused() || !resend && !b.monotonic(m, o, now) {
			continue
		}
		if _, ok := m.topics[o.OBIS]; !ok {
			m.topics[o.OBIS] = discovery.StateTopic(b.o.TopicPrefix, id, o.OBIS)
		}
		b.pending = append(b.pending, i)
	}
	availTopic := discovery.AvailabilityTopic(b.o.TopicPrefix, id)
	b.lastWrite.gen, b.lastWrite.ping = 0, 0
	if c, ok := b.pub.(*conn); ok {
		if !c.up.Load() || b.holdBack {
			return false // held (bridge mode) or sent again by the forwarder (decrypt mode)
		}
		b.packets = b.packets[:0]
		if announce {
			b.packets = appendPublish(b.packets, availTopic, []byte("online"), true)
		}
		for _, i := range b.pending {
			o := &tg.Objects[i]
			b.stateBuf = AppendState(b.stateBuf[:0], o)
			b.packets = appendPublish(b.packets, m.topics[o.OBIS], b.stateBuf, true)
			if topic, attrs := b.textAttributes(m, id, o); attrs != nil {
				b.packets = appendPublish(b.packets, topic, attrs, true)
			}
		}
		gen, ping, sent, err := c.writeBatch(b.packets)
		switch {
		case sent && err == nil:
			b.counts.states.Add(int64(len(b.pending)))
			b.lastWrite.gen, b.lastWrite.ping = gen, ping
			return true
		case sent:
			// The connection broke; paho notices and reconnects.
			clear(m.texts)
			b.counts.dropped.Add(int64(len(b.pending)))
			b.log.Debug("states not sent", "err", err)
			return false
		}
	}
	all := true
	if announce {
		all = b.send(ctx, availTopic, []byte("online"), 0)
	}
	for _, i := range b.pending {
		o := &tg.Objects[i]
		if b.send(ctx, m.topics[o.OBIS], AppendState(nil, o), 0) {
			b.counts.states.Add(1)
		} else {
			all = false
		}
		if topic, attrs := b.textAttributes(m, id, o); attrs != nil && !b.send(ctx, topic, attrs, 0) {
			delete(m.texts, o.OBIS) // again with the next telegram
		}
	}
	return all
}

// textAttributes returns, for a message whose text changed, its attributes
// topic and {"text": the whole text}; nil otherwise. Reading goroutine.
func (b *Bridge) textAttributes(m *meter, id string, o *p1.Object) (string, []byte) {
	if !discovery.LongText(o.OBIS) {
		return "", nil
	}
	if gen := b.connGen.Load(); m.textsGen != gen {
		clear(m.texts) // a new connection: the broker may have lost them
		m.textsGen = gen
	}
	b.stateBuf = AppendFullText(b.stateBuf[:0], o)
	if last, ok := m.texts[o.OBIS]; ok && last == string(b.stateBuf) {
		return "", nil
	}
	text := string(b.stateBuf)
	if len(m.texts) >= 64 {
		clear(m.texts) // a bound; a meter has six message objects
	}
	m.texts[o.OBIS] = text
	attrs, _ := json.Marshal(map[string]string{"text": text})
	return discovery.AttributesTopic(b.o.TopicPrefix, id, o.OBIS), attrs
}

// send publishes and counts a failure; it reports success.
func (b *Bridge) send(ctx context.Context, topic string, payload []byte, qos byte) bool {
	if err := b.pub.publish(ctx, topic, payload, qos, true); err != nil {
		b.counts.dropped.Add(1)
		b.log.Debug("not published", "topic", topic, "err", err)
		return false
	}
	return true
}

// countReject counts a rejected frame under its reason.
func (b *Bridge) countReject(r telegrams.Reason) {
	if r != telegrams.NotAFrame {
		b.counts.rejected[r].Add(1)
	}
}

// rejected counts a frame that did not decode and says what to check: at
// the first failure of a kind, then at 10, 100, 1000… in a row.
func (b *Bridge) rejected(err error, reason telegrams.Reason, from p1.Origin) {
	if reason == telegrams.NotAFrame {
		return // a false header: the scanner resyncs, nothing to tell
	}
	b.countReject(reason)
	b.lastReason.Store(uint32(reason))
	last := b.lastValid.Load()
	b.noteReject(err, reason, from.SystemTitle, last != 0 && time.Since(time.Unix(0, last)) < problemWindow(b.o.MeterTimeout))
	b.streak[reason]++
	n := b.streak[reason]
	if n != 1 && n != 10 && n != 100 && n%1000 != 0 {
		return
	}
	title := decrypt.Title(from.SystemTitle).String()
	switch {
	case errors.Is(err, decrypt.ErrAuthKey):
		b.log.Warn(fmt.Sprintf("authentication failed on %d frames in a row, but the key decrypts them: the key is right and the authentication key differs; set SMARTY_AUTH_KEY, or SMARTY_VERIFY_TAG=false to check the telegram CRC instead", n), "meter", title)
	case errors.Is(err, decrypt.ErrAuth):
		b.log.Warn(fmt.Sprintf("authentication failed on %d frames in a row: SMARTY_KEY is not this meter's key (check it against the key the grid operator sent for the meter number printed on the meter), or the line is noisy", n), "meter", title)
	case errors.Is(err, decrypt.ErrNoKey):
		b.log.Warn(fmt.Sprintf("no key for this meter (%d frames): set SMARTY_KEY, or add %s:<key> to SMARTY_KEYS", n, title), "meter", title)
	default:
		b.log.Warn(fmt.Sprintf("%d telegrams in a row rejected: %v", n, err), "reason", reason)
	}
}

// trigger asks the announcer to publish what is dirty.
func (b *Bridge) trigger() {
	select {
	case b.announce <- struct{}{}:
	default:
	}
}

// connected runs after every (re)connection: status, subscriptions, and
// everything retained again (the broker may have lost it).
func (b *Bridge) connected(ctx context.Context) {
	<-b.ready
	if err := b.pub.publish(ctx, b.statusTopic, []byte("online"), 1, true); err != nil {
		b.log.Debug("status not published", "err", err)
	}
	if d := b.split.Load(); d != nil {
		d.subscribe(ctx)
	}
	if b.o.Discovery != discovery.Off {
		if err := b.conn.subscribe(ctx, b.o.DiscoveryPrefix+"/status"); err != nil {
			b.log.Warn("cannot subscribe to Home Assistant's status; discovery is still sent on every connection", "err", err)
		}
	}
	b.markStale()
}

// message handles what the broker sends: Home Assistant's birth message.
func (b *Bridge) message(topic string, payload []byte) {
	if d := b.split.Load(); d != nil && d.message(topic, payload) {
		return
	}
	if b.sw.message(topic, payload) {
		return
	}
	if topic == b.o.DiscoveryPrefix+"/status" && string(payload) == "online" {
		b.log.Info("Home Assistant came online; sending discovery again")
		b.markAll()
	}
}

// markAll marks every meter's discovery and availability for publishing.
func (b *Bridge) markAll() {
	b.mu.Lock()
	for _, m := range b.meters {
		m.dirty, m.avail = true, true
	}
	b.mu.Unlock()
	b.selfDirty.Store(true)
	b.trigger()
}

// markStale marks, after a (re)connection, the meters whose discovery went
// out on an earlier connection: the broker may have lost it. A meter first
// seen on this connection is announced once, not twice.
func (b *Bridge) markStale() {
	b.selfDirty.Store(true)
	b.mu.Lock()
	gen := b.connGen.Load()
	for _, m := range b.meters {
		if m.announcedGen != gen {
			m.dirty, m.avail = true, true
		}
	}
	b.mu.Unlock()
	b.trigger()
}
