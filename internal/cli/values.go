package cli

import (
	"strconv"
	"strings"
	"time"
)

// Configuration values as people type them.

// wantError says what a variable wants; describeParseError shows it after
// the variable's name and value.
type wantError string

func (e wantError) Error() string { return string(e) }

// yesNo is a boolean: true/false, yes/no, on/off or 1/0, in any case.
type yesNo bool

// Decode implements envconfig.Decoder.
func (f *yesNo) Decode(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		*f = true
	case "false", "no", "off", "0":
		*f = false
	default:
		return wantError("want true or false (yes/no, on/off and 1/0 work too)")
	}
	return nil
}

// duration is a time span with its unit (90s, 5m, 24h, 1h30m), or a bare
// number of seconds.
type duration time.Duration

// Decode implements envconfig.Decoder.
func (d *duration) Decode(s string) error {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseFloat(s, 64); err == nil && n >= 0 {
		*d = duration(n * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return wantError("want a duration such as 60s, 5m or 24h, or a number of seconds")
	}
	*d = duration(v)
	return nil
}

func (d duration) String() string { return time.Duration(d).String() }
