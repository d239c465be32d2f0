package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/p1/port"
)

// The bridge's own device in Home Assistant: a Problem sensor that says
// what is wrong in one word, with the explanation and the fix as
// attributes, and diagnostic counters. A reporter samples its instance
// every second, publishes the diagnostics JSON when it changed (at once
// when the Problem changed, else at most every 10 s) and logs every
// change of the Problem with the same words Home Assistant shows.

// problemText is the explanation and the fix of each Problem, by mode
// where they differ: the log line and Home Assistant's attributes.
func problemText(p discovery.Problem, mode discovery.Mode) (explanation, fix string) {
	split := mode == discovery.ModeDecrypt
	switch p {
	case discovery.ProblemOK:
		if mode == discovery.ModeForward {
			return "Frames are read and a decryptor confirms them.", ""
		}
		return "Telegrams arrive and decode.", ""
	case discovery.ProblemNoData:
		if split {
			return "No forwarded frame arrived for a while.", "Check that the forwarder runs, next to the meter, on the same broker and SMARTY_TOPIC_PREFIX."
		}
		return "The meter's port is open but not one byte came for a while.", "Check that the cable sits in the meter's P1 port and that the grid operator has opened the port."
	case discovery.ProblemNoFrames:
		if split {
			return "Messages arrive on the raw topics but none is a frame.", "Check that only smartybridge forwarders publish to SMARTY_TOPIC_PREFIX/raw/#."
		}
		return "Bytes arrive on the port but form no frame.", "Check the speed (SMARTY_BAUD=115200 for Smarty), that the cable inverts the signal (an FTDI P1 cable does; a plain USB-serial adapter does not), and that SMARTY_DEVICE is the meter's port."
	case discovery.ProblemWrongKey:
		return "Frames arrive but fail authentication: the key is not this meter's.", "Check SMARTY_KEY against the key the grid operator sent for the meter number printed on the meter."
	case discovery.ProblemAuthKey:
		return "The key decrypts the frames but the authentication key differs.", "Set SMARTY_AUTH_KEY, or SMARTY_VERIFY_TAG=false to check the telegram CRC instead."
	case discovery.ProblemNoKey:
		return "Encrypted frames arrive from a meter that has no key here.", "Set SMARTY_KEY, or add <system title>:<key> to SMARTY_KEYS."
	case discovery.ProblemCRCErrors:
		return "Frames arrive but their telegrams fail the CRC: the line is noisy.", "Check the cable and its connection; a shorter cable helps."
	case discovery.ProblemNoDecryptor:
		return "Frames are forwarded but no decryptor confirms them.", "Start a decryptor (SMARTY_MODE=decrypt) on the same broker and SMARTY_TOPIC_PREFIX, and check the broker's ACL lets it confirm."
	case discovery.ProblemNoMeter:
		return "Nothing read from the meter yet.", "Wait for the first telegram (every 10 s); if none comes, this says why."
	case discovery.ProblemNoPort:
		return "The meter's port cannot be opened.", "Check SMARTY_DEVICE and that the cable is plugged in."
	case discovery.ProblemReplayed:
		return "Frames arrive that were read before: a capture or a TCP stream played again, or the state directory of another installation.",
			"Nothing is published twice. If it lasts, check that only the meter feeds SMARTY_DEVICE and that SMARTY_STATE_DIR is this installation's own."
	}
	return string(p), ""
}

// observation is what a reporter samples of its instance.
type observation struct {
	now, started time.Time
	window       time.Duration
	mode         discovery.Mode
	lastByte     time.Time // bytes (or, in decrypt mode, raw messages) last arrived
	lastValid    time.Time // a telegram decoded; forward mode: a frame queued
	reject       rejection // the latest rejected frame
	// The meter's port cannot be opened: why, and what to do
	// (*port.OpenError).
	portErr error
	// Forward mode: the oldest frame no decryptor confirmed (zero: none),
	// and the last confirmation.
	oldestUnconfirmed, lastConfirmed time.Time
}

// rejection is a rejected frame: when, why, and whose.
type rejection struct {
	at      time.Time
	reason  telegrams.Reason
	authKey bool // authentication failed, but the key decrypts
	// keyWorked: the meter's frames authenticated a moment before, so a
	// failure is damage on the line, not a wrong key.
	keyWorked bool
	meter     string
}

// bytesAfterTelegram: bytes this long after the last telegram are bytes
// of their own (the reporter ticks every second).
const bytesAfterTelegram = 2 * time.Second

// diagnose names the Problem of an observation, and the meter concerned.
// A rejection within the window wins (one meter of many can be wrong);
// then a telegram within it is ok; then bytes within it are no_frames;
// nothing at all is no_meter during the first window and no_data after.
func diagnose(o observation) (discovery.Problem, string) {
	recent := func(t time.Time) bool { return !t.IsZero() && o.now.Sub(t) <= o.window }
	if o.portErr != nil {
		return discovery.ProblemNoPort, ""
	}
	if recent(o.reject.at) {
		switch {
		case o.reject.reason == telegrams.Authentication && o.reject.authKey:
			return discovery.ProblemAuthKey, o.reject.meter
		case o.reject.reason == telegrams.Authentication && o.reject.keyWorked:
			return discovery.ProblemCRCErrors, o.reject.meter
		case o.reject.reason == telegrams.Authentication:
			return discovery.ProblemWrongKey, o.reject.meter
		case o.reject.reason == telegrams.NoKey:
			return discovery.ProblemNoKey, o.reject.meter
		case o.reject.reason == telegrams.CRC || o.reject.reason == telegrams.Malformed:
			return discovery.ProblemCRCErrors, o.reject.meter
		case o.reject.reason == telegrams.Replayed && !recent(o.lastValid):
			return discovery.ProblemReplayed, o.reject.meter
		}
	}
	if o.mode == discovery.ModeForward && !o.oldestUnconfirmed.IsZero() && o.now.Sub(o.oldestUnconfirmed) > o.window && !recent(o.lastConfirmed) {
		return discovery.ProblemNoDecryptor, ""
	}
	if recent(o.lastValid) {
		return discovery.ProblemOK, ""
	}
	if o.now.Sub(o.started) < o.window {
		return discovery.ProblemNoMeter, ""
	}
	// Bytes that came after the last telegram, not with it: the reporter
	// sees bytes arrive at its tick, up to a second after the telegram
	// they made, and a meter that falls silent is no_data, not no_frames.
	if recent(o.lastByte) && o.lastByte.After(o.lastValid.Add(bytesAfterTelegram)) {
		return discovery.ProblemNoFrames, ""
	}
	if o.lastValid.IsZero() && o.lastByte.IsZero() && o.mode == discovery.ModeDecrypt {
		return discovery.ProblemNoMeter, ""
	}
	return discovery.ProblemNoData, ""
}

// reporter publishes an instance's Problem and diagnostics.
type reporter struct {
	mode      discovery.Mode
	device    discovery.BridgeDevice
	log       *slog.Logger
	sample    func(now time.Time) (observation, diagnostics)
	publish   func(ctx context.Context, topic string, payload []byte) bool
	minPeriod time.Duration       // 10 s between publications of unchanged Problem
	words     func(string) string // Options.Words; nil: as written

	mu      sync.Mutex
	problem discovery.Problem
	meter   string
	last    []byte
	lastAt  time.Time
	resend  bool
	payload []byte // the tick's, reused
}

func newReporter(mode discovery.Mode, clientID, name, prefix string, log *slog.Logger) *reporter {
	base := prefix + "/bridge/" + clientID
	return &reporter{
		mode: mode, log: log, minPeriod: 10 * time.Second,
		device: discovery.BridgeDevice{ClientID: clientID, Name: name, Mode: mode, StatusTopic: prefix + "/status/" + clientID,
			DiagnosticsTopic: base + "/diagnostics", ProblemTopic: base + "/problem"},
	}
}

// again makes the next tick publish everything (after a reconnection).
func (r *reporter) again() {
	r.mu.Lock()
	r.resend = true
	r.mu.Unlock()
}

// run ticks every second until ctx ends.
func (r *reporter) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	r.tick(ctx, time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.tick(ctx, now)
		}
	}
}

func (r *reporter) tick(ctx context.Context, now time.Time) {
	obs, values := r.sample(now)
	p, meter := diagnose(obs)
	values.mode, values.problem = r.mode, p
	// Only the run goroutine ticks: the buffer is its own.
	r.payload = values.appendJSON(r.payload[:0])
	payload := r.payload

	r.mu.Lock()
	changed := p != r.problem || meter != r.meter
	first := r.problem == ""
	if changed {
		r.problem, r.meter = p, meter
	}
	due := r.resend || changed || !bytes.Equal(payload, r.last) && now.Sub(r.lastAt) >= r.minPeriod
	resend := r.resend
	r.mu.Unlock()

	explanation, fix := problemText(p, r.mode)
	if p == discovery.ProblemNoPort && obs.portErr != nil {
		explanation = "The meter's port cannot be opened: " + obs.portErr.Error() + "."
		if oe, ok := errors.AsType[*port.OpenError](obs.portErr); ok && oe.Hint != "" {
			fix = strings.ToUpper(oe.Hint[:1]) + oe.Hint[1:] + "."
		}
	}
	if r.words != nil {
		explanation, fix = r.words(explanation), r.words(fix)
	}
	if changed {
		switch {
		case p == discovery.ProblemOK && !first:
			r.log.Info("problem solved: "+explanation, "problem", p)
		case p != discovery.ProblemOK && p != discovery.ProblemNoMeter:
			r.log.Warn("problem: "+explanation, "problem", p, "fix", fix, "meter", meter)
		}
	}
	if !due {
		return
	}
	ok := true
	if changed || resend {
		attrs, _ := json.Marshal(map[string]string{"explanation": explanation, "fix": fix, "meter": meter})
		ok = r.publish(ctx, r.device.ProblemTopic, attrs)
	}
	ok = ok && r.publish(ctx, r.device.DiagnosticsTopic, payload)
	r.mu.Lock()
	if ok {
		r.last, r.lastAt, r.resend = append(r.last[:0], payload...), now, false
	} else {
		r.resend = true // the broker is away: everything again when it is back
	}
	r.mu.Unlock()
}

// frameRate counts events per minute from a counter sampled each second.
type frameRate struct {
	samples [61]int64
	n       int
}

// add records the counter's value now and returns the events of the last
// minute (of the time seen so far, scaled to a minute).
func (f *frameRate) add(total int64) float64 {
	f.samples[f.n%len(f.samples)] = total
	f.n++
	span := min(f.n, len(f.samples)) - 1
	if span <= 0 {
		return 0
	}
	oldest := f.samples[(f.n-1-span)%len(f.samples)]
	return float64(total-oldest) * 60 / float64(span)
}
