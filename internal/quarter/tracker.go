package quarter

import "time"

// Settings are a household's: its reference power and the price of
// energy above it. Zero: not set.
type Settings struct {
	ReferenceKW float64 `json:"reference_kw"`
	Price       float64 `json:"price"` // €/kWh
}

// Totals are what the finished quarters add up to, per local day and
// month.
type Totals struct {
	Day          int       `json:"day"`   // 20060102, the meter's local date
	Month        int       `json:"month"` // 200601
	OverrunDay   float64   `json:"overrun_day"`
	OverrunMonth float64   `json:"overrun_month"`
	CostDay      float64   `json:"cost_day"`
	CostMonth    float64   `json:"cost_month"`
	PeakMonth    float64   `json:"peak_month"` // kW, the month's highest quarter average
	PeakStart    time.Time `json:"peak_start"`
	Last         Quarter   `json:"last"` // the last finished quarter
	HaveLast     bool      `json:"have_last"`
}

// roll starts a new day or month when at is past the ones counted.
func (t *Totals) roll(at time.Time) {
	day, month := dateKeys(at)
	if day > t.Day {
		t.Day, t.OverrunDay, t.CostDay = day, 0, 0
	}
	if month > t.Month {
		t.Month, t.OverrunMonth, t.CostMonth, t.PeakMonth, t.PeakStart = month, 0, 0, 0, time.Time{}
	}
}

// dateKeys are the meter's local date and month of t as numbers
// (20060102, 200601): compared without formatting, so without allocation.
func dateKeys(t time.Time) (day, month int) {
	y, m, d := Local(t).Date()
	month = y*100 + int(m)
	return month*100 + d, month
}

// add counts a finished quarter.
func (t *Totals) add(q Quarter, s Settings) {
	t.roll(q.Start)
	if day, _ := dateKeys(q.Start); day < t.Day {
		t.Last, t.HaveLast = q, true
		return // a quarter of a day already past (after a gap): only shown
	}
	over := q.Overrun(s.ReferenceKW)
	t.OverrunDay += over
	t.OverrunMonth += over
	t.CostDay += over * s.Price
	t.CostMonth += over * s.Price
	if q.AverageKW() > t.PeakMonth {
		t.PeakMonth, t.PeakStart = q.AverageKW(), q.Start
	}
	t.Last, t.HaveLast = q, true
}

// Tracker is all that is kept of one meter: its quarters, their totals,
// and whether an overrun is expected. Its exported fields are its state
// (encoding/json).
type Tracker struct {
	Meter    Meter  `json:"meter"`
	Totals   Totals `json:"totals"`
	Expected bool   `json:"expected"`
	done     []Quarter
}

// hysteresis: an expected overrun is called off only when the projection
// falls this far below the reference power, so that it does not flap.
const hysteresis = 0.05

// minElapsed: the first minute of a quarter says too little to project.
const minElapsed = time.Minute

// Add takes the next reading and returns the quarters it finished (valid
// until the next call).
func (t *Tracker) Add(r Reading, s Settings) []Quarter {
	t.done = t.Meter.Add(t.done[:0], r)
	for _, q := range t.done {
		t.Totals.add(q, s)
	}
	l, _ := t.Meter.Live()
	t.Totals.roll(l.Start)
	switch {
	case s.ReferenceKW <= 0 || l.Elapsed < minElapsed:
		t.Expected = false
	case !t.Expected && l.Projected > s.ReferenceKW:
		t.Expected = true
	case t.Expected && l.Projected < s.ReferenceKW*(1-hysteresis):
		t.Expected = false
	}
	return t.done
}
