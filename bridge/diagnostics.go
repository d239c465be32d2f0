package bridge

import (
	"strconv"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
)

// rejectedKeyOrder is telegrams.Reasons in the order of their diagnostics
// keys (sorted, see appendJSON).
var rejectedKeyOrder = [...]telegrams.Reason{telegrams.Authentication, telegrams.CRC, telegrams.Malformed, telegrams.NoKey, telegrams.Replayed}

// diagnostics are the values of an instance's diagnostics JSON
// (discovery.BridgeKeys). Which keys appear depends on the mode; the
// reporter builds them every second, so they are a plain struct written by
// appendJSON into a reused buffer, not a map through encoding/json (6 % of
// a bridge's CPU samples before).
type diagnostics struct {
	mode    discovery.Mode
	problem discovery.Problem
	// bridge and decrypt mode
	telegrams    int64
	rejected     telegrams.Counts
	lastTelegram time.Time // zero: null (Home Assistant: unknown)
	// bridge and forward mode
	bytesSkipped int64
	// decrypt mode
	metersServed    int
	framesPerMinute float64
	// forward mode
	framesForwarded                 int64
	framesQueued, framesUnconfirmed int
}

// appendJSON appends d as a JSON object with its keys in the order
// encoding/json gives a map's (sorted), so that the payload is byte for
// byte what it was when it was one.
func (d *diagnostics) appendJSON(b []byte) []byte {
	first := true
	key := func(k string) {
		if first {
			b = append(b, '{')
			first = false
		} else {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, '"', ':')
	}
	num := func(k string, v int64) {
		key(k)
		b = strconv.AppendInt(b, v, 10)
	}
	counted := d.mode.Reads()
	lastTelegram := func() {
		key("last_telegram")
		if d.lastTelegram.IsZero() {
			b = append(b, "null"...)
			return
		}
		b = append(b, '"')
		b = d.lastTelegram.UTC().AppendFormat(b, time.RFC3339)
		b = append(b, '"')
	}
	if d.mode != discovery.ModeDecrypt {
		num("bytes_skipped", d.bytesSkipped)
	}
	if d.mode == discovery.ModeForward {
		num("frames_forwarded", d.framesForwarded)
	}
	if d.mode == discovery.ModeDecrypt {
		// Frames per minute stay far from where encoding/json writes an
		// exponent (below 1e-6, from 1e21).
		key("frames_per_minute")
		b = strconv.AppendFloat(b, d.framesPerMinute, 'f', -1, 64)
	}
	if d.mode == discovery.ModeForward {
		num("frames_queued", int64(d.framesQueued))
		num("frames_unconfirmed", int64(d.framesUnconfirmed))
	}
	if counted {
		lastTelegram()
	}
	if d.mode == discovery.ModeDecrypt {
		num("meters_served", int64(d.metersServed))
	}
	key("problem")
	b = append(b, '"')
	b = append(b, d.problem...)
	b = append(b, '"')
	if counted {
		for _, r := range rejectedKeyOrder {
			num(r.Diagnostic(), d.rejected[r])
		}
		num("telegrams", d.telegrams)
	}
	return append(b, '}')
}
