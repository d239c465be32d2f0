package p1

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

// Errors of Parse. Test them with errors.Is.
var (
	// ErrCRC: the telegram's CRC does not match its bytes; the whole
	// telegram is rejected.
	ErrCRC = errors.New("telegram CRC mismatch")
	// ErrMalformed: the bytes do not follow the telegram grammar.
	ErrMalformed = errors.New("malformed telegram")
)

// SyntaxError reports a line that does not follow the grammar. It wraps
// ErrMalformed.
type SyntaxError struct {
	Line int    // 1-based; the identification line is line 1
	Text string // the offending line, cut to 80 bytes
	Msg  string // what is wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("telegram line %d: %s: %q", e.Line, e.Msg, e.Text)
}

// Unwrap makes errors.Is(err, ErrMalformed) hold.
func (e *SyntaxError) Unwrap() error { return ErrMalformed }

func syntaxError(line int, text []byte, msg string) *SyntaxError {
	if len(text) > 80 {
		text = text[:80]
	}
	return &SyntaxError{Line: line, Text: string(text), Msg: msg}
}

// OBIS is an object code A-B:C.D.E (the F group is never sent on P1).
type OBIS struct{ A, B, C, D, E uint8 }

// String writes the code as A-B:C.D.E.
func (o OBIS) String() string { return string(o.AppendText(nil)) }

// AppendText appends the code as A-B:C.D.E.
func (o OBIS) AppendText(dst []byte) []byte {
	dst = appendUint8(dst, o.A)
	dst = append(dst, '-')
	dst = appendUint8(dst, o.B)
	dst = append(dst, ':')
	dst = appendUint8(dst, o.C)
	dst = append(dst, '.')
	dst = appendUint8(dst, o.D)
	dst = append(dst, '.')
	return appendUint8(dst, o.E)
}

func appendUint8(dst []byte, v uint8) []byte {
	switch {
	case v >= 100:
		return append(dst, '0'+v/100, '0'+v/10%10, '0'+v%10)
	case v >= 10:
		return append(dst, '0'+v/10, '0'+v%10)
	}
	return append(dst, '0'+v)
}

// ParseOBIS reads A-B:C.D.E.
func ParseOBIS(s string) (OBIS, error) {
	o, n, ok := parseOBIS([]byte(s))
	if !ok || n != len(s) {
		return OBIS{}, fmt.Errorf("%q is not an OBIS code (want A-B:C.D.E, such as 1-0:1.8.0)", s)
	}
	return o, nil
}

// HexText reports whether the object's value is text sent as hex digits:
// meter ids (0-0:42.0.0, 0-0:96.1.1, 0-n:96.1.0) and messages (96.13.x).
func (o OBIS) HexText() bool {
	return o.C == 42 && o.D == 0 && o.E == 0 || o.C == 96 && o.D == 1 && o.E <= 1 || o.C == 96 && o.D == 13
}

// Object is one line of a telegram: a code and its values.
type Object struct {
	OBIS   OBIS
	Code   []byte  // the code as the telegram writes it ("1-0:1.8.0")
	Line   int     // line number in the telegram
	Values []Value // at least one
}

// Reading returns the value that is the object's reading: for an M-Bus
// line "(time)(value*unit)" the second one; for a DSMR 2.2/3 gas line
// "(time)(status)(period)(count)(code)(unit)" followed by "(value)" the
// last value, with the unit the sixth group names; else the first.
func (o *Object) Reading() Value {
	switch {
	case o.IsMBus():
		return o.Values[1]
	case o.isLegacyMBus():
		return Value{Text: o.Values[len(o.Values)-1].Text, Unit: o.Values[5].Text}
	}
	return o.Values[0]
}

// IsMBus reports whether the object is an M-Bus reading: a capture time
// followed by one value.
func (o *Object) IsMBus() bool {
	return len(o.Values) == 2 && o.Values[0].IsTimestamp() && !o.Values[1].IsTimestamp()
}

// isLegacyMBus reports whether the object is a DSMR 2.2/3 M-Bus reading
// (0-n:24.3.0): a capture time YYMMDDhhmmss without S/W, status, period,
// count, the value's code and its unit, then at least one value, usually
// on the next line.
func (o *Object) isLegacyMBus() bool {
	if o.OBIS.C != 24 || o.OBIS.D != 3 || o.OBIS.E != 0 || len(o.Values) < 7 || o.Values[5].Unit != nil {
		return false
	}
	return isDigits(o.Values[0].Text, 12) && o.Values[len(o.Values)-1].IsNumber()
}

func isDigits(b []byte, n int) bool {
	if len(b) != n {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// AppendTime appends the capture time of an M-Bus reading as RFC 3339;
// ok is false for other objects, unused channels and invalid times.
func (o *Object) AppendTime(dst []byte) ([]byte, bool) {
	switch {
	case o.Unused():
		return dst, false
	case o.IsMBus():
		return o.Values[0].AppendRFC3339(dst)
	case o.isLegacyMBus():
		return appendLocalTime(dst, o.Values[0].Text)
	}
	return dst, false
}

// Unused reports whether the object comes from an M-Bus channel without a
// device: its capture time is the placeholder 632525252525S, or 1970-01-01
// (700101010000W, the Unix epoch in CET) as some meters send for an empty
// slot. Its value means nothing.
func (o *Object) Unused() bool {
	if !o.IsMBus() {
		return false
	}
	t := o.Values[0].Text
	return string(t) == "632525252525S" || string(t[:6]) == "700101"
}

// Telegram is a parsed telegram. Its slices refer to the bytes it was parsed
// from and to storage it reuses on the next Parse.
type Telegram struct {
	// Header is the identification line without '/' ("Lux5\253663629_D").
	Header []byte
	// CRC is the checksum the telegram carried (one to four hex digits);
	// HasCRC is false for DSMR 2/3 telegrams that carry none.
	CRC    uint16
	HasCRC bool
	// BareLF: lines end in LF alone, not CR LF (some gateways strip the
	// CR). The CRC is still over the bytes as received.
	BareLF bool
	// Objects in the order of the telegram.
	Objects []Object
	// Malformed lists the lines that were skipped (only when the CRC
	// verified: the rest of the telegram is still good).
	Malformed []*SyntaxError

	vals  []Value
	meter []byte
}

// Parse parses b into a new Telegram.
func Parse(b []byte) (*Telegram, error) {
	t := new(Telegram)
	return t, t.Parse(b)
}

// Parse parses b into t, reusing t's storage. On ErrCRC and on an
// ErrMalformed that makes the whole telegram unusable, t holds no objects;
// malformed lines in a telegram whose CRC verified are listed in
// t.Malformed and the other objects are kept.
func (t *Telegram) Parse(b []byte) error {
	t.Header, t.CRC, t.HasCRC, t.BareLF = nil, 0, false, false
	t.Objects, t.Malformed, t.vals, t.meter = t.Objects[:0], t.Malformed[:0], t.vals[:0], t.meter[:0]
	if len(b) == 0 || b[0] != '/' {
		return syntaxError(1, firstLine(b), "a telegram starts with '/'")
	}
	bang := bytes.LastIndexByte(b, '!')
	if bang < 0 {
		return syntaxError(bytes.Count(b, []byte{'\n'})+1, nil, "no '!' ends the telegram")
	}
	if v, ok := crc16.ParseHex(crcText(b[bang+1:])); ok {
		if got := crc16.Checksum(b[:bang+1]); got != v {
			return fmt.Errorf("%w: telegram says %04X, bytes give %04X", ErrCRC, v, got)
		}
		t.CRC, t.HasCRC = v, true
	}
	if i := bytes.IndexByte(b, '\n'); i > 0 && b[i-1] != '\r' {
		t.BareLF = true
	}
	strict := !t.HasCRC
	body := b[:bang]
	line := 0
	for len(body) > 0 {
		line++
		if line > 2 && body[0]-'0' <= 9 && !lineByLine {
			// The common case, a well-formed object line, in one pass.
			if n := t.parseObject(line, body); n > 0 {
				body = body[n:]
				continue
			}
		}
		var l []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			l, body = body[:i], body[i+1:]
		} else {
			l, body = body, nil
		}
		if n := len(l); n > 0 && l[n-1] == '\r' {
			l = l[:n-1]
		}
		if err := t.parseLine(line, l, strict); err != nil {
			if strict {
				t.Objects, t.Malformed = t.Objects[:0], t.Malformed[:0]
				return err
			}
			t.Malformed = append(t.Malformed, err)
		}
	}
	return nil
}

// crcText is what stands on the CRC line after '!': up to the line end.
func crcText(tail []byte) []byte {
	if i := bytes.IndexAny(tail, "\r\n"); i >= 0 {
		return tail[:i]
	}
	return tail
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i]
	}
	return b
}

// parseLine handles one line without its line end.
func (t *Telegram) parseLine(line int, l []byte, strict bool) *SyntaxError {
	switch {
	case line == 1:
		t.Header = l[1:]
		if strict && !validIdent(t.Header) {
			return syntaxError(line, l, "identification line is not /XXXn…")
		}
		return nil
	case len(l) == 0:
		if strict && line != 2 {
			return syntaxError(line, l, "unexpected blank line")
		}
		return nil
	case l[0] == '(':
		// DSMR 2/3 put a gas reading on a line of its own after its object.
		if len(t.Objects) == 0 {
			return syntaxError(line, l, "values without an object")
		}
		start := len(t.vals)
		if msg := t.appendValues(l); msg != "" {
			t.vals = t.vals[:start]
			return syntaxError(line, l, msg)
		}
		o := &t.Objects[len(t.Objects)-1]
		o.Values = append(o.Values[:len(o.Values):len(o.Values)], t.vals[start:]...)
		return nil
	}
	code, n, ok := parseOBIS(l)
	if !ok || n == len(l) || l[n] != '(' {
		return syntaxError(line, l, "want OBIS(value)")
	}
	start := len(t.vals)
	if msg := t.appendValues(l[n:]); msg != "" {
		t.vals = t.vals[:start]
		return syntaxError(line, l, msg)
	}
	t.Objects = append(t.Objects, Object{OBIS: code, Code: l[:n], Line: line, Values: t.vals[start:len(t.vals):len(t.vals)]})
	return nil
}

// lineByLine turns the one-pass path off, so that tests can check that
// both paths agree.
var lineByLine = false

// parseObject reads a well-formed object line at the start of body,
// including its line end, and returns its length; 0 means anything else,
// which parseLine then handles (and reports).
func (t *Telegram) parseObject(line int, body []byte) int {
	code, n, ok := parseOBIS(body)
	if !ok || n == len(body) || body[n] != '(' {
		return 0
	}
	codeLen := n
	start := len(t.vals)
	for n < len(body) && body[n] == '(' {
		k := len(t.vals)
		if k < cap(t.vals) {
			t.vals = t.vals[:k+1]
		} else {
			t.vals = append(t.vals, Value{})
		}
		end, msg := scanValueTo(&t.vals[k], body, n)
		if msg != "" {
			t.vals = t.vals[:start]
			return 0
		}
		n = end + 1
	}
	switch {
	case n == len(body):
	case body[n] == '\n':
		n++
	case body[n] == '\r' && n+1 < len(body) && body[n+1] == '\n':
		n += 2
	case body[n] == '\r' && n+1 == len(body):
		n++
	default:
		t.vals = t.vals[:start]
		return 0
	}
	// Written in place: a composite literal appended is built, then copied.
	if k := len(t.Objects); k < cap(t.Objects) {
		t.Objects = t.Objects[:k+1]
	} else {
		t.Objects = append(t.Objects, Object{})
	}
	o := &t.Objects[len(t.Objects)-1]
	o.OBIS, o.Code, o.Line, o.Values = code, body[:codeLen], line, t.vals[start:len(t.vals):len(t.vals)]
	return n
}

// appendValues reads "(v)(v*u)…" up to the end of l. One pass per value
// finds its ')' and '*': values are short, so a plain loop beats searching
// three times.
func (t *Telegram) appendValues(l []byte) string {
	for len(l) > 0 {
		if l[0] != '(' {
			return "text after the values"
		}
		v, end, msg := scanValue(l, 0)
		if msg != "" {
			return msg
		}
		t.vals = append(t.vals, v)
		l = l[end+1:]
	}
	return ""
}

// scanValue reads the value whose '(' is at b[open] and returns it with the
// index of its ')', or what is wrong with it.
func scanValue(b []byte, open int) (v Value, end int, msg string) {
	end, msg = scanValueTo(&v, b, open)
	return v, end, msg
}

// scanValueTo is scanValue writing into *v, the slot of the telegram's
// values it goes to (a Value returned and then appended is copied twice).
// On an error *v is left as it was.
func scanValueTo(v *Value, b []byte, open int) (end int, msg string) {
	star := -1
	for i := open + 1; i < len(b); i++ {
		switch b[i] {
		case ')':
			if star < 0 {
				v.Text, v.Unit = b[open+1:i], nil
				return i, ""
			}
			if star == i-1 {
				return i, "empty unit after '*'"
			}
			v.Text, v.Unit = b[open+1:star], b[star+1:i]
			return i, ""
		case '*':
			if star < 0 {
				star = i
			}
		case '(':
			return i, "'(' inside a value"
		case '\n':
			return i, "unclosed '('"
		}
	}
	return len(b), "unclosed '('"
}

// parseOBIS reads A-B:C.D.E at the start of b and returns its length. It
// is on the hot path (once per line), hence the unrolled digits.
func parseOBIS(b []byte) (o OBIS, n int, ok bool) {
	var parts [5]uint8
	const seps = "-:.."
	for k := range parts {
		if n >= len(b) || b[n]-'0' > 9 {
			return o, n, false
		}
		v := uint(b[n] - '0')
		n++
		if n < len(b) && b[n]-'0' <= 9 {
			v = v*10 + uint(b[n]-'0')
			n++
			if n < len(b) && b[n]-'0' <= 9 {
				v = v*10 + uint(b[n]-'0')
				n++
			}
		}
		if v > 255 {
			return o, n, false
		}
		parts[k] = uint8(v)
		if k < 4 {
			if n == len(b) || b[n] != seps[k] {
				return o, n, false
			}
			n++
		}
	}
	return OBIS{parts[0], parts[1], parts[2], parts[3], parts[4]}, n, true
}

// validIdent checks "XXXn…": a three-letter maker code, a baud-rate digit,
// then the model.
func validIdent(h []byte) bool {
	if len(h) < 5 {
		return false
	}
	for _, c := range h[:3] {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return h[3] >= '0' && h[3] <= '9'
}

// wellFormed reports whether a telegram without CRC (from '/' up to and
// including '!') follows the grammar on every line. Only then is it
// believed to be a telegram and not a stretch of noise.
func wellFormed(b []byte) bool {
	var t Telegram
	return t.Parse(b) == nil && len(t.Objects) > 0
}

// Maker returns the manufacturer's three-letter code that starts the
// identification line ("KFM" for Kaifa, "ISk" for Iskra: upper case is
// the FLAG code, a lower-case third letter a protocol detail), or nil
// when the line does not start with three letters. Smarty meters write
// "Lux" there; their maker is in the meter id (SAG…).
func (t *Telegram) Maker() []byte {
	if len(t.Header) < 3 {
		return nil
	}
	for _, c := range t.Header[:3] {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return nil
		}
	}
	return t.Header[:3]
}

// Codes of the meter's identifiers and clock.
var (
	obisMeterID     = OBIS{0, 0, 42, 0, 0}
	obisEquipmentID = OBIS{0, 0, 96, 1, 1}
	obisClock       = OBIS{0, 0, 1, 0, 0}
)

// Time returns the meter's clock when it made the telegram (0-0:1.0.0, see
// Value.Time); ok is false when the telegram has no valid one.
func (t *Telegram) Time() (time.Time, bool) {
	for i := range t.Objects {
		if o := &t.Objects[i]; o.OBIS == obisClock {
			return o.Reading().Time()
		}
	}
	return time.Time{}, false
}

// MeterID returns the meter's id: the decoded text of 0-0:42.0.0 (Smarty:
// "SAG…"), else of 0-0:96.1.1 (DSMR), without the spaces some meters pad
// it with, or nil when the telegram has neither. The bytes are valid until
// the next Parse.
func (t *Telegram) MeterID() []byte {
	if len(t.meter) > 0 {
		return t.meter
	}
	var alt []byte
	for i := range t.Objects {
		o := &t.Objects[i]
		switch o.OBIS {
		case obisMeterID:
			if id, ok := o.Values[0].AppendHexText(t.meter[:0]); ok && len(bytes.TrimSpace(id)) > 0 {
				t.meter = bytes.TrimSpace(id)
				return t.meter
			}
		case obisEquipmentID:
			alt = o.Values[0].Text
		}
	}
	if alt != nil {
		if id, ok := (Value{Text: alt}).AppendHexText(t.meter[:0]); ok && len(bytes.TrimSpace(id)) > 0 {
			t.meter = bytes.TrimSpace(id)
			return t.meter
		}
	}
	return nil
}
