package crc16

import (
	"os"
	"testing"
)

// bitwise is the textbook definition, kept here as the reference.
func bitwise(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ poly
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

func TestCheckVector(t *testing.T) {
	// The catalogue check value of CRC-16/ARC.
	if got := Checksum([]byte("123456789")); got != 0xBB3D {
		t.Fatalf("Checksum(123456789) = %04X, want BB3D", got)
	}
}

func TestMatchesBitwise(t *testing.T) {
	b := make([]byte, 300)
	for i := range b {
		b[i] = byte(i*131 + 7)
	}
	for n := range len(b) {
		if got, want := Checksum(b[:n]), bitwise(b[:n]); got != want {
			t.Fatalf("len %d: %04X, want %04X", n, got, want)
		}
	}
}

func TestTelegramVectors(t *testing.T) {
	for name, want := range map[string]string{
		"smarty-2018-real": "CFDE", "smarty-2026": "80F6", "spec-appendix-a": "8B52",
		"austria-t210dr": "7EF9", "dsmr5-nl": "6EEE",
	} {
		b, err := os.ReadFile("../../testdata/" + name + ".telegram")
		if err != nil {
			t.Fatal(err)
		}
		end := 0
		for i, c := range b {
			if c == '!' {
				end = i + 1
			}
		}
		if !Verify(b[:end], []byte(want)) {
			t.Errorf("%s: CRC %04X, want %s", name, Checksum(b[:end]), want)
		}
	}
}

func TestParseHex(t *testing.T) {
	for in, want := range map[string]int{"CFDE": 0xCFDE, "cfde": 0xCFDE, "0000": 0, "CFD": 0xCFD, "B9F": 0xB9F, "f": 0xF, "": -1, "CFDG": -1, "CFDE0": -1, "0x12": -1} {
		v, ok := ParseHex([]byte(in))
		if (want < 0) == ok || (ok && int(v) != want) {
			t.Errorf("ParseHex(%q) = %X, %v", in, v, ok)
		}
	}
}

func BenchmarkChecksum1K(b *testing.B) {
	buf := make([]byte, 1200)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Checksum(buf)
	}
}
