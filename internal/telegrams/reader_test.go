package telegrams

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

// A bad frame is an error of its own, at its offset, and the stream goes
// on; the end of the source is io.EOF.
func TestReaderGoesOnAfterBadFrames(t *testing.T) {
	good := readFile(t, "smarty-2026.frame")
	forged := bytes.Clone(good)
	forged[len(forged)/2] ^= 0x20 // fails authentication
	real := readFile(t, "smarty-2018-real.frame")
	crc := readFile(t, "crc-mismatch.frame") // authentic, but the telegram inside is damaged
	noise := []byte("\x00\x13garbage")
	var stream []byte
	stream = append(stream, good...)
	stream = append(stream, noise...)
	forgedAt := len(stream)
	stream = append(stream, forged...)
	realAt := len(stream)
	stream = append(stream, real...)
	crcAt := len(stream)
	stream = append(stream, crc...)

	real2018, _ := decrypt.ParseTitle("534147677001BD54")
	r, err := NewReader(bytes.NewReader(stream), decrypt.Options{Key: key(t, testKey),
		Keys: map[decrypt.Title]decrypt.Key{real2018: *key(t, realKey)}})
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		reason Reason
		offset int64
		meter  string
	}
	var seen []got
	for {
		f, err := r.Next()
		if err == io.EOF {
			break
		}
		if fe, ok := AsFrameError(err); ok {
			seen = append(seen, got{reason: fe.Reason, offset: fe.Offset})
			continue
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		seen = append(seen, got{offset: f.Offset, meter: string(f.Telegram.MeterID())})
	}
	want := []got{
		{offset: 0, meter: "SAG1030700012701"},
		{reason: Authentication, offset: int64(forgedAt)},
		{offset: int64(realAt), meter: "SAG1030700114004"},
		{reason: CRC, offset: int64(crcAt)},
	}
	if len(seen) != len(want) {
		t.Fatalf("read %+v, want %+v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("item %d: %+v, want %+v", i, seen[i], want[i])
		}
	}
	if st := r.Stats(); st.Skipped < len(noise) {
		t.Errorf("skipped %d bytes, want at least the %d of noise", st.Skipped, len(noise))
	}
}

// The source's error ends the stream, after the frames before it.
func TestReaderEndsOnSourceError(t *testing.T) {
	boom := errors.New("cable pulled")
	src := io.MultiReader(bytes.NewReader(readFile(t, "smarty-2026.frame")), errReader{boom})
	r, err := NewReader(src, decrypt.Options{Key: key(t, testKey)})
	if err != nil {
		t.Fatal(err)
	}
	if f, err := r.Next(); err != nil || f.Telegram == nil {
		t.Fatalf("first frame: %v", err)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("after the frame: %v, want the source's error", err)
	}
}

// A frame reader cannot check a frame of a meter it does not know, so it
// searches its bytes again: a false header that swallowed a real frame
// costs nothing. Once the meter is known, frames are taken whole.
func TestFrameReaderOverlapsUnknownMeters(t *testing.T) {
	good := readFile(t, "smarty-2026.frame")
	// A false header declaring a span that swallows the real frame.
	fake := []byte{0xDB, 0x08, 'S', 'A', 'G', 'x', 'x', 'x', 'x', 'x', 0x82, byte((len(good) + 40) >> 8), byte(len(good) + 40)}
	stream := append(append(append([]byte{}, fake...), good...), bytes.Repeat([]byte{0}, 60)...)
	count := func(know bool) (frames int, whole bool) {
		r := NewFrameReader(bytes.NewReader(stream))
		if know {
			r.Know([8]byte(good[2:10]))
		}
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			frames++
			whole = whole || bytes.Equal(f.Bytes, good)
			if f.Telegram != nil {
				t.Error("a frame reader decoded a telegram")
			}
		}
	}
	if n, whole := count(false); !whole {
		t.Errorf("unknown meter: %d frames and the real one not among them", n)
	}
	if n, whole := count(true); !whole || n != 1 {
		t.Errorf("known meter: %d frames (real one delivered: %v), want exactly the real frame", n, whole)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// BenchmarkReader is the whole path from P1 bytes through the Reader.
func BenchmarkReader(b *testing.B) {
	stream := bytes.Repeat(readFile(b, "smarty-2026.frame"), 1000)
	src := bytes.NewReader(stream)
	r, _ := NewReader(src, decrypt.Options{Key: key(b, testKey)})
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.Next()
		if err == io.EOF {
			src.Reset(stream)
			r, _ = NewReader(src, decrypt.Options{Key: key(b, testKey)})
			f, err = r.Next()
		}
		if err != nil || f.Kind != p1.Encrypted {
			b.Fatal(err)
		}
	}
}
