package p1

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// scanAll runs a Scanner over r like a consumer that authenticates frames:
// a frame that is not one of known is handed back with Reject.
func scanAll(t *testing.T, r io.Reader, known map[string]bool) ([]string, Stats) {
	t.Helper()
	var got []string
	s := NewScanner(r)
	for s.Scan() {
		f := s.Frame()
		if s.Kind() == Encrypted {
			if n, ok, valid := EncryptedLen(f); !ok || !valid || n != len(f) {
				t.Fatalf("delivered frame of %d bytes does not have its declared length %d", len(f), n)
			}
		}
		if !known[string(f)] {
			s.Reject()
			continue
		}
		got = append(got, string(f))
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Err: %v", err)
	}
	return got, s.Stats()
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestScannerStreams(t *testing.T) {
	f1 := readFile(t, "smarty-2018-real.frame")
	f2 := readFile(t, "smarty-2026.frame")
	f3 := readFile(t, "spec-appendix-a.frame")
	f4 := readFile(t, "austria-t210dr.frame")
	p := readFile(t, "dsmr5-nl.telegram")
	known := map[string]bool{}
	for _, f := range [][]byte{f1, f2, f3, f4, p} {
		known[string(f)] = true
	}
	// A false header: DB 08, a title, a plausible length and 0x30.
	falseHeader := cat([]byte{0xDB, 0x08}, []byte("SAGgp\x01\xBD\x54"), []byte{0x82, 0x02, 0x7A, 0x30, 0, 0, 0, 1})
	tooLong := cat([]byte{0xDB, 0x08}, []byte("SAGgp\x01\xBD\x54"), []byte{0x82, 0xFF, 0xFF, 0x30})
	tests := []struct {
		name string
		in   []byte
		want [][]byte
	}{
		{"back to back", cat(f1, f2), [][]byte{f1, f2}},
		{"garbage with DB 08 before a frame", cat([]byte("\x00\xDB\x08garbage\xDB\xDB\x08"), falseHeader, f2, f3), [][]byte{f2, f3}},
		{"frame cut short, then two good ones", cat(f1[:300], f2, f3), [][]byte{f2, f3}},
		{"same meter cut short", cat(f2[:500], f2, f3), [][]byte{f2, f3}},
		{"starts mid-frame", cat(f1[200:], f2, f3), [][]byte{f2, f3}},
		{"starts mid-frame of the same kind", cat(f2[601:], f2), [][]byte{f2}},
		{"plain and encrypted mixed", cat(p, f1, []byte("junk/!\r\n"), p, f4), [][]byte{p, f1, p, f4}},
		{"slash before a frame", cat([]byte("/XYZ5 not a telegram "), f2, []byte("!1234\r\n"), f3), [][]byte{f2, f3}},
		{"declared length too long", cat(tooLong, f2), [][]byte{f2}},
		{"truncated at the end", cat(f1, f2[:100]), [][]byte{f1}},
		{"plain cut short, then plain", cat(p[:400], p), [][]byte{p}},
		{"corrupt byte in a frame", cat(f1, corrupt(f2, 700), f3), [][]byte{f1, f3}},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			var r io.Reader = bytes.NewReader(tt.in)
			if oneByte {
				name += "/one byte at a time"
				r = iotest.OneByteReader(r)
			}
			t.Run(name, func(t *testing.T) {
				got, st := scanAll(t, r, known)
				if len(got) != len(tt.want) {
					t.Fatalf("got %d frames, want %d", len(got), len(tt.want))
				}
				total := st.Skipped + st.RejectedBytes
				for i := range got {
					if got[i] != string(tt.want[i]) {
						t.Errorf("frame %d differs", i)
					}
					total += len(got[i])
				}
				if total != len(tt.in) {
					t.Errorf("frames %d + skipped %d + rejected %d bytes != input %d", total-st.Skipped-st.RejectedBytes, st.Skipped, st.RejectedBytes, len(tt.in))
				}
			})
		}
	}
}

func corrupt(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x40
	return c
}

func TestScannerCounts(t *testing.T) {
	f2 := readFile(t, "smarty-2026.frame")
	p := readFile(t, "dsmr5-nl.telegram")
	badCRC := bytes.Replace(bytes.Clone(p), []byte("4.426"), []byte("5.426"), 1)
	tooLong := []byte{0xDB, 0x08, 'S', 'A', 'G', 1, 2, 3, 4, 5, 0x82, 0x10, 0x01, 0x30}
	s := NewScanner(bytes.NewReader(cat(f2[:500], f2, badCRC, tooLong, p)))
	n := 0
	for s.Scan() {
		n++
	}
	st := s.Stats()
	if n != 2 || st.Frames != 2 || st.Truncated != 1 || st.BadCRC != 1 || st.TooLong != 1 {
		t.Errorf("frames %d, stats %+v", n, st)
	}
}

// silentReader returns its chunks one per Read, with ErrSilence between.
type silentReader struct{ chunks [][]byte }

func (r *silentReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	c := r.chunks[0]
	if c == nil {
		r.chunks = r.chunks[1:]
		return 0, ErrSilence
	}
	n := copy(p, c)
	if n == len(c) {
		r.chunks = r.chunks[1:]
	} else {
		r.chunks[0] = c[n:]
	}
	return n, nil
}

func TestSilenceEndsPartialFrame(t *testing.T) {
	f1 := readFile(t, "smarty-2018-real.frame")
	f2 := readFile(t, "smarty-2026.frame")
	// f1 is cut short; the line goes quiet; then f2. Without the silence
	// rule f1's declared length would swallow the head of f2.
	s := NewScanner(&silentReader{chunks: [][]byte{f1[:300], nil, f2}})
	var got [][]byte
	for s.Scan() {
		got = append(got, bytes.Clone(s.Frame()))
	}
	if len(got) != 1 || !bytes.Equal(got[0], f2) {
		t.Fatalf("got %d frames, want f2 alone", len(got))
	}
	if st := s.Stats(); st.Truncated != 1 || st.Skipped != 300 {
		t.Errorf("stats %+v", st)
	}
}

func TestReaderErrorEndsScan(t *testing.T) {
	f2 := readFile(t, "smarty-2026.frame")
	boom := errors.New("boom")
	s := NewScanner(io.MultiReader(bytes.NewReader(f2), iotest.ErrReader(boom)))
	n := 0
	for s.Scan() {
		n++
	}
	if n != 1 || !errors.Is(s.Err(), boom) {
		t.Errorf("frames %d, err %v", n, s.Err())
	}
}

func TestRejectTwiceCountsOnce(t *testing.T) {
	f2 := readFile(t, "smarty-2026.frame")
	s := NewScanner(bytes.NewReader(f2))
	if !s.Scan() {
		t.Fatal("no frame")
	}
	s.Reject()
	s.Reject()
	for s.Scan() {
		t.Error("a rejected frame's bytes held another frame")
	}
	if st := s.Stats(); st.Rejected != 1 || st.Frames != 0 || st.RejectedBytes != len(f2) || st.Skipped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// forwardAll runs a Scanner like a forwarder, which cannot authenticate:
// frames of titles it knows are real (a decryptor confirmed them) are
// trusted, any other frame is used but searched again (Overlap).
func forwardAll(r io.Reader, known ...[8]byte) ([][]byte, Stats) {
	s := NewScanner(r)
	for _, k := range known {
		s.Know(k)
	}
	var out [][]byte
	for s.Scan() {
		f := s.Frame()
		out = append(out, bytes.Clone(f))
		if s.Kind() == Encrypted && !s.isKnown(f[2:10]) {
			s.Overlap()
		}
	}
	return out, s.Stats()
}

// TestForwarderNeverLosesAFrameToNoise: line noise shaped like a header
// of an unknown meter, declaring 256 bytes, right before an intact frame.
// A consumer without the key cannot reject the false frame; it must not
// swallow the real one.
func TestForwarderNeverLosesAFrameToNoise(t *testing.T) {
	f2 := readFile(t, "smarty-2026.frame")
	f1 := readFile(t, "smarty-2018-real.frame")
	var title2 [8]byte
	copy(title2[:], f2[2:10])
	noise := cat([]byte{0xDB, 0x08}, []byte("NOISE\x01\x02\x03"), []byte{0x81, 0xFF, 0x30, 0, 0, 0, 9})
	contains := func(frames [][]byte, f []byte) int {
		n := 0
		for _, x := range frames {
			if bytes.Equal(x, f) {
				n++
			}
		}
		return n
	}
	for _, oneByte := range []bool{false, true} {
		in := cat(noise, f2, f1, noise[:12], f2)
		var r io.Reader = bytes.NewReader(in)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		// Nothing known yet (the first minutes of a forwarder): the false
		// frame is forwarded too, and every real frame after it.
		got, st := forwardAll(r)
		if contains(got, f2) != 2 || contains(got, f1) != 1 || st.Overlapped == 0 {
			t.Errorf("one byte %v, nothing known: %d frames, f2 ×%d, f1 ×%d, %+v", oneByte, len(got), contains(got, f2), contains(got, f1), st)
		}
		// The meter's title known: the false header is cut where the real
		// frame starts, and only real frames go out.
		r = bytes.NewReader(in)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		got, st = forwardAll(r, title2)
		if len(got) != 3 || contains(got, f2) != 2 || contains(got, f1) != 1 || st.Truncated == 0 {
			t.Errorf("one byte %v, title known: %d frames, %+v", oneByte, len(got), st)
		}
	}
}

// TestKnowIsBounded: the known titles are a ring of maxKnown.
func TestKnowIsBounded(t *testing.T) {
	s := NewScanner(bytes.NewReader(nil))
	for i := range 3 * maxKnown {
		s.Know([8]byte{byte(i), byte(i >> 8)})
	}
	if s.isKnown([]byte{0, 0, 0, 0, 0, 0, 0, 0}) || !s.isKnown([]byte{byte(3*maxKnown - 1), 0, 0, 0, 0, 0, 0, 0}) {
		t.Errorf("ring does not keep the newest %d", maxKnown)
	}
}
