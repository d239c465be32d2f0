// Package quarter computes, from a meter's readings, the energy drawn in
// each fixed quarter-hour, the measure of Luxembourg's reference power
// ("puissance de référence", ILR E23/49): energy drawn within a quarter
// above the reference power × 15 min is billed at a higher price.
//
// Smarty meters report no demand or quarter object, so everything comes
// from the import total 1-0:1.8.0, the power 1-0:1.7.0 and the meter's
// clock 0-0:1.0.0:
//
//	E(B)        the import total at a boundary B (:00, :15, :30, :45 UTC),
//	            interpolated linearly between the last reading before B and
//	            the first at or after it
//	energy      E(end) − E(start) of a quarter
//	overrun     max(0, energy − reference × ¼ h)
//	measured    both boundaries bracketed by readings at most 60 s apart
//	estimated   a longer gap spans a boundary (its energy spread linearly
//	            over the gap, so that the quarters still sum to the total),
//	            or a reading without the meter's clock
//	incomplete  the quarter's start was not seen (a start or restart
//	            without saved state, or a meter whose total went down)
//
// Luxembourg's offsets are whole hours, so UTC quarters are local
// quarters; days and months are the meter's local dates (CET/CEST), with
// 92 or 100 quarters on the days the clock changes.
package quarter

import (
	"time"
)

// Length is the billing period.
const Length = 15 * time.Minute

// maxBracket is the longest gap around a boundary that still counts as
// measured: a Smarty meter sends a telegram every 10 s.
const maxBracket = 60 * time.Second

// maxGap is the longest gap spread over the quarters it spans; after a
// longer one (a clock that jumped, a bridge off for days) the readings
// start again, so that one reading cannot make thousands of quarters.
const maxGap = 48 * time.Hour

// Quality says how well a quarter's energy is known.
type Quality uint8

// The qualities, from best to worst.
const (
	Measured Quality = iota
	Estimated
	Incomplete
)

func (q Quality) String() string {
	switch q {
	case Measured:
		return "measured"
	case Estimated:
		return "estimated"
	}
	return "incomplete"
}

// Reading is one telegram's share of the computation.
type Reading struct {
	At      time.Time // the meter's clock (0-0:1.0.0), else when it arrived
	Stamped bool      // At is the meter's clock
	Energy  float64   // kWh imported so far, 1-0:1.8.0
	Power   float64   // kW drawn now, 1-0:1.7.0
}

// Quarter is a finished quarter-hour.
type Quarter struct {
	Start   time.Time // in the meter's local time
	Energy  float64   // kWh
	Quality Quality
}

// AverageKW is the quarter's average power.
func (q Quarter) AverageKW() float64 { return q.Energy * 4 }

// Overrun is the energy of the quarter above referenceKW × ¼ h; 0 without
// a reference power.
func (q Quarter) Overrun(referenceKW float64) float64 {
	if referenceKW <= 0 {
		return 0
	}
	return max(0, q.Energy-referenceKW/4)
}

// Meter turns one meter's readings into quarters. Its exported fields are
// its state, kept across restarts (encoding/json).
type Meter struct {
	Last     Reading `json:"last"`
	HaveLast bool    `json:"have_last"`
	// The running quarter: its start, the import total at its start, and
	// the worst quality of its start boundary.
	OpenStart   time.Time `json:"open_start"`
	OpenEnergy  float64   `json:"open_energy"`
	OpenQuality Quality   `json:"open_quality"`
}

// Add takes the next reading and appends to done the quarters it
// finished: none within a quarter, one at a boundary, several when the
// reading comes after a gap.
func (m *Meter) Add(done []Quarter, r Reading) []Quarter {
	if !m.HaveLast {
		m.restart(r)
		return done
	}
	last := m.Last
	gap := r.At.Sub(last.At)
	switch {
	case gap == 0 && r.Energy == last.Energy:
		return done // the same reading again
	case gap <= 0 || gap > maxGap || r.Energy < last.Energy:
		// The clock went back or jumped, or the total went down (a meter
		// replaced or reset): a new baseline; the running quarter is not
		// counted.
		m.restart(r)
		return done
	}
	q := Measured
	if gap > maxBracket || !r.Stamped || !last.Stamped {
		q = Estimated
	}
	for b := Floor(last.At).Add(Length); !b.After(r.At); b = b.Add(Length) {
		eb := last.Energy + (r.Energy-last.Energy)*float64(b.Sub(last.At))/float64(gap)
		qb := q
		if b.Equal(r.At) && r.Stamped {
			qb = Measured // read right at the boundary: nothing to interpolate
		}
		done = append(done, Quarter{Start: Local(m.OpenStart), Energy: max(0, eb-m.OpenEnergy), Quality: max(m.OpenQuality, qb)})
		m.OpenStart, m.OpenEnergy, m.OpenQuality = b, eb, qb
	}
	m.Last = r
	return done
}

// restart takes r as the first reading: the running quarter's start was
// not seen.
func (m *Meter) restart(r Reading) {
	m.Last, m.HaveLast = r, true
	m.OpenStart, m.OpenEnergy, m.OpenQuality = Floor(r.At), r.Energy, Incomplete
	if r.At.Equal(m.OpenStart) {
		m.OpenQuality = Measured // read exactly at the boundary
		if !r.Stamped {
			m.OpenQuality = Estimated
		}
	}
}

// Live is the running quarter as of the last reading.
type Live struct {
	Start   time.Time     // the quarter's start, local time
	Energy  float64       // kWh so far
	Elapsed time.Duration // of the quarter
	// Projected is the quarter's average power if the power of the last
	// reading holds to its end, kW.
	Projected float64
	Quality   Quality // of its start
}

// Live returns the running quarter; ok is false before the first reading.
func (m *Meter) Live() (l Live, ok bool) {
	if !m.HaveLast {
		return Live{}, false
	}
	r := m.Last
	l = Live{Start: Local(m.OpenStart), Energy: max(0, r.Energy-m.OpenEnergy), Elapsed: r.At.Sub(m.OpenStart), Quality: m.OpenQuality}
	left := max(0, Length-l.Elapsed).Hours()
	l.Projected = (l.Energy + max(0, r.Power)*left) * 4
	return l, true
}

// Allowed is the power that may still be drawn, on average, for the rest
// of the quarter without an overrun, kW; 0 when the quarter is already
// over its share.
func (l Live) Allowed(referenceKW float64) float64 {
	left := max(0, Length-l.Elapsed).Hours()
	if left <= 0 {
		return 0
	}
	return max(0, (referenceKW/4-l.Energy)/left)
}

// Floor is the start of the quarter that holds t.
func Floor(t time.Time) time.Time { return t.UTC().Truncate(Length) }

// Zones of the meter's clock: Luxembourg's winter and summer time.
var (
	cet  = time.FixedZone("CET", 3600)
	cest = time.FixedZone("CEST", 7200)
)

// Local is t in Luxembourg's time (the EU rule: summer time from the last
// Sunday of March to the last Sunday of October, 01:00 UTC), as the meter
// writes it.
func Local(t time.Time) time.Time {
	u := t.UTC()
	y := u.Year()
	if !u.Before(lastSunday(y, time.March)) && u.Before(lastSunday(y, time.October)) {
		return u.In(cest)
	}
	return u.In(cet)
}

// lastSunday is 01:00 UTC on the last Sunday of month m of year y.
func lastSunday(y int, m time.Month) time.Time {
	d := time.Date(y, m+1, 1, 1, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	return d.AddDate(0, 0, -int(d.Weekday()))
}
