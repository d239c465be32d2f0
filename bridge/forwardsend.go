package bridge

import (
	"context"
	"slices"
	"time"
)

// Forward mode: sending the queue, re-sending what no decryptor settled.

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
