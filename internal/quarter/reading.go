package quarter

import (
	"time"

	"github.com/smartybridge/smartybridge/p1"
)

// The objects a reading comes from.
var (
	obisImport = p1.OBIS{A: 1, B: 0, C: 1, D: 8, E: 0} // energy imported, all tariffs
	obisPower  = p1.OBIS{A: 1, B: 0, C: 1, D: 7, E: 0} // power drawn
)

// ReadingOf takes a telegram's reading: its import total and power, and
// the meter's clock, else received. ok is false for a telegram without an
// import total (1-0:1.8.0), which the computation cannot use.
func ReadingOf(tg *p1.Telegram, received time.Time) (r Reading, ok bool) {
	haveImport := false
	for i := range tg.Objects {
		o := &tg.Objects[i]
		switch o.OBIS {
		case obisImport:
			r.Energy, haveImport = kilo(o.Reading(), "kWh", "Wh")
		case obisPower:
			r.Power, _ = kilo(o.Reading(), "kW", "W")
		}
	}
	if !haveImport {
		return Reading{}, false
	}
	if at, ok := tg.Time(); ok {
		r.At, r.Stamped = at, true
	} else {
		r.At = received
	}
	return r, true
}

// kilo is v in the kilo unit, from either unit; ok is false for another
// unit or no number.
func kilo(v p1.Value, kiloUnit, unit string) (float64, bool) {
	f, ok := v.Float()
	switch {
	case !ok:
		return 0, false
	case string(v.Unit) == kiloUnit:
		return f, true
	case string(v.Unit) == unit:
		return f / 1000, true
	}
	return 0, false
}
