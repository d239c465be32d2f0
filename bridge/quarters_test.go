package bridge

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/quarter"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// simTelegram is the simulated meter's telegram at t, parsed.
func simTelegram(t *testing.T, m *sim.Meter, at time.Time) *p1.Telegram {
	t.Helper()
	tg, err := p1.Parse(m.Telegram(at))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// Meters are followed independently, each with its own settings; a
// setting takes only a number in range for a meter already read; a
// changed start-up value wins over a saved setting, an unchanged one does
// not.
func TestQuarterBookMeters(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	book := newQuarterBook(dir, quarter.Settings{ReferenceKW: 7})
	a := sim.New(sim.Options{MeterID: "SAG1100000000001", Start: time.Now()})
	b := sim.New(sim.Options{MeterID: "SAG1100000000002", Start: time.Now()})
	start := time.Date(2026, 6, 10, 18, 20, 0, 0, time.FixedZone("CEST", 7200)) // the car charges at 18:30 in the simulated day
	var va, vb quarterView
	for at := start; at.Before(start.Add(40 * time.Minute)); at = at.Add(10 * time.Second) {
		var ok bool
		if va, ok = book.add("a", simTelegram(t, a, at), at, log); !ok {
			t.Fatal("meter a not followed")
		}
		if at.Before(start.Add(20 * time.Minute)) { // b falls silent
			vb, _ = book.add("b", simTelegram(t, b, at), at, log)
		}
	}
	if va.totals.OverrunDay <= 0 || vb.totals.OverrunDay != 0 || va.totals.Last.Start.Format("15:04") != "18:30" || vb.totals.Last.Start.Format("15:04") != "18:15" {
		t.Errorf("a: %+v\nb: %+v", va.totals, vb.totals)
	}
	for _, bad := range []string{"", "abc", "NaN", "-1", "101", "1e400", " 7"} {
		if _, ok := book.set("a", discovery.SettingReferencePower, []byte(bad)); ok {
			t.Errorf("reference power %q taken", bad)
		}
	}
	if _, ok := book.set("a", discovery.SettingOverrunPrice, []byte("11")); ok {
		t.Error("a price of 11 €/kWh taken")
	}
	if _, ok := book.set("unknown", discovery.SettingReferencePower, []byte("7")); ok {
		t.Error("a setting for a meter never read taken")
	}
	if s, ok := book.set("b", discovery.SettingReferencePower, []byte("12")); !ok || s.ReferenceKW != 12 {
		t.Errorf("b: %+v %v", s, ok)
	}
	if err := book.save(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "quarters.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved: %v %v", fi, err)
	}

	same := newQuarterBook(dir, quarter.Settings{ReferenceKW: 7})
	same.load(log)
	if s := same.meters["b"].Settings; s.ReferenceKW != 12 {
		t.Errorf("after a restart b's reference power is %v, want 12 as set", s.ReferenceKW)
	}
	if got, want := same.meters["a"].Tracker.Totals.OverrunDay, va.totals.OverrunDay; math.Abs(got-want) > 1e-12 {
		t.Errorf("a's overrun today %v after a restart, want %v", got, want)
	}
	changed := newQuarterBook(dir, quarter.Settings{ReferenceKW: 9, Price: 0.1})
	changed.load(log)
	if s := changed.meters["b"].Settings; s.ReferenceKW != 9 || s.Price != 0.1 {
		t.Errorf("after a restart with new start-up values b has %+v, want them", s)
	}
}

// BenchmarkQuarterTelegram is the reference power's share of a telegram:
// the reading, the tracker and the packets. It must not allocate.
func BenchmarkQuarterTelegram(bm *testing.B) {
	m := sim.New(sim.Options{Start: time.Now()})
	at := time.Date(2026, 6, 10, 18, 20, 0, 0, time.UTC)
	var tgs []*p1.Telegram
	for i := range 90 {
		tg, err := p1.Parse(m.Telegram(at.Add(time.Duration(i) * 10 * time.Second)))
		if err != nil {
			bm.Fatal(err)
		}
		tgs = append(tgs, tg)
	}
	book := newQuarterBook("", quarter.Settings{ReferenceKW: 7, Price: 0.1})
	topics := newQuarterTopics("smarty", m.ID())
	log := slog.New(slog.DiscardHandler)
	var packets, buf []byte
	i := 0
	bm.ReportAllocs()
	for bm.Loop() {
		v, _ := book.add(m.ID(), tgs[i%len(tgs)], at, log)
		packets, buf = appendQuarter(packets[:0], buf, topics, &v, i%90 == 0)
		i++
	}
}
