package decrypt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpen feeds arbitrary frames to Open: it must return a plaintext or
// one of the typed errors, never panic, and leave dst alone on error.
func FuzzOpen(f *testing.F) {
	files, _ := filepath.Glob("../testdata/*.frame")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b[:len(b)/2], true)
	}
	keyA := mustKey(f, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	real := mustKey(f, "D491470F47126332B07D1923B3504188")
	verify, _ := NewOpener(Options{Key: keyA, Keys: map[Title]Key{{'S', 'A', 'G', 'g', 'p', 0x01, 0xBD, 0x54}: *real}})
	skip, _ := NewOpener(Options{Key: keyA, SkipTag: true})
	f.Fuzz(func(t *testing.T, frame []byte, skipTag bool) {
		o := verify
		if skipTag {
			o = skip
		}
		dst := []byte("dst")
		out, h, err := o.Open(dst, frame)
		if err != nil {
			if !errors.Is(err, ErrHeader) && !errors.Is(err, ErrShort) && !errors.Is(err, ErrAuth) && !errors.Is(err, ErrNoKey) {
				t.Fatalf("untyped error %v", err)
			}
			if string(out) != "dst" {
				t.Fatal("dst changed on error")
			}
			return
		}
		if h.Len > len(frame) || h.Start > h.Len || !bytes.HasPrefix(out, []byte("dst")) {
			t.Fatalf("header %+v for %d bytes", h, len(frame))
		}
		if len(out)-3 != h.Len-h.Start-TagSize {
			t.Fatalf("plaintext %d bytes, ciphertext %d", len(out)-3, h.Len-h.Start-TagSize)
		}
	})
}

// FuzzSealOpen checks that Open inverts Seal for any plaintext and counter.
func FuzzSealOpen(f *testing.F) {
	f.Add([]byte("/Lux5\\253663629_D\r\n\r\n!0000\r\n"), uint32(1))
	f.Add([]byte{}, uint32(0))
	k := *mustKey(f, "000102030405060708090A0B0C0D0E0F")
	o, _ := NewOpener(Options{Key: &k})
	f.Fuzz(func(t *testing.T, pt []byte, counter uint32) {
		if len(pt) > 60000 {
			return
		}
		frame := Seal(nil, k, DefaultAuthKey, Title{'S', 'A', 'G', 1}, counter, pt)
		got, h, err := o.Open(nil, frame)
		if err != nil || len(got) != len(pt) || len(pt) > 0 && !bytes.Equal(got, pt) || h.Counter != counter || h.Len != len(frame) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
