package p1

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

func addSeeds(f *testing.F, pattern string) [][]byte {
	files, _ := filepath.Glob("../testdata/" + pattern)
	var seeds [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
		f.Add(b)
	}
	return seeds
}

func frames(in []byte, oneByte bool) ([][]byte, []Kind, Stats) {
	r := bytes.NewReader(in)
	s := NewScanner(r)
	if oneByte {
		s = NewScanner(iotest.OneByteReader(r))
	}
	var out [][]byte
	var kinds []Kind
	for s.Scan() {
		out = append(out, bytes.Clone(s.Frame()))
		kinds = append(kinds, s.Kind())
	}
	return out, kinds, s.Stats()
}

// FuzzScanner checks the framing properties on any input: every encrypted
// frame has its declared length, every plain one is a telegram with a good
// CRC or a well-formed one without, no byte is lost or counted twice, and
// the result does not depend on how the reader splits the bytes.
func FuzzScanner(f *testing.F) {
	seeds := addSeeds(f, "*.frame")
	seeds = append(seeds, addSeeds(f, "*.telegram")...)
	for _, s := range []string{dsmr22, dsmr3, emptySlot, warmtelink, strings.ReplaceAll(dsmr22, "\r\n", "\n")} {
		seeds = append(seeds, []byte(s))
		f.Add([]byte(s))
	}
	for i := range seeds {
		for j := range seeds {
			f.Add(cat(seeds[i][len(seeds[i])/3:], []byte{0xDB, 0x08, '/'}, seeds[j]))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, kinds, st := frames(in, false)
		total := st.Skipped
		for i, fr := range got {
			total += len(fr)
			switch kinds[i] {
			case Encrypted:
				if n, ok, valid := EncryptedLen(fr); !ok || !valid || n != len(fr) || n > MaxFrameLen {
					t.Fatalf("encrypted frame of %d bytes, declared %d", len(fr), n)
				}
			case Plain:
				bang := bytes.LastIndexByte(fr, '!')
				if fr[0] != '/' || bang < 0 {
					t.Fatalf("plain frame %q", fr)
				}
				// After '!': nothing, or one to four hex digits, then a
				// line end or none (CR LF, LF, or a lone CR).
				crcLine := fr[bang+1:]
				switch {
				case bytes.HasSuffix(crcLine, []byte("\r\n")):
					crcLine = crcLine[:len(crcLine)-2]
				case bytes.HasSuffix(crcLine, []byte("\n")), bytes.HasSuffix(crcLine, []byte("\r")):
					crcLine = crcLine[:len(crcLine)-1]
				}
				if len(crcLine) == 0 {
					if !wellFormed(fr[:bang+1]) {
						t.Fatalf("plain frame without CRC is not well formed")
					}
				} else if v, err := strconv.ParseUint(string(crcLine), 16, 16); err != nil || len(crcLine) > 4 || crc16.Checksum(fr[:bang+1]) != uint16(v) {
					t.Fatalf("plain frame with a bad CRC line %q delivered", crcLine)
				}
			default:
				t.Fatalf("kind %d", kinds[i])
			}
		}
		if total != len(in) {
			t.Fatalf("frames + skipped = %d, input %d", total, len(in))
		}
		one, _, _ := frames(in, true)
		if len(one) != len(got) {
			t.Fatalf("one byte at a time: %d frames, in bulk %d", len(one), len(got))
		}
		for i := range one {
			if !bytes.Equal(one[i], got[i]) {
				t.Fatalf("frame %d differs when read one byte at a time", i)
			}
		}
	})
}

// FuzzParse checks that any input yields a telegram or one of the typed
// errors, and that what parses always encodes to valid JSON.
func FuzzParse(f *testing.F) {
	addSeeds(f, "*.telegram")
	for _, s := range []string{dsmr22, dsmr3, emptySlot, warmtelink, strings.ReplaceAll(emptySlot, "\r\n", "\n")} {
		f.Add([]byte(s))
	}
	f.Add([]byte("/KFM5KAIFA-METER\r\n\r\n0-1:24.3.0(121106140000)(08)(60)(1)(0-1:24.2.1)(m3)\r\n(00124.477)\r\n!\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var tg Telegram
		err := tg.Parse(in)
		if err != nil {
			if !errors.Is(err, ErrCRC) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		for _, o := range tg.Objects {
			if len(o.Values) == 0 {
				t.Fatalf("object %v without values", o.OBIS)
			}
			for _, v := range o.Values {
				if v.IsNumber() {
					// Only numbers beyond float64's range have no float.
					if _, ok := v.Float(); !ok {
						if _, err := strconv.ParseFloat(string(v.Text), 64); !errors.Is(err, strconv.ErrRange) {
							t.Fatalf("number %q has no float", v.Text)
						}
					}
				}
			}
		}
		for _, e := range tg.Malformed {
			if !errors.Is(e, ErrMalformed) || e.Line < 1 {
				t.Fatalf("bad line error %v", e)
			}
		}
		out := tg.AppendJSON(nil, Origin{Encrypted: true})
		if !json.Valid(out) {
			t.Fatalf("invalid JSON %s", out)
		}
		// The one-pass path for object lines must read exactly what the
		// line-by-line path reads.
		lineByLine = true
		var slow Telegram
		serr := slow.Parse(in)
		lineByLine = false
		if serr != nil || string(slow.AppendJSON(nil, Origin{})) != string(tg.AppendJSON(nil, Origin{})) || len(slow.Malformed) != len(tg.Malformed) {
			t.Fatalf("paths disagree: %v\n%s\n%s", serr, slow.AppendJSON(nil, Origin{}), tg.AppendJSON(nil, Origin{}))
		}
		for i := range slow.Objects {
			if slow.Objects[i].Line != tg.Objects[i].Line {
				t.Fatalf("line numbers disagree")
			}
		}
	})
}
