package bridge

import (
	"context"
	"slices"
	"time"
)

// Settling frames: the confirmations a decryptor publishes (confirm.go),
// one meter at a time.
//
// Every meter has one confirmation on the broker, retained, naming the
// frames settled most recently. Three rules keep it right when anyone may
// publish on the raw topics:
//
//   - One writer per meter. Settling a frame changes the meter's lists at
//     once; a single goroutine per meter publishes the newest lists, one
//     publish at a time, so that no confirmation overwrites a later one
//     with a list that lacks frames (16 confirmations in a burst left 2
//     or 3 frames named before).
//   - Rejections cannot push out settled frames. The lists are kept apart:
//     frames published (okKept), repeats of authentic frames (dupKept:
//     a forwarder's re-send, always answered), and frames that failed
//     (failKept: damaged on the line, or forged). Forged frames only ever
//     fill the last.
//   - Rejections cost at most one confirmation a second per meter
//     (failGap): forged frames with fresh counters made one signed,
//     retained confirmation each (20,100 for 20,000), each checked by every
//     forwarder. A frame published goes out at once, with whatever waited.
//
// A frame is confirmed as published once the broker acknowledged a
// confirmation naming it: then the replay book moves (commit), and until
// then the frame counts as in flight (confirmState.inFlight).

// The lists' bounds; together at most settledKept, what forwarders accept.
const (
	okKept   = 10
	dupKept  = 3
	failKept = 3
)

// failGap is the least time between two confirmations of a meter that
// name nothing newly published.
const failGap = time.Second

// confirmState is what a meter's confirmations are made of. Guarded by
// decryptor.mu.
type confirmState struct {
	ok, dup, fail []string // "<frame id>:<verdict>", newest last
	version       uint64   // counts changes
	urgent        bool     // a frame was published since the last confirmation
	publishing    bool     // the meter's writer runs
	wake          chan struct{}
	lastPub       time.Time
	waiting       []acceptedFrame // published, confirmation not acknowledged yet
}

// acceptedFrame is a published frame whose confirmation is on its way.
type acceptedFrame struct {
	version uint64
	counter uint32
	meterID string
	at      time.Time
}

// add records a verdict, once per frame id: a newer verdict of the same
// frame replaces the older.
func (c *confirmState) add(fid, verdict string) {
	entry := fid + ":" + verdict
	for _, l := range []*[]string{&c.ok, &c.dup, &c.fail} {
		*l = slices.DeleteFunc(*l, func(e string) bool { return e[:len(fid)] == fid })
	}
	list, max := &c.fail, failKept
	switch verdict {
	case verdictOK:
		list, max = &c.ok, okKept
	case verdictDup:
		list, max = &c.dup, dupKept
	}
	*list = append(*list, entry)
	if over := len(*list) - max; over > 0 {
		*list = slices.Delete(*list, 0, over)
	}
	c.version++
}

// settled lists every frame named, published ones last.
func (c *confirmState) settled() []string {
	out := make([]string, 0, len(c.fail)+len(c.dup)+len(c.ok))
	out = append(out, c.fail...)
	out = append(out, c.dup...)
	return append(out, c.ok...)
}

// settle records the verdict of frame fid of meter id and has the meter's
// writer publish it. accepted marks a published frame, with its counter,
// meter id and telegram time for the replay book. Reading goroutine only.
func (d *decryptor) settle(ctx context.Context, id string, k confirmKey, fid, verdict string, counter uint32, accepted bool, meterID string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state(id)
	c := &st.confirms
	c.add(fid, verdict)
	if accepted {
		c.waiting = append(c.waiting, acceptedFrame{version: c.version, counter: counter, meterID: meterID, at: at})
		c.urgent = true
	}
	if c.publishing {
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return
	}
	c.publishing = true
	if c.wake == nil {
		c.wake = make(chan struct{}, 1)
	}
	d.wg.Go(func() { d.confirmWriter(ctx, id, k, st) })
}

// confirmWriter publishes the confirmation of one meter until nothing is
// left to say: at once for a published frame, else failGap after the last.
func (d *decryptor) confirmWriter(ctx context.Context, id string, k confirmKey, st *titleState) {
	b := d.b
	c := &st.confirms
	var sent uint64 // the version last acknowledged
	for {
		d.mu.Lock()
		if c.version == sent {
			c.publishing = false
			d.mu.Unlock()
			return
		}
		wait := time.Duration(0)
		if !c.urgent {
			wait = failGap - time.Since(c.lastPub)
		}
		d.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.wake: // a frame published meanwhile, maybe
				t.Stop()
				continue
			case <-ctx.Done():
				t.Stop()
				d.abandon(st)
				return
			}
		}

		d.mu.Lock()
		v := c.version
		conf := confirmation{Settled: c.settled()}
		if last, known := b.book.last(id); known && last.KeyID == k.keyID {
			conf.Counter = last.Counter
		}
		if n := len(c.waiting); n > 0 {
			conf.Counter = c.waiting[n-1].counter
		}
		c.urgent = false
		d.mu.Unlock()
		payload := k.sign(id, &conf)

		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := b.pub.publish(pctx, d.confirmTopic(id), payload, 1, true)
		cancel()

		d.mu.Lock()
		c.lastPub = time.Now()
		var done []acceptedFrame
		if err == nil {
			sent = v
			i := 0
			for i < len(c.waiting) && c.waiting[i].version <= v {
				i++
			}
			done = slices.Clone(c.waiting[:i])
			c.waiting = slices.Delete(c.waiting, 0, i)
		}
		d.mu.Unlock()
		for _, a := range done {
			b.book.commit(id, k.keyID, a.counter, a.meterID, a.at)
		}
		if err != nil {
			b.log.Debug("confirmation not published; the forwarder will send the frame again", "meter", id, "err", err)
			d.abandon(st)
			return
		}
	}
}

// abandon ends a meter's writer without the broker's acknowledgement: its
// published frames count as not confirmed, so that the forwarder's re-send
// is taken again.
func (d *decryptor) abandon(st *titleState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &st.confirms
	c.waiting = c.waiting[:0]
	c.publishing = false
}

// inFlight reports whether a frame with counter is a repeat of a
// published frame whose confirmation the broker has not acknowledged yet:
// a duplicate, until the replay book moves. Called with decryptor.mu held.
func (c *confirmState) inFlight(counter uint32) bool {
	n := len(c.waiting)
	return n > 0 && counter <= c.waiting[n-1].counter
}
