package decrypt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Key is an AES-128 key. It never prints itself: String, GoString and
// LogValue redact it, so a Key passed to a logger by mistake stays secret.
type Key [16]byte

// DefaultAuthKey is the authentication key every Smarty meter uses.
var DefaultAuthKey = Key{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF}

// ErrKeyFormat is returned when a key is not 32 hexadecimal digits.
var ErrKeyFormat = errors.New("a key must be 32 hexadecimal digits (16 bytes), as the grid operator sends it")

// ParseKey reads a key written as 32 hex digits, in either case; spaces,
// colons and dashes between digits, surrounding quotes and a 0x prefix are
// ignored, as operators' e-mails and copy-paste vary. Its errors describe
// the text (length, characters), never quote it.
func ParseKey(s string) (Key, error) {
	var k Key
	s = strings.Trim(strings.TrimSpace(s), `"'`)
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		s = s[2:]
	}
	clean := strings.Map(func(r rune) rune {
		switch r {
		case ' ', ':', '-', '\t':
			return -1
		}
		return r
	}, s)
	if len(clean) != 2*len(k) {
		return k, fmt.Errorf("%w: got %d characters", ErrKeyFormat, len(clean))
	}
	if _, err := hex.Decode(k[:], []byte(clean)); err != nil {
		return Key{}, fmt.Errorf("%w: it contains a character that is not 0-9 or A-F", ErrKeyFormat)
	}
	return k, nil
}

// UnmarshalText lets configuration loaders parse a Key.
func (k *Key) UnmarshalText(b []byte) error {
	v, err := ParseKey(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// String redacts the key.
func (Key) String() string { return "[redacted]" }

// GoString redacts the key in %#v.
func (Key) GoString() string { return "decrypt.Key{[redacted]}" }

// LogValue redacts the key in slog output.
func (Key) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Format redacts the key for every fmt verb, %x included.
func (k Key) Format(f fmt.State, verb rune) { fmt.Fprint(f, "[redacted]") }

// Title is a DLMS system title: the three-letter maker code ("SAG") and five
// bytes that identify the meter.
type Title [8]byte

// String is the title in upper-case hex, the form used in MQTT topics.
func (t Title) String() string { return strings.ToUpper(hex.EncodeToString(t[:])) }

// ParseTitle reads a system title written as 16 hex digits or as its eight
// ASCII characters (for example "SYSTEMID").
func ParseTitle(s string) (Title, error) {
	var t Title
	// The errors describe the text without quoting it: a key pasted where
	// the title belongs must not end up in a log.
	switch len(s) {
	case 16:
		if _, err := hex.Decode(t[:], []byte(s)); err != nil {
			return Title{}, errors.New("system title: 16 characters, but not all hexadecimal (0-9, A-F)")
		}
	case 8:
		copy(t[:], s)
	default:
		return t, fmt.Errorf("system title: got %d characters, want 16 hex digits (as in the topic smarty/raw/<TITLE>) or 8 characters", len(s))
	}
	return t, nil
}
