package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// A day of the demo meter's telegrams, every 10 s: `quarters` gives the
// energies an independent computation gives, to 0.5 Wh, and finds the
// demo's two overruns of 7 kW (the water heater at 7:15 and the car at
// 18:30), not the noon spike or the sauna split over two quarters.
func TestQuartersOfADay(t *testing.T) {
	day := time.Date(2026, 6, 10, 0, 0, 0, 0, time.FixedZone("CEST", 7200))
	m := sim.New(sim.Options{Start: day.Add(-10 * time.Minute)})
	var stream bytes.Buffer
	type reading struct {
		at time.Time
		e  float64
	}
	var readings []reading
	stampRE := regexp.MustCompile(`0-0:1\.0\.0\((\d{12})([SW])\)`)
	importRE := regexp.MustCompile(`1-0:1\.8\.0\(([0-9.]+)\*kWh\)`)
	for at := day.Add(-10 * time.Minute); at.Before(day.Add(24*time.Hour + 10*time.Minute)); at = at.Add(10 * time.Second) {
		tg := m.Telegram(at)
		// The independent side reads the telegram's text itself.
		st, im := stampRE.FindSubmatch(tg), importRE.FindSubmatch(tg)
		local, err := time.Parse("060102150405", string(st[1]))
		if err != nil {
			t.Fatal(err)
		}
		offset := time.Hour
		if st[2][0] == 'S' {
			offset = 2 * time.Hour
		}
		e, _ := strconv.ParseFloat(string(im[1]), 64)
		readings = append(readings, reading{local.Add(-offset), e})
		stream.Write(decrypt.Seal(nil, sim.DemoKey, decrypt.DefaultAuthKey, m.Title(), uint32(len(readings)), tg))
	}
	energyAt := func(b time.Time) float64 {
		for i := 1; i < len(readings); i++ {
			if p, r := readings[i-1], readings[i]; p.at.Before(b) && !r.at.Before(b) {
				return p.e + (r.e-p.e)*b.Sub(p.at).Seconds()/r.at.Sub(p.at).Seconds()
			}
		}
		t.Fatalf("no readings around %v", b)
		return 0
	}

	var out, errb bytes.Buffer
	env := processEnv().With(map[string]string{"SMARTY_KEY": sim.DemoKeyHex})
	if err := run(t.Context(), []string{"quarters", "-reference-power", "7"}, env, &stream, &out, &errb); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	type line struct {
		Meter      string  `json:"meter"`
		Start      string  `json:"start"`
		EnergyKWh  float64 `json:"energy_kwh"`
		AverageKW  float64 `json:"average_kw"`
		OverrunKWh float64 `json:"overrun_kwh"`
		Quality    string  `json:"quality"`
	}
	var overruns []string
	n := 0
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		start, err := time.Parse(time.RFC3339, l.Start)
		if err != nil {
			t.Fatal(err)
		}
		want := energyAt(start.Add(15*time.Minute)) - energyAt(start)
		if math.Abs(l.EnergyKWh-want) > 0.0005 || l.Quality != "measured" || l.Meter != m.ID() {
			t.Errorf("%s: %+v, want %.4f kWh measured", l.Start, l, want)
		}
		if want := math.Max(0, want-7.0/4); math.Abs(l.OverrunKWh-want) > 0.0005 {
			t.Errorf("%s: overrun %v, want %.4f", l.Start, l.OverrunKWh, want)
		}
		if l.OverrunKWh > 0 {
			overruns = append(overruns, start.Format("15:04"))
		}
		n++
	}
	// The day's 96: 23:45 the day before began before the input, 00:00
	// the next day ends after it.
	if n != 96 {
		t.Errorf("%d quarters, want 96", n)
	}
	if strings.Join(overruns, " ") != "07:15 18:30" {
		t.Errorf("overruns at %v, want 07:15 and 18:30", overruns)
	}
	if !strings.Contains(errb.String(), "2 above 7 kW") {
		t.Errorf("summary: %s", errb.String())
	}
}

// Bad arguments are configuration errors.
func TestQuartersArguments(t *testing.T) {
	for _, args := range [][]string{{"-reference-power", "-3"}, {"-reference-power", "seven"}, {"-bogus"}} {
		var out, errb bytes.Buffer
		err := run(t.Context(), append([]string{"quarters"}, args...), processEnv(), strings.NewReader(""), &out, &errb)
		if _, ok := err.(configError); !ok {
			t.Errorf("%v: %v, want a configuration error", args, err)
		}
	}
}
