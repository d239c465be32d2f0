package telegrams

import (
	"errors"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

// Reason is the class of a frame that did not decode. It has one spelling
// per audience: String for logs and decode's summary, Metric for the
// Prometheus label, Diagnostic for the Home Assistant diagnostics key.
type Reason uint8

// The reasons a frame is rejected. NotAFrame is a false header (the
// scanner searches its bytes again); it is counted nowhere.
const (
	NotAFrame Reason = iota
	Authentication
	NoKey
	CRC
	Malformed
	Replayed // authentic, but its counter did not grow (decided by the caller)
	numReasons
)

// Reasons lists the reasons that are counted, in the order the metrics
// and diagnostics show them.
var Reasons = [...]Reason{Authentication, NoKey, CRC, Malformed, Replayed}

var reasonNames = [numReasons]struct{ text, metric, diagnostic string }{
	NotAFrame:      {"header", "", ""},
	Authentication: {"authentication", "authentication", "rejected_authentication"},
	NoKey:          {"no key", "no_key", "rejected_no_key"},
	CRC:            {"crc", "crc", "rejected_crc"},
	Malformed:      {"malformed", "malformed", "rejected_malformed"},
	Replayed:       {"replayed", "replayed", "rejected_replayed"},
}

func (r Reason) String() string { return reasonNames[r].text }

// Metric is the reason's label value in smartybridge_frames_rejected_total.
func (r Reason) Metric() string { return reasonNames[r].metric }

// Diagnostic is the reason's key in the diagnostics payload.
func (r Reason) Diagnostic() string { return reasonNames[r].diagnostic }

// ReasonOf classifies an error of Decoder.Decode.
func ReasonOf(err error) Reason {
	switch {
	case errors.Is(err, decrypt.ErrAuth):
		return Authentication
	case errors.Is(err, decrypt.ErrNoKey):
		return NoKey
	case errors.Is(err, p1.ErrCRC):
		return CRC
	case errors.Is(err, p1.ErrMalformed):
		return Malformed
	default:
		return NotAFrame
	}
}

// Counts are rejected frames by reason.
type Counts [numReasons]int64

// FramingError reports whether err means the frame's bytes may not have
// been a frame after all, so that the scanner should resync one byte after
// its start. A frame that authenticated but holds a bad telegram was
// framed right; one of a meter without key (line noise shaped like a
// header, as often as not) was not checked, so it is searched again.
func FramingError(err error) bool {
	return errors.Is(err, decrypt.ErrAuth) || errors.Is(err, decrypt.ErrHeader) || errors.Is(err, decrypt.ErrShort) ||
		errors.Is(err, decrypt.ErrNoKey)
}
