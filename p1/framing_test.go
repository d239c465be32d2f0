package p1

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// parseAll frames in, read in bulk, and parses every plain telegram.
func parseAll(t *testing.T, in []byte) ([]*Telegram, Stats) {
	t.Helper()
	s := NewScanner(bytes.NewReader(in))
	var out []*Telegram
	for s.Scan() {
		tg, err := Parse(bytes.Clone(s.Frame()))
		if err != nil {
			t.Fatalf("frame %q: %v", s.Frame(), err)
		}
		out = append(out, tg)
	}
	return out, s.Stats()
}

// TestTelegramEndsAtItsCRC: a telegram is complete at '!' and its CRC,
// whatever follows: its line end missing (a file or relay that trims
// it), doubled or damaged, or the next telegram right behind it.
func TestTelegramEndsAtItsCRC(t *testing.T) {
	good, err := os.ReadFile("../testdata/dsmr5-nl.telegram")
	if err != nil {
		t.Fatal(err)
	}
	bare := bytes.TrimSuffix(good, []byte("\r\n"))
	for _, tc := range []struct {
		name string
		in   []byte
		want int
	}{
		{"no line end", bare, 1},
		{"two without line ends", cat(bare, bare), 2},
		{"three, the middle one without", cat(good, bare, good), 3},
		{"line end doubled", cat(good[:len(good):len(good)], []byte("\r\n"), good), 2},
		{"lone CR", cat(bare, []byte("\r"), bare), 2},
		{"lone LF", cat(bare, []byte("\n"), bare), 2},
		{"noise after", cat(bare, []byte("xyz\x00"), good), 2},
		{"CR then noise", cat(bare, []byte("\r\x7f"), good), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, st := parseAll(t, tc.in)
			if len(got) != tc.want {
				t.Fatalf("%d telegrams, want %d (stats %+v)", len(got), tc.want, st)
			}
			for _, tg := range got {
				if string(tg.MeterID()) != "K8EG004046395507" || len(tg.Objects) == 0 {
					t.Errorf("telegram of %q with %d objects", tg.MeterID(), len(tg.Objects))
				}
			}
		})
	}
}

// A DSMR 2.2 telegram as Kamstrup's meters send it: no blank line after
// the identification line, no CRC, the equipment id padded with a
// leading space (hex 20…).
const kamstrup22 = "/KMP5 ZABF001587315111\r\n" +
	"0-0:96.1.1(205A414246303031353837333135313131)\r\n" +
	"1-0:1.8.1(00185.000*kWh)\r\n" +
	"1-0:1.8.2(00084.000*kWh)\r\n" +
	"1-0:2.8.1(00013.000*kWh)\r\n" +
	"1-0:2.8.2(00019.000*kWh)\r\n" +
	"0-0:96.14.0(0001)\r\n" +
	"1-0:1.7.0(0000.98*kW)\r\n" +
	"1-0:2.7.0(0000.00*kW)\r\n" +
	"0-0:17.0.0(999*A)\r\n" +
	"0-0:96.3.10(1)\r\n" +
	"0-0:96.13.1()\r\n" +
	"0-0:96.13.0()\r\n" +
	"!\r\n"

func TestNoBlankLineAfterIdentification(t *testing.T) {
	got, _ := parseAll(t, []byte(kamstrup22+kamstrup22))
	if len(got) != 2 {
		t.Fatalf("%d telegrams, want 2", len(got))
	}
	tg := got[0]
	if string(tg.Header) != "KMP5 ZABF001587315111" || len(tg.Objects) != 12 {
		t.Errorf("header %q, %d objects", tg.Header, len(tg.Objects))
	}
	// The meter pads its id with a space; the id is without it.
	if id := string(tg.MeterID()); id != "ZABF001587315111" {
		t.Errorf("meter id %q", id)
	}
}

// TestLowercaseSeason: a Landis+Gyr E350 writes the season in lower case.
func TestLowercaseSeason(t *testing.T) {
	tg, err := Parse(withCRC("/XMX5LGBBFG1009021021\r\n\r\n1-3:0.2.8(42)\r\n0-0:1.0.0(150701190512s)\r\n" +
		"0-1:24.2.1(150701190000s)(00845.206*m3)\r\n0-1:24.2.1(151201190000w)(00900.000*m3)\r\n!"))
	if err != nil {
		t.Fatal(err)
	}
	if ts, ok := tg.Time(); !ok || ts.Format("2006-01-02T15:04:05Z07:00") != "2015-07-01T17:05:12Z" {
		t.Errorf("telegram time %v %v", ts, ok)
	}
	for i, want := range []string{"2015-07-01T19:00:00+02:00", "2015-12-01T19:00:00+01:00"} {
		o := &tg.Objects[2+i]
		at, ok := o.AppendTime(nil)
		if v := o.Reading(); !ok || string(at) != want || string(v.Unit) != "m3" {
			t.Errorf("gas %d: time %q %v, reading %q %q", i, at, ok, v.Text, v.Unit)
		}
	}
}

// TestIdentificationLineAnyByte: Iskra's "\2" written as the byte 0x02,
// an 0xAB: the identification line is informative and the CRC covers it.
func TestIdentificationLineAnyByte(t *testing.T) {
	for _, header := range []string{"ISk5\x02MT382-1000", "KFM5KAIFA\xABMETER"} {
		in := cat([]byte("noise"), withCRC("/"+header+"\r\n\r\n1-3:0.2.8(50)\r\n1-0:1.8.1(000004.426*kWh)\r\n!"))
		got, _ := parseAll(t, in)
		if len(got) != 1 || string(got[0].Header) != header {
			t.Errorf("header %q: %d telegrams", header, len(got))
		}
	}
	// Noise that starts with '/' but has no line end soon is not held.
	long := cat([]byte("/"), bytes.Repeat([]byte{0x01}, 200), []byte("\r\n"), []byte(strings.TrimPrefix(kamstrup22, "")))
	if got, _ := parseAll(t, long); len(got) != 1 {
		t.Errorf("%d telegrams behind a long false identification line, want 1", len(got))
	}
}
