package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/quarter"
	"github.com/smartybridge/smartybridge/internal/telegrams"
)

// maxQuarterMeters bounds the meters `quarters` follows in one input.
const maxQuarterMeters = 1000

// runQuarters is `smartybridge quarters`: the energy of every complete
// quarter-hour in P1 captures, one JSON line each.
func runQuarters(ctx context.Context, args []string, env Env, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg, err := loadDecodeConfig(env)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("quarters", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ref := fs.Float64("reference-power", 0, "kW: also print the energy above it in each quarter")
	if err := fs.Parse(args); err != nil {
		return configError{fmt.Errorf("quarters: %v; see smartybridge quarters -h", err)}
	}
	if err := flagsFirst("quarters", fs.Args()); err != nil {
		return err
	}
	if *ref < 0 || *ref > 1000 {
		return configError{fmt.Errorf("quarters: -reference-power %v: want the reference power in kW, such as 7", *ref)}
	}
	in, closeAll, err := openInputs(fs.Args(), stdin)
	if err != nil {
		return configError{err}
	}
	defer closeAll()
	rd, err := telegrams.NewReader(silenceTolerant{ctx, in}, cfg.offlineOptions())
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	c := decodeCounts{noKeyFor: map[decrypt.Title]bool{}, badKeyFor: map[decrypt.Title]bool{}}
	trackers := map[string]*quarter.Tracker{}
	settings := quarter.Settings{ReferenceKW: *ref}
	var line []byte
	quarters, overruns, unstamped, untracked := 0, 0, 0, 0
	overrunKWh := 0.0
	for ctx.Err() == nil {
		f, err := rd.Next()
		if fe, ok := telegrams.AsFrameError(err); ok {
			c.reject(fe, cfg.KeyConfig, stderr)
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				break
			}
			return fmt.Errorf("read input: %w", err)
		}
		c.decoded++
		r, ok := quarter.ReadingOf(f.Telegram, time.Time{})
		if !ok || !r.Stamped {
			unstamped++ // a capture says nothing of when a telegram without clock came
			continue
		}
		meter := string(f.Telegram.MeterID())
		if meter == "" {
			meter = decrypt.Title(f.Origin.SystemTitle).String()
		}
		tr := trackers[meter]
		if tr == nil {
			if len(trackers) >= maxQuarterMeters {
				untracked++
				continue
			}
			tr = &quarter.Tracker{}
			trackers[meter] = tr
		}
		for _, q := range tr.Add(r, settings) {
			if q.Quality == quarter.Incomplete {
				continue // its start was not in the input
			}
			quarters++
			if o := q.Overrun(*ref); o > 0 {
				overruns++
				overrunKWh += o
			}
			line = appendQuarterJSON(line[:0], meter, q, *ref)
			if _, err := out.Write(line); err != nil {
				return err
			}
		}
	}
	if err := out.Flush(); err != nil {
		return err
	}
	meters := "meters"
	if len(trackers) == 1 {
		meters = "meter"
	}
	summary := fmt.Sprintf("smartybridge: %d complete quarter-hours of %d %s from %d telegrams", quarters, len(trackers), meters, c.decoded)
	if *ref > 0 {
		summary += fmt.Sprintf("; %d above %g kW, %.3f kWh in all", overruns, *ref, overrunKWh)
	}
	if unstamped > 0 {
		summary += fmt.Sprintf("; %d telegrams without the meter's clock or import total skipped", unstamped)
	}
	if untracked > 0 {
		summary += fmt.Sprintf("; %d telegrams of meters past the first %d skipped", untracked, maxQuarterMeters)
	}
	fmt.Fprintln(stderr, summary)
	if c.decoded == 0 && rd.Stats().Frames+rd.Stats().Rejected > 0 {
		return errNothingDecoded
	}
	return nil
}

// appendQuarterJSON appends one quarter as a JSON line:
//
//	{"meter":"SAG…","start":"2026-03-29T03:15:00+02:00","energy_kwh":0.4123,"average_kw":1.6492,"overrun_kwh":0,"quality":"measured"}
//
// overrun_kwh only with a reference power.
func appendQuarterJSON(dst []byte, meter string, q quarter.Quarter, referenceKW float64) []byte {
	dst = append(dst, `{"meter":`...)
	dst = strconv.AppendQuote(dst, meter)
	dst = append(dst, `,"start":"`...)
	dst = q.Start.AppendFormat(dst, time.RFC3339)
	dst = append(dst, `","energy_kwh":`...)
	dst = appendKWh(dst, q.Energy)
	dst = append(dst, `,"average_kw":`...)
	dst = appendKWh(dst, q.AverageKW())
	if referenceKW > 0 {
		dst = append(dst, `,"overrun_kwh":`...)
		dst = appendKWh(dst, q.Overrun(referenceKW))
	}
	dst = append(dst, `,"quality":"`...)
	dst = append(dst, q.Quality.String()...)
	return append(dst, "\"}\n"...)
}

// appendKWh writes v to 0.1 Wh (or W), without trailing zeros.
func appendKWh(dst []byte, v float64) []byte {
	return strconv.AppendFloat(dst, float64(int64(v*1e4+0.5))/1e4, 'f', -1, 64)
}
