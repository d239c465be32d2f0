package bridge

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
)

// asMap is the diagnostics as the map they were marshalled from before.
func asMap(d diagnostics) map[string]any {
	m := map[string]any{"problem": string(d.problem)}
	if d.mode == "bridge" || d.mode == "decrypt" {
		m["telegrams"], m["rejected_authentication"], m["rejected_no_key"] = d.telegrams, d.rejected[telegrams.Authentication], d.rejected[telegrams.NoKey]
		m["rejected_crc"], m["rejected_malformed"], m["rejected_replayed"] = d.rejected[telegrams.CRC], d.rejected[telegrams.Malformed], d.rejected[telegrams.Replayed]
		m["last_telegram"] = nil
		if !d.lastTelegram.IsZero() {
			m["last_telegram"] = d.lastTelegram.UTC().Format(time.RFC3339)
		}
	}
	switch d.mode {
	case "bridge":
		m["bytes_skipped"] = d.bytesSkipped
	case "decrypt":
		m["meters_served"], m["frames_per_minute"] = d.metersServed, d.framesPerMinute
	case "forward":
		m["frames_forwarded"], m["bytes_skipped"], m["frames_queued"], m["frames_unconfirmed"] = d.framesForwarded, d.bytesSkipped, d.framesQueued, d.framesUnconfirmed
	}
	return m
}

// TestDiagnosticsJSON: the payload is byte for byte what encoding/json
// made of the map before, in every mode.
func TestDiagnosticsJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		d := diagnostics{
			mode: []discovery.Mode{discovery.ModeBridge, discovery.ModeDecrypt, discovery.ModeForward}[i%3], problem: []discovery.Problem{discovery.ProblemOK, discovery.ProblemNoData, discovery.ProblemWrongKey}[i%3],
			telegrams: rnd.Int64N(1e9), rejected: telegrams.Counts{telegrams.Authentication: rnd.Int64N(10), telegrams.NoKey: rnd.Int64N(10), telegrams.CRC: rnd.Int64N(10),
				telegrams.Malformed: rnd.Int64N(10), telegrams.Replayed: rnd.Int64N(10)}, bytesSkipped: rnd.Int64N(1e12),
			metersServed: rnd.IntN(5000), framesPerMinute: float64(rnd.IntN(600000)) / float64(1+rnd.IntN(60)),
			framesForwarded: rnd.Int64N(1e9), framesQueued: rnd.IntN(10000), framesUnconfirmed: rnd.IntN(100),
		}
		if i%4 != 0 {
			d.lastTelegram = time.Unix(rnd.Int64N(2e9), rnd.Int64N(1e9))
		}
		want, _ := json.Marshal(asMap(d))
		if got := d.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("%s mode:\n got %s\nwant %s", d.mode, got, want)
		}
	}
}
