package p1

import (
	"bytes"
	"testing"
)

func BenchmarkParse(b *testing.B) {
	in := readFile(b, "smarty-2026.telegram")
	var tg Telegram
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := tg.Parse(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScan(b *testing.B) {
	in := readFile(b, "smarty-2026.frame")
	r := bytes.NewReader(in)
	s := NewScanner(r)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		r.Reset(in)
		s.eof = false
		if !s.Scan() {
			b.Fatal("no frame")
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	tg, err := Parse(readFile(b, "smarty-2026.telegram"))
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, 8192)
	b.ReportAllocs()
	for b.Loop() {
		out = tg.AppendJSON(out[:0], Origin{Encrypted: true})
	}
}
