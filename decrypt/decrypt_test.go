package decrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

type vector struct {
	name    string
	key     string
	title   string
	counter uint32
}

var vectors = []vector{
	{"smarty-2018-real", "D491470F47126332B07D1923B3504188", "534147677001BD54", 0x0005A8E3},
	{"smarty-2026", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "SYSTEMID", 0x10000001},
	{"spec-appendix-a", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "SYSTEMID", 0x10000001},
	{"austria-t210dr", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "SYSTEMID", 0x10000001},
}

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t testing.TB, s string) *Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

func TestOpenVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			o, err := NewOpener(Options{Key: mustKey(t, v.key)})
			if err != nil {
				t.Fatal(err)
			}
			frame := read(t, v.name+".frame")
			got, h, err := o.Open(nil, frame)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if want := read(t, v.name+".telegram"); !bytes.Equal(got, want) {
				t.Errorf("plaintext differs from %s.telegram", v.name)
			}
			title, _ := ParseTitle(v.title)
			if h.Title != title || h.Counter != v.counter || h.Len != len(frame) {
				t.Errorf("header = %v/%08X/%d, want %v/%08X/%d", h.Title, h.Counter, h.Len, title, v.counter, len(frame))
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	real := read(t, "smarty-2018-real.frame")
	good := mustKey(t, "D491470F47126332B07D1923B3504188")
	wrong := mustKey(t, "00000000000000000000000000000001")
	otherAuth := *mustKey(t, "FFEEDDCCBBAA99887766554433221100")
	flipped := bytes.Clone(real)
	flipped[100] ^= 1
	flippedTag := bytes.Clone(real)
	flippedTag[len(flippedTag)-1] ^= 1
	tests := []struct {
		name  string
		opts  Options
		frame []byte
		want  error
	}{
		{"wrong key", Options{Key: wrong}, real, ErrAuth},
		{"wrong auth key", Options{Key: good, AuthKey: otherAuth}, real, ErrAuthKey},
		{"flipped ciphertext bit", Options{Key: good}, flipped, ErrAuth},
		{"flipped tag bit", Options{Key: good}, flippedTag, ErrAuthKey},
		{"no key", Options{}, real, ErrNoKey},
		{"truncated", Options{Key: good}, real[:len(real)-1], ErrShort},
		{"header only", Options{Key: good}, real[:12], ErrShort},
		{"not a frame", Options{Key: good}, []byte("/Lux5\\253663629_D\r\n\r\n!0000\r\n"), ErrHeader},
		{"skip tag with wrong key", Options{Key: wrong, SkipTag: true}, real, ErrAuth},
		{"skip tag, damaged plaintext", Options{Key: good, SkipTag: true}, flipped, ErrAuth},
		{"crc mismatch authenticates", Options{Key: good}, read(t, "crc-mismatch.frame"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := NewOpener(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			dst := []byte("keep")
			out, _, err := o.Open(dst, tt.frame)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && string(out) != "keep" {
				t.Errorf("dst changed on error: %q", out)
			}
		})
	}
	if errors.Is(ErrAuth, ErrAuthKey) || !errors.Is(ErrAuthKey, ErrAuth) {
		t.Error("ErrAuthKey must wrap ErrAuth, not the other way round")
	}
}

func TestSkipTagOpensWithOtherAuthKey(t *testing.T) {
	o, _ := NewOpener(Options{
		Key:     mustKey(t, "D491470F47126332B07D1923B3504188"),
		AuthKey: *mustKey(t, "FFEEDDCCBBAA99887766554433221100"),
		SkipTag: true,
	})
	got, _, err := o.Open(nil, read(t, "smarty-2018-real.frame"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, read(t, "smarty-2018-real.telegram")) {
		t.Error("plaintext differs")
	}
}

func TestKeyring(t *testing.T) {
	a, b := *mustKey(t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), *mustKey(t, "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
	t1, t2 := Title{'S', 'A', 'G', 1}, Title{'S', 'A', 'G', 2}
	f1 := Seal(nil, a, DefaultAuthKey, t1, 1, []byte("/one"))
	f2 := Seal(nil, b, DefaultAuthKey, t2, 1, []byte("/two"))
	o, _ := NewOpener(Options{Keys: map[Title]Key{t1: a, t2: b}})
	for _, f := range [][]byte{f1, f2} {
		if _, _, err := o.Open(nil, f); err != nil {
			t.Errorf("Open: %v", err)
		}
	}
	if o.HasKey(Title{'X'}) {
		t.Error("HasKey for unknown title without default")
	}
	f3 := Seal(nil, a, DefaultAuthKey, Title{'X'}, 1, []byte("/three"))
	if _, _, err := o.Open(nil, f3); !errors.Is(err, ErrNoKey) {
		t.Errorf("unknown title: %v", err)
	}
	o, _ = NewOpener(Options{Key: &a, Keys: map[Title]Key{t2: b}})
	for _, f := range [][]byte{f1, f2, f3} {
		if _, _, err := o.Open(nil, f); err != nil {
			t.Errorf("with default key: %v", err)
		}
	}
}

func TestSealLengthForms(t *testing.T) {
	k := *mustKey(t, "000102030405060708090A0B0C0D0E0F")
	for _, n := range []int{1, 110, 111, 200, 238, 239, 1200, 4000} {
		pt := bytes.Repeat([]byte{'x'}, n)
		f := Seal(nil, k, DefaultAuthKey, Title{'S', 'A', 'G'}, 7, pt)
		h, err := ParseHeader(f)
		if err != nil || h.Len != len(f) || h.Counter != 7 {
			t.Fatalf("n=%d: header %+v, err %v", n, h, err)
		}
		wantForm := map[bool]byte{true: 0x81, false: 0x82}[5+n+TagSize <= 0xFF]
		if 5+n+TagSize < 0x80 {
			wantForm = byte(5 + n + TagSize)
		}
		if f[10] != wantForm {
			t.Errorf("n=%d: length byte %02X, want %02X", n, f[10], wantForm)
		}
		o, _ := NewOpener(Options{Key: &k})
		got, _, err := o.Open(nil, f)
		if err != nil || !bytes.Equal(got, pt) {
			t.Errorf("n=%d: round trip: %v", n, err)
		}
	}
}

func TestSealReproducesVector(t *testing.T) {
	k := *mustKey(t, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	title, _ := ParseTitle("SYSTEMID")
	got := Seal(nil, k, DefaultAuthKey, title, 0x10000001, read(t, "smarty-2026.telegram"))
	if !bytes.Equal(got, read(t, "smarty-2026.frame")) {
		t.Error("Seal does not reproduce smarty-2026.frame")
	}
}

func TestKeyNeverPrints(t *testing.T) {
	k := *mustKey(t, "D491470F47126332B07D1923B3504188")
	for _, s := range []string{k.String(), k.GoString(), k.LogValue().String()} {
		if s != "[redacted]" && s != "decrypt.Key{[redacted]}" {
			t.Errorf("key printed as %q", s)
		}
	}
}

func TestParseKey(t *testing.T) {
	for in, ok := range map[string]bool{
		"D491470F47126332B07D1923B3504188":                    true,
		"d491470f47126332b07d1923b3504188":                    true,
		"D4 91 47 0F 47 12 63 32 B0 7D 19 23 B3 50 41 88":     true,
		"D491470F47126332B07D1923B350418":                     false,
		"D491470F47126332B07D1923B350418G":                    false,
		"":                                                    false,
		"0xD491470F47126332B07D1923B3504188":                  true,
		`"D491470F47126332B07D1923B3504188"`:                  true,
		" 'D4:91:47:0F:47:12:63:32:B0:7D:19:23:B3:50:41:88' ": true,
		"D491-470F-4712-6332-B07D-1923-B350-4188":             true,
		"0x0xD491470F47126332B07D1923B3504188":                false,
	} {
		k, err := ParseKey(in)
		if (err == nil) != ok {
			t.Errorf("ParseKey(%q): %v", in, err)
		} else if err != nil && !errors.Is(err, ErrKeyFormat) {
			t.Errorf("ParseKey(%q): error %v is not ErrKeyFormat", in, err)
		} else if ok && fmt.Sprintf("%X", k[:]) != "D491470F47126332B07D1923B3504188" {
			t.Errorf("ParseKey(%q) = %X", in, k[:])
		}
		// An error describes the text; it never quotes any run of it.
		if err != nil && len(in) >= 12 && strings.Contains(strings.ToUpper(err.Error()), strings.ToUpper(in[:12])) {
			t.Errorf("ParseKey error quotes the input: %v", err)
		}
	}
	if _, err := ParseTitle("D491470F47126332B07D1923B3504188"); err == nil || strings.Contains(err.Error(), "D491470F4712") {
		t.Errorf("ParseTitle of a key: %v", err)
	}
}

// BenchmarkAEADOpenFloor is the floor: a bare cipher.AEAD.Open of the same
// frame into a reused buffer.
func BenchmarkAEADOpenFloor(b *testing.B) {
	frame := read(b, "smarty-2026.frame")
	k := mustKey(b, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	block, _ := aes.NewCipher(k[:])
	aead, _ := cipher.NewGCMWithTagSize(block, TagSize)
	h, _ := ParseHeader(frame)
	nonce := make([]byte, 12)
	copy(nonce, h.Title[:])
	copy(nonce[8:], frame[h.Start-4:h.Start])
	ad := append([]byte{0x30}, DefaultAuthKey[:]...)
	dst := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := aead.Open(dst[:0], nonce, frame[h.Start:], ad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	frame := read(b, "smarty-2026.frame")
	o, _ := NewOpener(Options{Key: mustKey(b, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")})
	dst := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := o.Open(dst[:0], frame); err != nil {
			b.Fatal(err)
		}
	}
}
