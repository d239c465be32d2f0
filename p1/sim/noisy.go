package sim

import (
	"fmt"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
)

// NoisyLine is what a P1 line shared by three meters (DemoKey) can carry on
// a bad day: noise, a frame cut short, and a plausible false Smarty header
// declaring 256 bytes, around 8 intact frames. The first meter's first
// frame is cut short and its next one follows the false header: the order
// in which a forwarder once lost every frame of that meter (issue 20).
// Frames are stamped from t0 on, ten seconds apart.
func NoisyLine(t0 time.Time) (stream []byte, intact int, titles []decrypt.Title) {
	var meters []*Meter
	for i := range 3 {
		m := New(Options{Start: t0, Seed: uint64(40 + i), Counter: 100, MeterID: fmt.Sprintf("SAG110000000004%d", i)})
		meters = append(meters, m)
		titles = append(titles, m.Title())
	}
	a, b, c := meters[0], meters[1], meters[2]
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Second) }
	falseHeader := append([]byte{0xDB, 0x08, 'S', 'A', 'G', 0x47, 0x11, 0x02, 0x33, 0x01, 0x82, 0x01, 0x00, 0x30}, "\x00\x00\x01\x02noise"...)
	cut := a.Frame(nil, at(0))
	stream = append(stream, cut[:len(cut)*3/5]...)
	stream = b.Frame(stream, at(0))
	stream = append(stream, falseHeader...)
	stream = a.Frame(stream, at(1))
	stream = append(stream, "\x00\x55\xAA"...)
	stream = c.Frame(stream, at(1))
	stream = b.Frame(stream, at(1))
	stream = a.Frame(stream, at(2))
	stream = append(stream, falseHeader...)
	stream = c.Frame(stream, at(2))
	stream = b.Frame(stream, at(2))
	stream = a.Frame(stream, at(3))
	return stream, 8, titles
}
