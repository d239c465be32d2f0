// Package sim simulates a Luxembourg Smarty meter: it writes realistic
// telegrams (a daily load curve, a rooftop solar bump at noon, energy
// registers that integrate the power, three phases, gas on M-Bus channel 1)
// and seals them into encrypted frames as the meter's P1 port sends them.
// It feeds the demo, `smartybridge simulate`, tests and load generators.
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/crc16"
)

// DemoKey is the fixed key of the simulated meter. It protects nothing.
var DemoKey = decrypt.Key{0xDE, 0x40, 0xDE, 0x40, 0x53, 0x4D, 0x41, 0x52, 0x54, 0x59, 0xDE, 0x40, 0xDE, 0x40, 0x00, 0x01}

// DemoKeyHex is DemoKey as SMARTY_KEY takes it.
const DemoKeyHex = "DE40DE40534D41525459DE40DE400001"

// Options describe the simulated meter.
type Options struct {
	Key     decrypt.Key   // zero: DemoKey
	AuthKey decrypt.Key   // zero: decrypt.DefaultAuthKey
	Title   decrypt.Title // zero: "SAG" and the meter's number
	MeterID string        // "SAG" + 13 digits; default SAG1100000000001
	Start   time.Time     // the meter's clock at the first telegram
	Counter uint32        // frame counter of the first frame
	Seed    uint64        // for the noise; same seed, same readings
}

// ClockCounter is a frame counter for a simulated meter started at t: ten
// per second since 2026, so that a simulator started again continues above
// the counters it sent before, as a real meter does (bridges drop frames
// whose counter does not grow).
func ClockCounter(t time.Time) uint32 {
	return uint32(t.Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)).Milliseconds() / 100)
}

// Meter is a simulated meter. Not safe for concurrent use.
type Meter struct {
	o        Options
	rnd      *rand.Rand
	now      time.Time
	counter  uint32
	importWh float64 // registers, in Wh and dm³ for exact integration
	exportWh float64
	reactImp float64
	reactExp float64
	gasL     float64
	failures int
	buf      []byte
}

// DemoTitle is the system title of a meter made with the default
// options: what `smartybridge simulate` sends under.
var DemoTitle = New(Options{}).Title()

// New returns a meter whose registers start at plausible values.
func New(o Options) *Meter {
	if o.Key == (decrypt.Key{}) {
		o.Key = DemoKey
	}
	if o.AuthKey == (decrypt.Key{}) {
		o.AuthKey = decrypt.DefaultAuthKey
	}
	if o.MeterID == "" {
		o.MeterID = "SAG1100000000001"
	}
	if o.Title == (decrypt.Title{}) {
		copy(o.Title[:], "SAG")
		n, _ := strconv.ParseUint(o.MeterID[len(o.MeterID)-10:], 10, 64)
		for i := 7; i >= 3; i-- {
			o.Title[i] = byte(n)
			n >>= 8
		}
	}
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	return &Meter{
		o: o, rnd: rand.New(rand.NewPCG(o.Seed, o.Seed^0x5EED)), now: o.Start, counter: o.Counter,
		importWh: 4_231_517, exportWh: 1_120_880, reactImp: 62_310, reactExp: 512_044, gasL: 2_103_771, failures: 7,
	}
}

// Title is the meter's system title.
func (m *Meter) Title() decrypt.Title { return m.o.Title }

// ID is the meter's number as printed on it.
func (m *Meter) ID() string { return m.o.MeterID }

// Load is the household's demand and solar production at t, in kW.
func Load(t time.Time, noise float64) (demand, solar float64) {
	t = luxTime(t)
	h := float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600
	bump := func(center, width, height float64) float64 {
		d := (h - center) / width
		return height * math.Exp(-d*d/2)
	}
	demand = 0.22 + bump(7.5, 0.8, 1.1) + bump(12.5, 0.7, 0.6) + bump(19.2, 1.4, 2.1)
	demand *= 1 + noise
	demand += appliances(h)
	if h > 7 && h < 19 {
		solar = 3.4 * math.Sin(math.Pi*(h-7)/12)
	}
	return demand, solar
}

// appliances are the big loads of a household's day at local hour h, in
// kW, so that the demo shows Luxembourg's reference power at work: against
// 7 kW, the instantaneous water heater at 7:15 and the car charging at
// 18:30 overrun their quarters, the oven and kettle at noon (a spike then
// quiet in the same quarter) and the sauna at 21:05 (split over two
// quarters) do not.
func appliances(h float64) float64 {
	on := func(from, minutes float64) bool { return h >= from && h < from+minutes/60 }
	switch {
	case on(7.25, 12):
		return 9
	case on(12, 8):
		return 7.5
	case on(18.5, 13):
		return 11
	case on(21+5.0/60, 20):
		return 8.5
	}
	return 0
}

// Telegram advances the meter to at and returns the telegram it sends then.
// The slice is reused by the next call.
func (m *Meter) Telegram(at time.Time) []byte {
	dt := at.Sub(m.now).Hours()
	if dt < 0 {
		dt = 0
	}
	m.now = at
	demand, solar := Load(at, 0.06*(m.rnd.Float64()-0.5))
	net := demand - solar
	imp, exp := max(net, 0), max(-net, 0)
	m.importWh += imp * 1000 * dt
	m.exportWh += exp * 1000 * dt
	m.reactImp += 0.05 * imp * 1000 * dt
	m.reactExp += 0.12 * demand * 1000 * dt
	heating := 0.08 + 0.5*math.Max(0, math.Cos(2*math.Pi*(float64(luxTime(at).Hour())-7)/24))
	m.gasL += heating * 1000 * dt

	share := [3]float64{0.45, 0.30, 0.25}
	volts := [3]float64{230.4 + 2*m.rnd.Float64(), 229.1 + 2*m.rnd.Float64(), 231.0 + 2*m.rnd.Float64()}
	b := m.buf[:0]
	b = append(b, "/Lux5\\253663629_D\r\n\r\n1-3:0.2.8(42)\r\n0-0:1.0.0("...)
	b = appendStamp(b, at)
	b = append(b, ")\r\n0-0:42.0.0("...)
	b = appendHex(b, m.o.MeterID)
	b = append(b, ")\r\n"...)
	b = obj(b, "1-0:1.8.0", m.importWh/1000, 10, 3, "kWh")
	b = obj(b, "1-0:2.8.0", m.exportWh/1000, 10, 3, "kWh")
	b = obj(b, "1-0:3.8.0", m.reactImp/1000, 10, 3, "kvarh")
	b = obj(b, "1-0:4.8.0", m.reactExp/1000, 10, 3, "kvarh")
	b = obj(b, "1-0:1.7.0", imp, 6, 3, "kW")
	b = obj(b, "1-0:2.7.0", exp, 6, 3, "kW")
	b = obj(b, "1-0:3.7.0", 0.05*imp, 6, 3, "kvar")
	b = obj(b, "1-0:4.7.0", 0.12*demand, 6, 3, "kvar")
	b = append(b, "0-0:17.0.0(027.6*kVA)\r\n"...)
	b = obj(b, "1-0:9.7.0", imp*1.01, 6, 3, "kVA")
	b = obj(b, "1-0:10.7.0", exp*1.01, 6, 3, "kVA")
	b = append(b, "1-1:31.4.0(040*A)(-040*A)\r\n0-0:96.3.10(1)\r\n0-1:96.3.10(0)\r\n0-2:96.3.10(0)\r\n0-0:96.7.21("...)
	b = fmt.Appendf(b, "%05d)\r\n", m.failures)
	b = append(b, "1-0:32.32.0(00003)\r\n1-0:52.32.0(00002)\r\n1-0:72.32.0(00004)\r\n1-0:32.36.0(00000)\r\n1-0:52.36.0(00000)\r\n1-0:72.36.0(00000)\r\n"...)
	b = append(b, "0-0:96.13.0()\r\n0-0:96.13.2()\r\n0-0:96.13.3()\r\n0-0:96.13.4()\r\n0-0:96.13.5()\r\n"...)
	for i, code := range []string{"1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0"} {
		b = obj(b, code, volts[i], 5, 1, "V")
	}
	for i, code := range []string{"1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0"} {
		b = obj(b, code, math.Round(math.Abs(net)*share[i]*1000/volts[i]), 3, 0, "A")
	}
	for i, code := range []string{"1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0"} {
		b = obj(b, code, imp*share[i], 6, 3, "kW")
	}
	for i, code := range []string{"1-0:22.7.0", "1-0:42.7.0", "1-0:62.7.0"} {
		b = obj(b, code, exp*share[i], 6, 3, "kW")
	}
	for i, code := range []string{"1-0:23.7.0", "1-0:43.7.0", "1-0:63.7.0"} {
		b = obj(b, code, 0.05*imp*share[i], 6, 3, "kvar")
	}
	for i, code := range []string{"1-0:24.7.0", "1-0:44.7.0", "1-0:64.7.0"} {
		b = obj(b, code, 0.12*demand*share[i], 6, 3, "kvar")
	}
	b = append(b, "0-1:24.1.0(003)\r\n0-1:96.1.0("...)
	b = appendHex(b, "FLO1823701203"+m.o.MeterID[len(m.o.MeterID)-2:])
	b = append(b, ")\r\n0-1:24.2.1("...)
	// The gas meter reports every five minutes.
	b = appendStamp(b, at.Truncate(5*time.Minute))
	b = append(b, ")("...)
	b = fmt.Appendf(b, "%09.3f*m3)\r\n0-1:24.4.0(1)\r\n!", math.Floor(m.gasL)/1000)
	b = fmt.Appendf(b, "%04X\r\n", crc16.Checksum(b))
	m.buf = b
	return b
}

// Frame advances the meter to at and returns the encrypted frame it sends
// then, appended to dst.
func (m *Meter) Frame(dst []byte, at time.Time) []byte {
	t := m.Telegram(at)
	f := decrypt.Seal(dst, m.o.Key, m.o.AuthKey, m.o.Title, m.counter, t)
	m.counter++
	return f
}

// obj appends "code(value*unit)" with the value zero-padded to width.
func obj(b []byte, code string, v float64, width, prec int, unit string) []byte {
	b = append(b, code...)
	b = append(b, '(')
	b = fmt.Appendf(b, "%0*.*f", width, prec, math.Max(v, 0))
	b = append(b, '*')
	b = append(b, unit...)
	return append(b, ")\r\n"...)
}

func appendHex(b []byte, s string) []byte {
	const digits = "0123456789ABCDEF"
	for i := range len(s) {
		b = append(b, digits[s[i]>>4], digits[s[i]&0xF])
	}
	return b
}

// appendStamp writes t as the meter does: Luxembourg local time,
// YYMMDDhhmmss, then S in summer (UTC+2) or W in winter (UTC+1).
func appendStamp(b []byte, t time.Time) []byte {
	b = luxTime(t).AppendFormat(b, "060102150405")
	if isSummer(t) {
		return append(b, 'S')
	}
	return append(b, 'W')
}

// luxTime is t on Luxembourg's wall clock (as a UTC time.Time, so that no
// time zone database is needed).
func luxTime(t time.Time) time.Time {
	if isSummer(t) {
		return t.UTC().Add(2 * time.Hour)
	}
	return t.UTC().Add(time.Hour)
}

// isSummer applies the EU rule: summer time from the last Sunday of March,
// 01:00 UTC, to the last Sunday of October, 01:00 UTC.
func isSummer(t time.Time) bool {
	t = t.UTC()
	y := t.Year()
	lastSunday := func(month time.Month) time.Time {
		d := time.Date(y, month+1, 0, 1, 0, 0, 0, time.UTC) // last day of month
		return d.AddDate(0, 0, -int(d.Weekday()))
	}
	return !t.Before(lastSunday(time.March)) && t.Before(lastSunday(time.October))
}
