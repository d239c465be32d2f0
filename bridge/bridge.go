package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/quarter"
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
	// Name is the instance's own device in Home Assistant; "" names it
	// after the client id.
	Name string
	// Ephemeral: at a clean stop, delete everything retained the instance
	// published (discovery, states, status) instead of saying "offline":
	// the demo against a real broker leaves no fake meter behind.
	Ephemeral bool
	// StateDir keeps the last frame counter of every meter across
	// restarts (replay protection); "" keeps it in memory only.
	StateDir string
	// SaveEvery: the frame counters are written when they changed, at
	// most this often, and at a clean stop. Default 5 min (saver).
	SaveEvery time.Duration
	// ReferencePower (kW) and OverrunPrice (€/kWh) are the start-up
	// values of every meter's reference power settings (quarters.go);
	// 0: not set. Home Assistant can change them per meter.
	ReferencePower float64
	OverrunPrice   float64
	// Log receives the bridge's messages; nil discards them.
	Log *slog.Logger
	// Words, if set, rewrites the Problem's explanation and fix as the
	// user reads them (the add-on names its options for the variables).
	Words func(string) string
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
	// Decrypt mode: raw messages that were no frame, or too large;
	// confirmations not signed with the meter's key; plain telegrams
	// refused because they named an encrypted meter.
	garbage, oversized, forged, plainRefused atomic.Int64
	// Commands of a reference power setting that were no valid value.
	badCommands atomic.Int64
	rejected    [len(telegrams.Counts{})]atomic.Int64
}

// Bridge reads frames, decodes them and publishes Home Assistant discovery,
// states and availability.
type Bridge struct {
	*node
	dec *telegrams.Decoder

	mu     sync.Mutex
	meters map[string]*meter

	announce chan struct{}
	bytesIn  atomic.Int64
	skipped  atomic.Int64 // the reading loop's count of bytes in no frame
	counts   counters
	book     *replayBook
	quarters *quarterBook
	// saveState: how saving the book went (saveBook).
	saveState struct {
		failures int
		warned   time.Time
	}
	keyID func(decrypt.Title) string
	logs  *logLimiter

	// Reading goroutine only.
	streak    map[telegrams.Reason]int
	decodedAt map[[8]byte]time.Time // when frames of a title last decoded; a bound of maxDecodedTitles
	lastRaw   []byte
	lastID    string
	stateBuf  []byte
	packets   []byte // QoS 0 packets of one telegram
	pending   []int  // objects of one telegram to publish
	// Telegrams the broker has not confirmed (hold.go); lastWrite names
	// the PINGREQ that closed the last batch (0: none written).
	held       holdRing
	redec      *telegrams.Decoder
	lastWrite  struct{ gen, ping int64 }
	warnedLost bool
	holdBack   bool // older telegrams wait: hold this one too

	// Why the port cannot be opened (Source.OpenError); nil: no port.
	portError func() error

	// A reference power setting changed (quarters.go): save soon.
	settingChanged atomic.Bool

	// The instance's own device (report.go).
	selfDirty  atomic.Bool // its discovery must be (re)published
	lastReject atomic.Pointer[rejection]

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
	// The reference power (quarters.go): its topics, and the quarter as
	// of the last telegram (ok: the telegram had an import total).
	quarterTopics *quarterTopics
	quarter       quarterView
	quarterOK     bool
	// What of the quarter went out last, and on which connection.
	quarterSent struct {
		gen     int64
		version uint64
	}
}

// New checks the options and prepares a Bridge.
func New(o Options) (*Bridge, error) {
	n := newNode(o)
	dec, err := telegrams.NewDecoder(n.o.Keys)
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		node: n, dec: dec,
		meters:    map[string]*meter{},
		announce:  make(chan struct{}, 1),
		streak:    map[telegrams.Reason]int{},
		decodedAt: map[[8]byte]time.Time{},
		book:      newReplayBook(n.o.StateDir),
		quarters:  newQuarterBook(n.o.StateDir, quarter.Settings{ReferenceKW: n.o.ReferencePower, Price: n.o.OverrunPrice}),
		keyID:     keyIDs(n.o.Keys),
		logs:      newLogLimiter(10*time.Minute, 20),
	}
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

// Source is what bridge and forward mode read.
type Source struct {
	io.Reader
	// Live: a port (serial or TCP), read at once, broker or not, so that
	// its trouble (a permission, a wrong device) is logged while the
	// broker is away too. A capture (Live false) waits for the broker a
	// while, or its telegrams would be read before anything can take them.
	Live bool
	// OpenError, if set, says why the port cannot be opened (with what to
	// do when it is a *port.OpenError; p1/port.Reader.OpenError): the
	// Problem no_port.
	OpenError func() error
}

// Run connects to the broker and publishes what src delivers until ctx is
// done or src ends (a capture file). On the way out it publishes "offline"
// and disconnects cleanly.
func (b *Bridge) Run(ctx context.Context, src Source) error {
	b.book.load(b.log)
	b.quarters.load(b.log)
	b.portError = src.OpenError
	b.startReport(discovery.ModeBridge)
	err := b.run(ctx, connectOptions{maxPacket: maxRawPacket}, b, src.Live, func(ctx context.Context) error {
		var wg sync.WaitGroup
		sctx, stop := context.WithCancel(ctx)
		wg.Go(func() { b.saver(sctx) })
		err := b.read(ctx, src)
		stop()
		wg.Wait()
		b.saveAll() // a last time
		return err
	})
	b.logStopped()
	return err
}

// run runs body on the node with the loops of bridge and decrypt mode,
// and p as the mode's part.
func (b *Bridge) run(ctx context.Context, co connectOptions, p part, live bool, body func(context.Context) error) error {
	b.selfDirty.Store(true)
	loops := []func(context.Context){b.announcer, b.watchdog}
	if live {
		loops = append(loops, func(ctx context.Context) {
			if !b.conn.awaitConnection(ctx, 10*time.Second) && ctx.Err() == nil {
				b.log.Warn("MQTT broker not reachable yet; reading the meter and retrying in the background", "broker", b.conn.url)
			}
		})
	}
	return b.node.run(ctx, co, p, loops, func(ctx context.Context) error {
		if !live && !b.conn.awaitConnection(ctx, 10*time.Second) && ctx.Err() == nil {
			b.log.Warn("MQTT broker not reachable yet; going on and retrying in the background", "broker", b.conn.url)
		}
		return body(ctx)
	})
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
			if _, ok := b.decodedAt[from.SystemTitle]; !ok && len(b.decodedAt) >= maxDecodedTitles {
				clear(b.decodedAt)
			}
			b.decodedAt[from.SystemTitle] = time.Now()
			// Replay protection: a TCP source or a capture can be replayed.
			title, kid := decrypt.Title(from.SystemTitle).String(), b.keyID(from.SystemTitle)
			at, _ := tg.Time()
			if !b.replayGuard(title, kid, from.FrameCounter, at) {
				b.counts.rejected[telegrams.Replayed].Add(1)
				b.noteReject(nil, telegrams.Replayed, from.SystemTitle, false)
				continue
			}
			b.book.commit(title, kid, from.FrameCounter, b.meterID(tg, from), at)
		}
		b.deliver(ctx, f)
	}
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
		return // dropped as implausible (totals.go), or a test's recorder: nothing to confirm
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

// homeAssistantOnline sends every discovery again (part).
func (b *Bridge) homeAssistantOnline(context.Context) { b.markAll() }
