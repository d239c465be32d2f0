package telegrams

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func key(t testing.TB, s string) *decrypt.Key {
	t.Helper()
	k, err := decrypt.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

const (
	realKey = "D491470F47126332B07D1923B3504188"
	testKey = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)

func TestDecodeVectors(t *testing.T) {
	real, _ := decrypt.ParseTitle("534147677001BD54")
	d, err := NewDecoder(decrypt.Options{Key: key(t, testKey), Keys: map[decrypt.Title]decrypt.Key{real: *key(t, realKey)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		file, meter string
		kind        p1.Kind
		objects     int
	}{
		{"smarty-2018-real.frame", "SAG1030700114004", p1.Encrypted, 28},
		{"smarty-2026.frame", "SAG1030700012701", p1.Encrypted, 52},
		{"spec-appendix-a.frame", "SAG1030790002574", p1.Encrypted, 64},
		{"austria-t210dr.frame", "", p1.Encrypted, 18},
		{"dsmr5-nl.telegram", "K8EG004046395507", p1.Plain, 37},
	} {
		tg, _, err := d.Decode(tt.kind, readFile(t, tt.file))
		if err != nil {
			t.Errorf("%s: %v", tt.file, err)
			continue
		}
		if string(tg.MeterID()) != tt.meter || len(tg.Objects) != tt.objects {
			t.Errorf("%s: meter %q with %d objects, want %q with %d", tt.file, tg.MeterID(), len(tg.Objects), tt.meter, tt.objects)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	d, _ := NewDecoder(decrypt.Options{Key: key(t, realKey)})
	if _, _, err := d.Decode(p1.Encrypted, readFile(t, "crc-mismatch.frame")); !errors.Is(err, p1.ErrCRC) || FramingError(err) || ReasonOf(err) != CRC {
		t.Errorf("crc-mismatch.frame: %v", err)
	}
	wrong, _ := NewDecoder(decrypt.Options{Key: key(t, testKey)})
	_, from, err := wrong.Decode(p1.Encrypted, readFile(t, "smarty-2018-real.frame"))
	if !errors.Is(err, decrypt.ErrAuth) || !FramingError(err) || ReasonOf(err) != Authentication {
		t.Errorf("wrong key: %v", err)
	}
	if !from.Encrypted || from.FrameCounter != 0x0005A8E3 {
		t.Errorf("origin of a failed frame: %+v", from)
	}
	none, _ := NewDecoder(decrypt.Options{})
	if _, _, err := none.Decode(p1.Encrypted, readFile(t, "smarty-2026.frame")); !errors.Is(err, decrypt.ErrNoKey) || ReasonOf(err) != NoKey {
		t.Errorf("no key: %v", err)
	}
}

// BenchmarkDecode is frame to telegram: decrypt and parse.
func BenchmarkDecode(b *testing.B) {
	frame := readFile(b, "smarty-2026.frame")
	d, _ := NewDecoder(decrypt.Options{Key: key(b, testKey)})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(p1.Encrypted, frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanDecode is the whole path from P1 bytes: framing, decrypting
// and parsing, over a stream of many frames.
func BenchmarkScanDecode(b *testing.B) {
	frame := readFile(b, "smarty-2026.frame")
	stream := bytes.Repeat(frame, 1000)
	d, _ := NewDecoder(decrypt.Options{Key: key(b, testKey)})
	r := bytes.NewReader(stream)
	s := p1.NewScanner(r)
	b.ReportAllocs()
	for b.Loop() {
		if !s.Scan() {
			r.Reset(stream)
			s = p1.NewScanner(r)
			s.Scan()
		}
		if _, _, err := d.Decode(s.Kind(), s.Frame()); err != nil {
			b.Fatal(err)
		}
	}
}
