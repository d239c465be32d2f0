package quarter

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var noon = time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC) // 12:00 CEST

// feed makes readings every step from start for d, drawing power(t) kW,
// from an import total of e0 kWh, and returns the quarters they finish.
func feed(m *Meter, start time.Time, d, step time.Duration, e0 float64, power func(time.Duration) float64) ([]Quarter, float64) {
	var done []Quarter
	e := e0
	for t := time.Duration(0); t <= d; t += step {
		if t > 0 {
			e += power(t-step) * step.Hours()
		}
		done = m.Add(done, Reading{At: start.Add(t), Stamped: true, Energy: e, Power: power(t)})
	}
	return done, e
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// The case the community implementations get wrong: 11 kW for 5 minutes
// then 0.5 kW for 10 is 1.0 kWh in the quarter, no overrun at 7 kW (they
// report 0.33 kWh).
func TestSpikeThenQuietIsNoOverrun(t *testing.T) {
	var m Meter
	power := func(t time.Duration) float64 {
		if t >= 10*time.Second && t < 10*time.Second+5*time.Minute {
			return 11
		}
		return 0.5
	}
	done, _ := feed(&m, noon.Add(-10*time.Second), 15*time.Minute+20*time.Second, 10*time.Second, 1000, power)
	if len(done) != 2 {
		t.Fatalf("%d quarters, want 2 (the one before noon, incomplete, and noon's)", len(done))
	}
	q := done[1]
	if !q.Start.Equal(noon) || q.Start.Format("15:04 -07:00") != "12:00 +02:00" {
		t.Errorf("start %v, want 12:00 CEST", q.Start)
	}
	if !near(q.Energy, 1.0) || q.Quality != Measured || q.Overrun(7) != 0 || !near(q.AverageKW(), 4) {
		t.Errorf("quarter %+v (overrun %v), want 1.0 kWh measured, no overrun", q, q.Overrun(7))
	}
	if done[0].Quality != Incomplete {
		t.Errorf("the quarter whose start was not seen is %v", done[0].Quality)
	}
}

// E(B) is interpolated between the readings around the boundary.
func TestBoundaryInterpolation(t *testing.T) {
	var m Meter
	m.Add(nil, Reading{At: noon.Add(-4 * time.Minute), Stamped: true, Energy: 9.9})
	m.Add(nil, Reading{At: noon.Add(-5 * time.Second), Stamped: true, Energy: 10.0})
	done := m.Add(nil, Reading{At: noon.Add(5 * time.Second), Stamped: true, Energy: 10.01})
	if len(done) != 1 || !near(done[0].Energy, 0.105) || done[0].Quality != Incomplete {
		t.Fatalf("%+v, want 0.105 kWh (10.005 − 9.9), incomplete", done)
	}
	done = m.Add(nil, Reading{At: noon.Add(15 * time.Minute), Stamped: true, Energy: 10.5})
	if len(done) != 1 || !near(done[0].Energy, 0.495) || done[0].Quality != Measured {
		t.Fatalf("%+v, want 0.495 kWh measured (a reading right at the boundary)", done)
	}
}

// A gap longer than 60 s across a boundary spreads its energy over the
// quarters it spans: estimated, and the total stays exact.
func TestGapIsEstimated(t *testing.T) {
	var m Meter
	m.Add(nil, Reading{At: noon.Add(-time.Minute), Stamped: true, Energy: 100})
	m.Add(nil, Reading{At: noon.Add(time.Minute), Stamped: true, Energy: 100.2}) // 2 min around 12:00
	done := m.Add(nil, Reading{At: noon.Add(61 * time.Minute), Stamped: true, Energy: 106.2})
	if len(done) != 4 {
		t.Fatalf("%d quarters, want 4", len(done))
	}
	sum := 0.0
	for _, q := range done {
		sum += q.Energy
		if q.Quality != Estimated {
			t.Errorf("%v: %v, want estimated", q.Start, q.Quality)
		}
	}
	if !near(done[1].Energy, 1.5) || !near(sum, 106.2-100.1-0.1) {
		t.Errorf("energies %+v (sum %v)", done, sum)
	}
}

// The clock of the meter decides, and the days the clock changes have 92
// and 100 quarters.
func TestDaylightSavingDays(t *testing.T) {
	for _, tt := range []struct {
		day      string
		quarters int
	}{{"2026-03-29", 92}, {"2026-10-25", 100}, {"2026-06-10", 96}} {
		start, _ := time.Parse(time.DateOnly, tt.day)
		var m Meter
		done, _ := feed(&m, start.Add(-3*time.Hour), 30*time.Hour, time.Minute, 0, func(time.Duration) float64 { return 1 })
		n := 0
		for _, q := range done {
			if q.Start.Format(time.DateOnly) == tt.day {
				n++
				if !near(q.Energy, 0.25) {
					t.Errorf("%s %v: %v kWh, want 0.25", tt.day, q.Start, q.Energy)
				}
			}
		}
		if n != tt.quarters {
			t.Errorf("%s: %d quarters, want %d", tt.day, n, tt.quarters)
		}
	}
	// Across the change in March: 01:45 CET is followed by 03:00 CEST.
	at := time.Date(2026, 3, 29, 0, 45, 0, 0, time.UTC)
	if a, b := Local(at).Format("15:04 -07:00"), Local(at.Add(Length)).Format("15:04 -07:00"); a != "01:45 +01:00" || b != "03:00 +02:00" {
		t.Errorf("quarters %s then %s", a, b)
	}
}

// Without the meter's clock the receive time counts, and the quarter is
// estimated.
func TestNoClockIsEstimated(t *testing.T) {
	var m Meter
	m.Add(nil, Reading{At: noon.Add(-20 * time.Second), Stamped: true, Energy: 1})
	m.Add(nil, Reading{At: noon.Add(-10 * time.Second), Stamped: true, Energy: 1})
	done := m.Add(nil, Reading{At: noon.Add(time.Second), Stamped: false, Energy: 1.1})
	m.Add(nil, Reading{At: noon.Add(10 * time.Minute), Stamped: true, Energy: 1.2})
	done = m.Add(done, Reading{At: noon.Add(15*time.Minute + 5*time.Second), Stamped: true, Energy: 1.3})
	if len(done) != 2 || done[1].Quality != Estimated {
		t.Errorf("%+v: the quarter started by a reading without clock should be estimated", done)
	}
}

// A total that goes down (a meter replaced) and a clock that goes back
// start again: the running quarter is not counted, the next is
// incomplete, nothing is negative.
func TestResetAndClockBack(t *testing.T) {
	for name, second := range map[string]Reading{
		"total down": {At: noon.Add(5*time.Minute + 7*time.Second), Stamped: true, Energy: 3},
		"clock back": {At: noon.Add(-time.Hour + 7*time.Second), Stamped: true, Energy: 500.2},
		"clock jump": {At: noon.AddDate(1, 0, 0).Add(7 * time.Second), Stamped: true, Energy: 500.3},
	} {
		var m Meter
		m.Add(nil, Reading{At: noon.Add(-5 * time.Minute), Stamped: true, Energy: 500})
		m.Add(nil, Reading{At: noon.Add(time.Minute), Stamped: true, Energy: 500.1})
		done := m.Add(nil, second)
		next := second
		next.At, next.Energy = second.At.Add(20*time.Minute), second.Energy+0.5
		done = m.Add(done, next)
		if len(done) != 1 || done[0].Quality != Incomplete || done[0].Energy < 0 || done[0].Energy > 0.5 {
			t.Errorf("%s: %+v, want one incomplete quarter of at most 0.5 kWh", name, done)
		}
	}
}

// Property: the quarters' energies sum to the difference of the import
// total at the last boundary and at the first reading, whatever the
// reading times and gaps.
func TestQuartersSumToTheTotal(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var m Meter
		at, e := noon.Add(time.Duration(rnd.IntN(3600))*time.Second), rnd.Float64()*1e5
		first := e
		var done []Quarter
		var prev Reading
		lastBoundaryE := e
		for range 50 + rnd.IntN(500) {
			r := Reading{At: at, Stamped: rnd.IntN(10) > 0, Energy: e}
			if prev.At.IsZero() {
				lastBoundaryE = e
			} else {
				// The import total at the last boundary at or before r, by
				// interpolation: what the quarters must add up to.
				if b := Floor(r.At); b.After(prev.At) {
					lastBoundaryE = prev.Energy + (r.Energy-prev.Energy)*float64(b.Sub(prev.At))/float64(r.At.Sub(prev.At))
				}
			}
			done = m.Add(done, r)
			prev = r
			gap := time.Duration(1+rnd.IntN(30)) * time.Second
			if rnd.IntN(20) == 0 {
				gap = time.Duration(rnd.IntN(4*3600)) * time.Second
			}
			at = at.Add(gap)
			e += rnd.Float64() * 12 * gap.Hours()
		}
		sum := 0.0
		for _, q := range done {
			sum += q.Energy
		}
		if len(done) > 0 && math.Abs(sum-(lastBoundaryE-first)) > 1e-6 {
			t.Fatalf("quarters sum to %v, the total moved %v", sum, lastBoundaryE-first)
		}
	}
}

// A restart with saved state goes on as if there had been none.
func TestStateSurvivesARestart(t *testing.T) {
	power := func(t time.Duration) float64 { return 3 + 5*math.Sin(float64(t)/float64(7*time.Minute)) }
	var whole Tracker
	var a Tracker
	s := Settings{ReferenceKW: 3, Price: 0.1139}
	var wantQ, gotQ []Quarter
	e := 20.0
	step := 10 * time.Second
	for i := range 400 {
		r := Reading{At: noon.Add(time.Duration(i) * step), Stamped: true, Energy: e, Power: power(time.Duration(i) * step)}
		e += r.Power * step.Hours()
		wantQ = append(wantQ, whole.Add(r, s)...)
		if i == 123 { // mid-quarter: saved and loaded
			b, err := json.Marshal(&a)
			if err != nil {
				t.Fatal(err)
			}
			a = Tracker{}
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatal(err)
			}
		}
		gotQ = append(gotQ, a.Add(r, s)...)
	}
	if len(gotQ) != len(wantQ) {
		t.Fatalf("%d quarters after a restart, %d without", len(gotQ), len(wantQ))
	}
	for i := range wantQ {
		if !gotQ[i].Start.Equal(wantQ[i].Start) || !near(gotQ[i].Energy, wantQ[i].Energy) || gotQ[i].Quality != wantQ[i].Quality {
			t.Errorf("quarter %d: %+v, want %+v", i, gotQ[i], wantQ[i])
		}
	}
	if !near(a.Totals.OverrunDay, whole.Totals.OverrunDay) || a.Totals.OverrunDay == 0 || !near(a.Totals.CostDay, a.Totals.OverrunDay*0.1139) {
		t.Errorf("totals %+v, want %+v with an overrun", a.Totals, whole.Totals)
	}
}

// Live: the projection, the power still allowed, and an expected overrun
// that does not flap.
func TestLiveProjection(t *testing.T) {
	var tr Tracker
	s := Settings{ReferenceKW: 7}
	e := 0.0
	add := func(at time.Duration, kw float64) {
		tr.Add(Reading{At: noon.Add(at), Stamped: true, Energy: e, Power: kw}, s)
	}
	add(0, 8)
	e += 8 * (30 * time.Second).Hours()
	add(30*time.Second, 8)
	if tr.Expected {
		t.Error("expected within the first minute")
	}
	l, _ := tr.Meter.Live()
	if !near(l.Projected, 8) || !near(l.Allowed(7), (1.75-l.Energy)/(14.5/60)) {
		t.Errorf("live %+v, allowed %v", l, l.Allowed(7))
	}
	e += 8 * (60 * time.Second).Hours()
	add(90*time.Second, 8)
	if !tr.Expected {
		t.Error("8 kW against 7 kW: an overrun should be expected")
	}
	add(90*time.Second+time.Millisecond, 6.9) // the projection just under 7 kW
	if !tr.Expected {
		t.Error("the expectation flapped off just under the reference")
	}
	add(90*time.Second+2*time.Millisecond, 0)
	if tr.Expected {
		t.Error("still expected with nothing drawn")
	}
	if (Live{Energy: 2, Elapsed: time.Minute}).Allowed(7) != 0 {
		t.Error("allowed power after the quarter's share is used up should be 0")
	}
}

// Totals: per local day and month, with the month's peak.
func TestTotalsRollOver(t *testing.T) {
	var tr Tracker
	s := Settings{ReferenceKW: 4, Price: 0.2}
	e := 0.0
	start := time.Date(2026, 3, 31, 21, 0, 0, 0, time.UTC) // 23:00 CEST, the last day of March
	for i := range 4 * 60 {
		at := start.Add(time.Duration(i) * time.Minute)
		kw := 2.0
		if i < 15 || (i >= 90 && i < 105) {
			kw = 8 // one 8 kW quarter in March, one on April 1st
		}
		tr.Add(Reading{At: at, Stamped: true, Energy: e, Power: kw}, s)
		e += kw / 60
	}
	if tr.Totals.Day != 20260401 || tr.Totals.Month != 202604 {
		t.Fatalf("day %d month %d", tr.Totals.Day, tr.Totals.Month)
	}
	if !near(tr.Totals.OverrunDay, 1) || !near(tr.Totals.OverrunMonth, 1) || !near(tr.Totals.CostMonth, 0.2) || !near(tr.Totals.PeakMonth, 8) {
		t.Errorf("totals %+v, want April's one overrun of 1 kWh, peak 8 kW", tr.Totals)
	}
}

// BenchmarkTrackerAdd is the per-telegram work: it must not allocate.
func BenchmarkTrackerAdd(b *testing.B) {
	var tr Tracker
	s := Settings{ReferenceKW: 7, Price: 0.1}
	at, e := noon, 0.0
	b.ReportAllocs()
	for b.Loop() {
		tr.Add(Reading{At: at, Stamped: true, Energy: e, Power: 3}, s)
		at = at.Add(10 * time.Second)
		e += 3 * (10 * time.Second).Hours()
	}
}
