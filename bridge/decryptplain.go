package bridge

import (
	"context"
	"fmt"
	"time"

	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/p1"
)

// Decrypt mode: plain (unencrypted) telegrams, which carry no authentication.

// handlePlain publishes an unencrypted telegram, which carries no
// authentication: only under an id that no encrypted meter uses, for at
// most MaxPlainMeters meters, and only when its time stamp grows.
func (d *decryptor) handlePlain(ctx context.Context, id string, payload []byte) {
	b := d.b
	tg, from, err := b.dec.Decode(p1.Plain, payload)
	if err != nil {
		b.countReject(telegrams.ReasonOf(err))
		d.warnLimited("plainbad "+id, "a forwarded plain telegram was rejected", "topic id", id, "err", err)
		return
	}
	meter := b.meterID(tg, from)
	if d.encrypted(meter) {
		d.b.counts.plainRefused.Add(1)
		d.warnLimited("impostor "+meter, "a plain telegram names a meter that sends encrypted frames; refused (forged?)", "meter", meter,
			"hint", "restrict who may publish on "+b.o.TopicPrefix+"/raw/# with the broker's ACL (README, split mode)")
		return
	}
	var stamp string
	for i := range tg.Objects {
		if o := &tg.Objects[i]; o.OBIS == (p1.OBIS{A: 0, B: 0, C: 1, D: 0, E: 0}) {
			stamp = string(o.Values[0].Text)
		}
	}
	d.mu.Lock()
	ps, known := d.plain.get(meter)
	if !known && d.plain.len() >= d.o.MaxPlainMeters {
		d.mu.Unlock()
		d.b.counts.plainRefused.Add(1)
		d.warnLimited("plainmax", "more unencrypted meters than a decryptor serves; refused (forged?)", "meter", meter, "max", d.o.MaxPlainMeters)
		return
	}
	if known && stamp != "" && !d.plainStampOK(meter, ps, stamp) {
		d.mu.Unlock()
		b.countReject(telegrams.Replayed)
		return
	}
	if !known {
		ps = &plainState{}
		d.plain.put(meter, ps)
	}
	if stamp != "" {
		ps.lastTime, ps.lastAt, ps.back = stamp, time.Now(), 0
	}
	d.mu.Unlock()
	b.handle(ctx, tg, from)
}

// plainStampOK decides whether a plain telegram stamped stamp is new. A
// repeat, or a stamp before the last one, is not; but such stamps,
// downAfter in a row and growing among themselves, are followed (a clock
// set back, or a forged stamp before them: forged plain telegrams must
// not block the real ones), and a stamp further ahead of the last than
// the time since it came, plus an hour, is not believed (forged?) and not
// remembered. Called with d.mu held.
func (d *decryptor) plainStampOK(meter string, ps *plainState, stamp string) bool {
	if stamp == ps.lastTime {
		return false
	}
	if !newerStamp(stamp, ps.lastTime) {
		if ps.back > 0 && !newerStamp(stamp, ps.backLast) {
			ps.back = 0
		}
		ps.back++
		ps.backLast = stamp
		if ps.back < downAfter {
			return false
		}
		d.warnLimited("plainback "+meter, fmt.Sprintf("a plain meter's clock went back and stayed back for %d telegrams: following it (its clock was set, or a forged telegram was stamped ahead)", downAfter),
			"meter", meter, "stamp", stamp, "was", ps.lastTime)
		return true
	}
	next, ok1 := p1.Value{Text: []byte(stamp)}.Time()
	last, ok2 := p1.Value{Text: []byte(ps.lastTime)}.Time()
	if ok1 && ok2 && next.Sub(last) > time.Since(ps.lastAt)+time.Hour {
		d.warnLimited("plainahead "+meter, "a plain telegram is stamped far ahead of the meter's clock; ignored (forged?)", "meter", meter, "stamp", stamp, "last", ps.lastTime,
			"hint", "restrict who may publish on "+d.b.o.TopicPrefix+"/raw/# with the broker's ACL (README, split mode)")
		return false
	}
	return true
}

// newerStamp reports whether the DSMR time stamp a (YYMMDDhhmmss[SW]) is
// a later instant than b. The digits alone would put October's repeated
// hour (02:00W–02:59W after 02:59S) before the hour it repeats. Stamps
// without a season letter (DSMR 2.2) cannot be ordered through that hour:
// any other stamp counts as new.
func newerStamp(a, b string) bool {
	ta, okA := p1.Value{Text: []byte(a)}.Time()
	tb, okB := p1.Value{Text: []byte(b)}.Time()
	if okA && okB {
		return ta.After(tb)
	}
	return a != b
}

// encrypted reports whether meter is an encrypted meter: one in the
// replay book (by its meter id or title) or one with a configured key.
func (d *decryptor) encrypted(meter string) bool {
	return d.b.book.encrypted(meter) || d.keys.titles[meter]
}
