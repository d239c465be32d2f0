package bridge

import (
	"unicode/utf8"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/p1"
)

// AppendState appends the state payload of o: the plain value, RFC 3339
// for timestamps, decoded text for identifiers and messages, as Home
// Assistant keeps it: an empty text is one space (an empty retained
// payload would delete the state; discovery trims it back to empty), and
// a text is cut at discovery.MaxState characters (Home Assistant drops
// longer states; AppendFullText carries the whole).
func AppendState(dst []byte, o *p1.Object) []byte {
	if v := o.Reading(); !o.OBIS.HexText() {
		switch {
		case v.IsNumber():
			return v.AppendNumber(dst)
		case v.IsTimestamp():
			if t, ok := v.AppendRFC3339(dst); ok {
				return t
			}
		}
	}
	start := len(dst)
	dst = AppendFullText(dst, o)
	switch text := dst[start:]; {
	case len(text) == 0:
		return append(dst, ' ')
	case len(text) > discovery.MaxState && utf8.RuneCount(text) > discovery.MaxState:
		cut, n := start, 0
		for i := range string(text) {
			if n == discovery.MaxState-1 {
				cut = start + i
				break
			}
			n++
		}
		return append(dst[:cut], "…"...)
	}
	return dst
}

// AppendFullText appends the text of o: decoded for identifiers and
// messages, else as the telegram has it.
func AppendFullText(dst []byte, o *p1.Object) []byte {
	v := o.Reading()
	if o.OBIS.HexText() {
		if t, ok := v.AppendHexText(dst); ok {
			return t
		}
	}
	return append(dst, v.Text...)
}

// TopicSafe replaces what may not stand in one MQTT topic level (and what
// Home Assistant does not accept in discovery ids) with '_'.
func TopicSafe(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			out[i] = '_'
		}
	}
	return string(out)
}
