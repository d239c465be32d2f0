package sim

import (
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

func TestFramesDecodeAndRegistersGrow(t *testing.T) {
	start := time.Date(2026, 6, 21, 0, 0, 0, 0, time.UTC)
	m := New(Options{Start: start, Seed: 1, Counter: 100})
	o, err := decrypt.NewOpener(decrypt.Options{Key: &DemoKey})
	if err != nil {
		t.Fatal(err)
	}
	var last struct{ imp, exp, gas float64 }
	var maxExport, maxImport float64
	for i := range 24 * 6 {
		at := start.Add(time.Duration(i) * 10 * time.Minute)
		frame := m.Frame(nil, at)
		plain, h, err := o.Open(nil, frame)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if h.Counter != uint32(100+i) || h.Title != m.Title() {
			t.Fatalf("frame %d: counter %d title %v", i, h.Counter, h.Title)
		}
		tg, err := p1.Parse(plain)
		if err != nil || len(tg.Malformed) > 0 || !tg.HasCRC {
			t.Fatalf("frame %d: %v %v", i, err, tg.Malformed)
		}
		if string(tg.MeterID()) != "SAG1100000000001" {
			t.Fatalf("meter %q", tg.MeterID())
		}
		vals := map[string]float64{}
		for _, ob := range tg.Objects {
			if f, ok := ob.Reading().Float(); ok {
				vals[ob.OBIS.String()] = f
			}
		}
		imp, exp, gas := vals["1-0:1.8.0"], vals["1-0:2.8.0"], vals["0-1:24.2.1"]
		if imp < last.imp || exp < last.exp || gas < last.gas {
			t.Fatalf("frame %d: a register went down", i)
		}
		last.imp, last.exp, last.gas = imp, exp, gas
		maxExport = max(maxExport, vals["1-0:2.7.0"])
		maxImport = max(maxImport, vals["1-0:1.7.0"])
		if ts, _ := tg.Objects[1].Values[0].AppendRFC3339(nil); len(ts) == 0 || ts[len(ts)-6:][2] != '2' {
			t.Fatalf("frame %d: June timestamp %q is not summer time", i, ts)
		}
	}
	if maxExport < 1 || maxImport < 1 {
		t.Errorf("no daily curve: max import %.3f kW, max export %.3f kW", maxImport, maxExport)
	}
}

func TestWinterTime(t *testing.T) {
	m := New(Options{Start: time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)})
	tg, err := p1.Parse(m.Telegram(time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(tg.Objects[1].Values[0].Text); got != "260110130000W" {
		t.Errorf("timestamp %s, want 260110130000W", got)
	}
}

func TestDemoKeyHex(t *testing.T) {
	k, err := decrypt.ParseKey(DemoKeyHex)
	if err != nil || k != DemoKey {
		t.Errorf("DemoKeyHex does not spell DemoKey")
	}
}
