package bridge

import (
	"context"
	"time"

	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/p1"
)

// Holding telegrams the broker has not taken (bridge mode).
//
// A telegram read while the broker is away, or written to a connection
// that died before the broker confirmed it (pinger.go), is kept and sent
// again, in reading order, once a connection is up: a broker restart or a
// half-open path costs no reading, only delay. Home Assistant sees the held
// states in a burst at reconnection; totals are cumulative, so no energy is
// lost either way.
//
// At most holdMax telegrams are kept (five minutes of one meter at a frame
// every 10 s, 40 KB): past that the oldest is given up and counted as lost
// (Stats.Lost), with a warning once per outage. The reading goroutine owns
// all of it; held frames are decoded again with a decoder of their own,
// since the reading loop's telegram lives in the other one.

// holdMax bounds the telegrams held.
const holdMax = 32

// heldFrame is a frame whose telegram the broker has not confirmed.
type heldFrame struct {
	kind  p1.Kind
	frame []byte // the slot's buffer, reused
	// gen and ping name the PINGREQ that closed its batch (pinger.go);
	// ping 0: not written on any connection yet.
	gen, ping int64
	read      time.Time
	done      bool // nothing to send again
}

// holdRing is a fixed ring of held frames, oldest first.
type holdRing struct {
	slots   [holdMax]heldFrame
	head, n int
}

func (r *holdRing) at(i int) *heldFrame { return &r.slots[(r.head+i)%holdMax] }

func (r *holdRing) pop() {
	r.head = (r.head + 1) % holdMax
	r.n--
}

// keep holds a frame just handled; gen and ping say where it was written.
func (b *Bridge) keep(kind p1.Kind, frame []byte, gen, ping int64) {
	r := &b.held
	if r.n == holdMax {
		b.giveUp(r.at(0))
		r.pop()
	}
	h := r.at(r.n)
	r.n++
	h.kind, h.frame, h.gen, h.ping, h.read, h.done = kind, append(h.frame[:0], frame...), gen, ping, time.Now(), false
}

// untaken reports whether the broker has not taken a held frame yet.
func (b *Bridge) untaken(h *heldFrame) bool {
	return !h.done && !b.conn.ping.delivered(h.gen, h.ping)
}

// giveUp counts a held frame that will never be sent, unless the broker
// took it meanwhile.
func (b *Bridge) giveUp(h *heldFrame) {
	if !b.untaken(h) {
		return
	}
	b.counts.lost.Add(1)
	if !b.warnedLost {
		b.warnedLost = true
		b.log.Warn("the broker has been away too long: giving up the oldest held telegrams (their readings are lost; the totals are not)",
			"held", holdMax, "read_at", h.read.Format(time.RFC3339), "broker", b.conn.url)
	}
}

// flushHeld forgets the held frames the broker confirmed and, when a
// connection is up, sends again those it did not take, oldest first. It
// runs in the reading goroutine: before every telegram, and before every
// read of the port (so that a reconnection flushes at once, not at the
// next frame). It reports whether every held telegram is written.
func (b *Bridge) flushHeld(ctx context.Context) bool {
	r := &b.held
	for r.n > 0 && !b.untaken(r.at(0)) {
		r.pop()
	}
	if r.n == 0 {
		return true
	}
	if !b.conn.up.Load() {
		return false
	}
	if b.redec == nil {
		dec, err := telegrams.NewDecoder(b.o.Keys)
		if err != nil {
			return true // the keys were checked by New
		}
		b.redec = dec
	}
	for i := range r.n {
		h := r.at(i)
		if h.done || h.ping != 0 && h.gen == b.conn.ping.current() {
			continue // on this connection, waiting for its answer
		}
		tg, from, err := b.redec.Decode(h.kind, h.frame)
		if err != nil {
			h.done = true // it decoded once: cannot happen
			continue
		}
		id := b.meterID(tg, from)
		b.mu.Lock()
		m := b.meters[id]
		b.mu.Unlock()
		if m == nil {
			h.done = true
			continue
		}
		if !b.publishStates(ctx, m, id, tg, false, true) || b.lastWrite.ping == 0 {
			return false // the connection broke again: later
		}
		h.gen, h.ping = b.lastWrite.gen, b.lastWrite.ping
		b.counts.resent.Add(1)
	}
	b.warnedLost = false
	return true
}

// drainTime bounds how long the end of the input (a capture read to its
// end, or a stop) waits for the broker to take what is held.
const drainTime = 5 * time.Second

// drainHeld sends what is held and waits, at most drainTime, for the
// broker to confirm it; what it never took is counted as lost and said.
// It waits while the connection is down too: a broker that restarts comes
// back within seconds. The reading goroutine, once the input ended.
func (b *Bridge) drainHeld(ctx context.Context) {
	deadline := time.Now().Add(drainTime)
	for {
		b.flushHeld(context.WithoutCancel(ctx))
		if b.held.n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lost := 0
	for r := &b.held; r.n > 0; r.pop() {
		if b.untaken(r.at(0)) {
			lost++
		}
	}
	if lost > 0 {
		b.counts.lost.Add(int64(lost))
		b.log.Warn("stopping with telegrams the broker never took; their readings are lost (the totals are not)", "telegrams", lost, "broker", b.conn.url)
	}
}
