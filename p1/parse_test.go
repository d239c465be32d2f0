package p1

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expected is the shape of testdata/expected/NAME.json: values read from
// the telegrams independently of this parser.
type expected struct {
	Header  string `json:"header"`
	CRC     string `json:"crc"`
	Objects map[string]struct {
		Value any     `json:"value"`
		Unit  *string `json:"unit"`
		Time  string  `json:"time"`
		Multi bool    `json:"multi"`
	} `json:"objects"`
}

var telegramVectors = []string{"smarty-2018-real", "smarty-2026", "spec-appendix-a", "austria-t210dr", "dsmr5-nl"}

func TestParseExpected(t *testing.T) {
	for _, name := range telegramVectors {
		t.Run(name, func(t *testing.T) {
			var want expected
			if err := json.Unmarshal(readFile(t, "expected/"+name+".json"), &want); err != nil {
				t.Fatal(err)
			}
			tg, err := Parse(readFile(t, name+".telegram"))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if string(tg.Header) != want.Header {
				t.Errorf("header %q, want %q", tg.Header, want.Header)
			}
			if got := string(appendHex4(nil, tg.CRC)); !tg.HasCRC || got != want.CRC {
				t.Errorf("crc %s (%v), want %s", got, tg.HasCRC, want.CRC)
			}
			if len(tg.Malformed) > 0 {
				t.Errorf("malformed lines: %v", tg.Malformed)
			}
			byCode := map[string]*Object{}
			for i := range tg.Objects {
				byCode[tg.Objects[i].OBIS.String()] = &tg.Objects[i]
			}
			for code, w := range want.Objects {
				o := byCode[code]
				if o == nil {
					t.Errorf("%s missing", code)
					continue
				}
				v := o.Reading()
				switch wv := w.Value.(type) {
				case float64:
					f, ok := v.Float()
					if !ok || math.Abs(f-wv) > 1e-9*math.Max(1, math.Abs(wv)) {
						t.Errorf("%s = %q (%v), want %v", code, v.Text, f, wv)
					}
				case string:
					ts, ok := v.AppendRFC3339(nil)
					if !ok || string(ts) != wv {
						t.Errorf("%s = %q, want %s", code, ts, wv)
					}
				default:
					t.Fatalf("%s: unexpected expected value %T", code, wv)
				}
				wantUnit := ""
				if w.Unit != nil {
					wantUnit = *w.Unit
				}
				if string(v.Unit) != wantUnit {
					t.Errorf("%s unit %q, want %q", code, v.Unit, wantUnit)
				}
				if w.Time != "" {
					ts, ok := o.Values[0].AppendRFC3339(nil)
					if !o.IsMBus() || !ok || string(ts) != w.Time {
						t.Errorf("%s time %q, want %s", code, ts, w.Time)
					}
				}
				if w.Multi != (len(o.Values) > 1 && !o.IsMBus()) {
					t.Errorf("%s multi = %v, values %d", code, !w.Multi, len(o.Values))
				}
			}
		})
	}
}

func TestMeterID(t *testing.T) {
	for name, want := range map[string]string{
		"smarty-2018-real": "SAG1030700114004",
		"smarty-2026":      "SAG1030700012701",
		"dsmr5-nl":         "K8EG004046395507",
		"austria-t210dr":   "",
	} {
		tg, err := Parse(readFile(t, name+".telegram"))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(tg.MeterID()); got != want {
			t.Errorf("%s: meter %q, want %q", name, got, want)
		}
	}
}

func TestUnusedMBus(t *testing.T) {
	tg, err := Parse(readFile(t, "spec-appendix-a.telegram"))
	if err != nil {
		t.Fatal(err)
	}
	unused := map[string]bool{}
	for i := range tg.Objects {
		if tg.Objects[i].Unused() {
			unused[tg.Objects[i].OBIS.String()] = true
		}
	}
	if len(unused) != 2 || !unused["0-2:24.2.1"] || !unused["0-3:24.2.1"] {
		t.Errorf("unused channels %v, want 0-2:24.2.1 and 0-3:24.2.1", unused)
	}
}

// withCRC rewrites the CRC of a telegram after an edit.
func withCRC(s string) []byte {
	i := strings.LastIndexByte(s, '!')
	b := []byte(s[:i+1])
	return append(appendHex4(b, crc16.Checksum(b)), "\r\n"...)
}

func TestParseErrors(t *testing.T) {
	good := string(readFile(t, "smarty-2018-real.telegram"))
	tests := []struct {
		name      string
		in        []byte
		want      error
		malformed []int // lines reported but skipped
	}{
		{"crc mismatch", []byte(strings.Replace(good, "006.695", "007.695", 1)), ErrCRC, nil},
		{"no slash", []byte(good[1:]), ErrMalformed, nil},
		{"no bang", []byte(good[:strings.IndexByte(good, '!')]), ErrMalformed, nil},
		{"empty", nil, ErrMalformed, nil},
		{"bad line kept out", withCRC(strings.Replace(good, "1-0:2.8.0(000000.025*kWh)", "1-0:2.8.0 000000.025", 1)), nil, []int{7}},
		{"unclosed paren", withCRC(strings.Replace(good, "0-0:96.3.10(1)", "0-0:96.3.10(1", 1)), nil, []int{15}},
		{"obis out of range", withCRC(strings.Replace(good, "0-0:96.3.10(1)", "0-0:960.3.10(1)", 1)), nil, []int{15}},
		{"no crc, well formed", []byte(good[:strings.IndexByte(good, '!')+1] + "\r\n"), nil, nil},
		{"no crc, bad line", []byte(strings.Replace(good[:strings.IndexByte(good, '!')+1]+"\r\n", "0-0:96.3.10(1)", "0-0:96.3.10(1", 1)), ErrMalformed, nil},
		// Kamstrup's DSMR 2.2 meters send no blank line (issue 20).
		{"no crc, no blank line", []byte(strings.Replace(good[:strings.IndexByte(good, '!')+1]+"\r\n", "_D\r\n\r\n", "_D\r\n", 1)), nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil {
				if len(tg.Objects) != 0 {
					t.Errorf("rejected telegram kept %d objects", len(tg.Objects))
				}
				return
			}
			var lines []int
			for _, e := range tg.Malformed {
				if !errors.Is(e, ErrMalformed) {
					t.Errorf("%v is not ErrMalformed", e)
				}
				lines = append(lines, e.Line)
			}
			if len(lines) != len(tt.malformed) || len(lines) > 0 && lines[0] != tt.malformed[0] {
				t.Errorf("malformed lines %v, want %v", lines, tt.malformed)
			}
			if want := 28 - len(tt.malformed); len(tg.Objects) != want {
				t.Errorf("%d objects, want %d", len(tg.Objects), want)
			}
		})
	}
}

func TestContinuationLine(t *testing.T) {
	// DSMR 2.2 sends the gas reading on a line of its own.
	tg, err := Parse([]byte("/KFM5KAIFA-METER\r\n\r\n0-1:24.3.0(121106140000)(08)(60)(1)(0-1:24.2.1)(m3)\r\n(00124.477)\r\n!\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o := tg.Objects[0]; len(o.Values) != 7 || string(o.Values[6].Text) != "00124.477" {
		t.Errorf("values %q", o.Values)
	}
}

func TestValueText(t *testing.T) {
	for _, tt := range []struct{ in, num string }{
		{"000273.764", "273.764"}, {"-040", "-40"}, {"00.000", "0.000"}, {"0", "0"},
		{"+05", "5"}, {"1067", "1067"}, {"-00.5", "-0.5"},
	} {
		v := Value{Text: []byte(tt.in)}
		if !v.IsNumber() {
			t.Errorf("%q not a number", tt.in)
			continue
		}
		if got := string(v.AppendNumber(nil)); got != tt.num {
			t.Errorf("AppendNumber(%q) = %q, want %q", tt.in, got, tt.num)
		}
	}
	for _, s := range []string{"", ".5", "5.", "1.2.3", "12a", "-", "0-0:96.7.19"} {
		if (Value{Text: []byte(s)}).IsNumber() {
			t.Errorf("%q taken for a number", s)
		}
	}
	for _, s := range []string{"260403175431X", "261303175431S", "632525252525S", "26040317543S"} {
		if _, ok := (Value{Text: []byte(s)}).AppendRFC3339(nil); ok {
			t.Errorf("%q taken for a valid time", s)
		}
	}
}

func TestFloatMatchesStrconv(t *testing.T) {
	for _, s := range []string{"000273.764", "112743.030", "0.1", "-0.3", "99999999.999", "1234567890123456789.5", "0.0000000000000000000000001"} {
		f, ok := Value{Text: []byte(s)}.Float()
		w, _ := slowFloat([]byte(s))
		if !ok || f != w {
			t.Errorf("Float(%q) = %v, want %v", s, f, w)
		}
	}
}

func TestJSONIsValid(t *testing.T) {
	for _, name := range telegramVectors {
		tg, err := Parse(readFile(t, name+".telegram"))
		if err != nil {
			t.Fatal(err)
		}
		out := tg.AppendJSON(nil, Origin{Encrypted: true, SystemTitle: [8]byte{'S', 'A', 'G', 0xAB}, FrameCounter: 7})
		if !json.Valid(out) {
			t.Errorf("%s: invalid JSON: %s", name, out)
		}
		if !strings.Contains(string(out), `"system_title":"534147AB00000000"`) {
			t.Errorf("%s: system title not upper-case hex: %s", name, out)
		}
	}
}
