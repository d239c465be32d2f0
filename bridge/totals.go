package bridge

import (
	"fmt"
	"time"

	"github.com/smartybridge/smartybridge/p1"
)

// Totals (energy, gas) only grow. A total that goes down is held back, so
// that Home Assistant's statistics never see a false meter reset. Two
// things must not make that hold forever:
//
//   - A meter exchanged or reset: its totals go down once and grow from
//     there. downAfter readings in a row below the last one published,
//     growing among themselves, are followed, with a warning.
//   - A forged plain telegram (plain meters carry no authentication; in
//     split mode anyone allowed to publish on the raw topics can send
//     one): a total raised to 999999 kWh held back every real reading
//     after it. A plain meter's telegram with a total that grows faster
//     than any connection can draw (maxGrowthPerHour, over the host time since
//     the last reading, at least an hour: a jump of 250 kWh is always
//     let through) is dropped whole and not remembered; one that grows
//     plausibly is published and, if forged, healed by the rule above
//     within downAfter readings.
//
// Authenticated meters' totals are the meter's word: no growth limit.

// downAfter is how many readings in a row, below the last published total
// and growing among themselves, are followed.
const downAfter = 3

// maxGrowthPerHour bounds how fast a plain meter's total may grow, per
// hour of host time: 250 kWh in an hour is a 250 kW connection, six times
// the largest three-phase household's (3 × 63 A); gas meters count m³,
// far below it.
const maxGrowthPerHour = 250.0

// downStreak is the readings of one total below the last published one.
type downStreak struct {
	n      int
	last   float64
	warned bool
}

// isTotal reports whether the meter's sensor for code is a total, which
// only grows. Reading goroutine only.
func (m *meter) isTotal(code p1.OBIS) bool {
	i, ok := m.known[code]
	return ok && m.sensors[i].Monotonic()
}

// monotonic reports whether o may be published (see above). It runs in the
// reading goroutine, the only writer of m.known, m.sensors and the maps it
// keeps, so it reads them without taking b.mu.
func (b *Bridge) monotonic(m *meter, o *p1.Object, now time.Time) bool {
	if !m.isTotal(o.OBIS) {
		return true
	}
	f, ok := o.Reading().Float()
	if !ok {
		return false
	}
	last, seen := m.last[o.OBIS]
	switch {
	case !seen:
	case f < last:
		st := m.down[o.OBIS]
		if st.n > 0 && f < st.last {
			st.n = 0 // not a series
		}
		st.n++
		st.last = f
		if st.n < downAfter {
			b.counts.decreasing.Add(1)
			if !st.warned {
				st.warned = true
				b.log.Warn("a total went down; not publishing it", "meter", m.id, "obis", o.OBIS.String(), "value", f, "last", last)
			}
			m.down[o.OBIS] = st
			return false
		}
		b.log.Warn(fmt.Sprintf("a total went down and stayed down for %d readings: following it (a meter exchanged or reset, or a forged total before it)", downAfter),
			"meter", m.id, "obis", o.OBIS.String(), "value", f, "was", last)
	}
	m.last[o.OBIS] = f
	m.lastAt[o.OBIS] = now
	delete(m.down, o.OBIS)
	return true
}

// implausible reports whether a telegram of a plain meter raises a total
// faster than any connection can draw: forged, most likely. It is then
// counted and said (a limited number of times), and dropped whole.
// Reading goroutine only.
func (b *Bridge) implausible(m *meter, tg *p1.Telegram, now time.Time) bool {
	if m.authentic {
		return false
	}
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if !m.isTotal(o.OBIS) {
			continue
		}
		f, ok := o.Reading().Float()
		last, seen := m.last[o.OBIS]
		if !ok || !seen || f-last <= maxGrowthPerHour*max(now.Sub(m.lastAt[o.OBIS]), time.Hour).Hours() {
			continue
		}
		b.counts.decreasing.Add(1)
		if ok, held := b.logs.allow("implausible " + m.id); ok {
			b.log.Warn("a plain telegram raised a total faster than any connection can draw; dropped it (forged?)", "meter", m.id,
				"obis", o.OBIS.String(), "value", f, "last", last, "similar_lines_held_back", held)
		}
		return true
	}
	return false
}
