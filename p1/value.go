package p1

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Value is one "(…)" group of an object: the text before '*' and the unit
// after it (nil when the meter sends none).
type Value struct {
	Text []byte
	Unit []byte
}

// IsTimestamp reports whether the value is YYMMDDhhmmss followed by S or W
// (summer or winter time; some meters write them in lower case).
func (v Value) IsTimestamp() bool {
	if len(v.Text) != 13 || v.Unit != nil {
		return false
	}
	for _, c := range v.Text[:12] {
		if c < '0' || c > '9' {
			return false
		}
	}
	switch v.Text[12] {
	case 'S', 'W', 's', 'w':
		return true
	}
	return false
}

// summer reports whether a timestamp's season letter says summer time.
func summer(season byte) bool { return season == 'S' || season == 's' }

// IsNumber reports whether the value is a decimal number: an optional sign,
// digits, optionally '.' and more digits.
func (v Value) IsNumber() bool {
	b := v.Text
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		b = b[1:]
	}
	digits, dot := 0, false
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot && digits > 0:
			dot = true
		default:
			return false
		}
	}
	return digits > 0 && b[len(b)-1] != '.'
}

// AppendNumber appends the number without its leading zeros ("000273.764"
// becomes "273.764", "-040" becomes "-40"), keeping every digit the meter
// sent after the point. The caller checks IsNumber first.
func (v Value) AppendNumber(dst []byte) []byte {
	b := v.Text
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		if b[0] == '-' {
			dst = append(dst, '-')
		}
		b = b[1:]
	}
	for len(b) > 1 && b[0] == '0' && b[1] != '.' {
		b = b[1:]
	}
	return append(dst, b...)
}

// Float returns the number as a float64. ok is false when the value is not
// a number, or one beyond float64's range.
func (v Value) Float() (f float64, ok bool) {
	if !v.IsNumber() {
		return 0, false
	}
	b := v.Text
	neg := b[0] == '-'
	if b[0] == '-' || b[0] == '+' {
		b = b[1:]
	}
	var mant uint64
	frac, digits := -1, 0
	for _, c := range b {
		if c == '.' {
			frac = 0
			continue
		}
		if mant != 0 || c != '0' {
			digits++
		}
		mant = mant*10 + uint64(c-'0')
		if frac >= 0 {
			frac++
		}
	}
	if digits > 15 || frac > 22 {
		return slowFloat(v.Text)
	}
	// Both operands are exact, so one division rounds correctly.
	f = float64(mant)
	if frac > 0 {
		f /= pow10[frac]
	}
	if neg {
		f = -f
	}
	return f, true
}

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// AppendRFC3339 appends the timestamp as RFC 3339 with the offset its S/W
// suffix gives: S is summer time, UTC+2; W is winter time, UTC+1. ok is
// false for anything that is not a valid date and time.
func (v Value) AppendRFC3339(dst []byte) ([]byte, bool) {
	if !v.validTimestamp() {
		return dst, false
	}
	d := v.Text
	dst = append(dst, '2', '0', d[0], d[1], '-', d[2], d[3], '-', d[4], d[5], 'T',
		d[6], d[7], ':', d[8], d[9], ':', d[10], d[11], '+', '0')
	if summer(d[12]) {
		return append(dst, '2', ':', '0', '0'), true
	}
	return append(dst, '1', ':', '0', '0'), true
}

// Time returns the instant of a timestamp (IsTimestamp): S is summer time,
// UTC+2; W is winter time, UTC+1. In October's repeated hour 02:30W comes
// an hour after 02:30S, as it does on the meter. ok is false for anything
// that is not a valid date and time.
func (v Value) Time() (time.Time, bool) {
	if !v.validTimestamp() {
		return time.Time{}, false
	}
	d := v.Text
	offset := time.Hour
	if summer(d[12]) {
		offset = 2 * time.Hour
	}
	return time.Date(2000+twoDigits(d, 0), time.Month(twoDigits(d, 2)), twoDigits(d, 4),
		twoDigits(d, 6), twoDigits(d, 8), twoDigits(d, 10), 0, time.UTC).Add(-offset), true
}

// validTimestamp reports whether the value is a timestamp (IsTimestamp)
// whose month, day, hour, minute and second are in range.
func (v Value) validTimestamp() bool {
	if !v.IsTimestamp() {
		return false
	}
	d := v.Text
	mo, day, h, mi, s := twoDigits(d, 2), twoDigits(d, 4), twoDigits(d, 6), twoDigits(d, 8), twoDigits(d, 10)
	return mo >= 1 && mo <= 12 && day >= 1 && day <= 31 && h <= 23 && mi <= 59 && s <= 60
}

// twoDigits reads the decimal digits d[i] and d[i+1].
func twoDigits(d []byte, i int) int { return int(d[i]-'0')*10 + int(d[i+1]-'0') }

// AppendHexText decodes a hex-encoded text value and appends it. ok is
// false when the value is not hex or the text is not printable (ASCII or
// UTF-8), so
// that a caller can show the raw value instead.
func (v Value) AppendHexText(dst []byte) ([]byte, bool) {
	b := v.Text
	if len(b)%2 != 0 {
		return dst, false
	}
	n := len(dst)
	for i := 0; i < len(b); i += 2 {
		hi, ok1 := unhex(b[i])
		lo, ok2 := unhex(b[i+1])
		c := hi<<4 | lo
		if !ok1 || !ok2 || !(c >= 0x20 && c != 0x7F || c == '\r' || c == '\n' || c == '\t') {
			return dst[:n], false
		}
		dst = append(dst, c)
	}
	// Bytes past ASCII must make UTF-8 text ("C3A9" is é); a number that
	// happens to be hex does not.
	if !utf8.Valid(dst[n:]) {
		return dst[:n], false
	}
	return dst, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func slowFloat(b []byte) (float64, bool) {
	f, err := strconv.ParseFloat(string(b), 64)
	return f, err == nil
}

// appendLocalTime appends a DSMR 2.2/3 time, YYMMDDhhmmss without the S/W
// suffix of later versions, as RFC 3339. These meters keep Central
// European time, so the offset follows the EU rule: summer time (UTC+2)
// from the last Sunday of March, 02:00, to the last Sunday of October,
// 02:00 (the repeated hour counts as winter time).
func appendLocalTime(dst, text []byte) ([]byte, bool) {
	if !isDigits(text, 12) {
		return dst, false
	}
	suffixed := [13]byte{}
	copy(suffixed[:], text)
	suffixed[12] = 'W'
	num := func(i int) int { return int(text[i]-'0')*10 + int(text[i+1]-'0') }
	year, mo, day, h := 2000+num(0), time.Month(num(2)), num(4), num(6)
	local := time.Date(year, mo, day, h, num(8), num(10), 0, time.UTC)
	if summerStart, summerEnd := lastSunday(year, time.March), lastSunday(year, time.October); !local.Before(summerStart) && local.Before(summerEnd) {
		suffixed[12] = 'S'
	}
	return Value{Text: suffixed[:]}.AppendRFC3339(dst)
}

// lastSunday is 02:00 on the last Sunday of month, as a wall-clock time.
func lastSunday(year int, month time.Month) time.Time {
	last := time.Date(year, month+1, 0, 2, 0, 0, 0, time.UTC)
	return last.AddDate(0, 0, -int(last.Weekday()))
}
