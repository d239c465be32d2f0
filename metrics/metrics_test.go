package metrics

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func snapshot(meters int) Snapshot {
	s := Snapshot{Version: "1.2.3", Connected: true, BytesRead: 10, Rejected: map[string]int64{"crc": 1, "authentication": 2}}
	for i := range meters {
		s.Meters = append(s.Meters, Meter{ID: strings.Repeat("M", 3) + string(rune('A'+i%26)) + time.Duration(i).String(), Telegrams: int64(i), Last: time.Unix(1_800_000_000, 0)})
	}
	return s
}

// TestMeterLabelBounded: a decryptor of many meters writes at most
// MaxMeters+1 series per meter metric, the rest summed under "other".
func TestMeterLabelBounded(t *testing.T) {
	var b strings.Builder
	Write(&b, snapshot(250))
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	f := fams["smartybridge_telegrams_total"]
	if n := len(f.Metric); n != MaxMeters+1 {
		t.Fatalf("%d series, want %d", n, MaxMeters+1)
	}
	var sum float64
	for _, m := range f.Metric {
		sum += m.Counter.GetValue()
	}
	if want := float64(250 * 249 / 2); sum != want {
		t.Errorf("telegrams sum to %v, want %v: none lost in 'other'", sum, want)
	}
}

func BenchmarkWrite(b *testing.B) {
	s := snapshot(1)
	b.ReportAllocs()
	for b.Loop() {
		Write(io.Discard, s)
	}
}

func BenchmarkWriteOwnOnly(b *testing.B) {
	s := snapshot(1)
	b.ReportAllocs()
	for b.Loop() {
		writeOwn(io.Discard, s)
	}
}
