package bridge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

func TestNewerStamp(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"261025025950S", "261025025940S", true},
		{"261025025940S", "261025025950S", false},
		{"261025020000W", "261025025950S", true}, // the repeated hour comes after
		{"261025025950S", "261025020000W", false},
		{"261025023000W", "261025023000S", true},
		{"261025030000W", "261025025950W", true},
		{"260329030000S", "260329015950W", true}, // spring: 02:00W is 03:00S
		{"261025020000W", "261025020000W", false},
		{"261025020000", "261025025950", true}, // no season letter: any other stamp
		{"261025020000", "261025020000", false},
	} {
		if got := newerStamp(tc.a, tc.b); got != tc.want {
			t.Errorf("newerStamp(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestPlainMeterThroughOctober: a plain meter's telegrams through the
// night summer time ends, one every 10 s, 02:59:50S and then the repeated
// hour from 02:00:00W, reach Home Assistant's side: none of the repeated
// hour's is taken for a replay (a whole hour was dropped every October).
func TestPlainMeterThroughOctober(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", &logBuffer{}, decrypt.Options{}), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	sub := testenv.Subscribe(t, broker.URL, "smarty/SAG1030700000001/0-0:1.0.0")
	pub := testenv.Subscribe(t, broker.URL)
	at := time.Date(2026, 10, 25, 0, 59, 30, 0, time.UTC) // 02:59:30 summer time
	const n = 8
	for i := range n {
		local, season := at.Add(2*time.Hour), "S"
		if !at.Before(time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC)) {
			local, season = at.Add(time.Hour), "W"
		}
		stamp := local.Format("060102150405") + season
		publishRaw(t, pub.Client, "smarty/raw/x", plainTelegram(fmt.Sprintf("0-0:1.0.0(%s)", stamp), fmt.Sprintf("1-0:1.8.0(%06d.000*kWh)", 100+i)))
		at = at.Add(10 * time.Second)
	}
	testenv.WaitFor(t, 10*time.Second, "every telegram", func() bool { return dec.Stats().Telegrams == n })
	sub.WaitValue("smarty/SAG1030700000001/0-0:1.0.0", "2026-10-25T02:00:40+01:00", 5*time.Second) // the repeated hour's last
	if d := dec.Duplicates(); d != 0 {
		t.Errorf("%d telegrams of the repeated hour taken for duplicates", d)
	}
}

// TestForgedPlainTelegramsCannotBlock: a client that may publish on the raw
// topics sends, among a plain meter's real telegrams, one with its total
// raised to 999,999 kWh, one stamped in 2099, and one with a plausible but
// false total. None of them blocks the real telegrams after it: the first
// two are not believed, the third is followed by the real series again
// within three telegrams (before, the forged total held back every real
// reading after it).
func TestForgedPlainTelegramsCannotBlock(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", logs, decrypt.Options{}), SplitOptions{StateDir: t.TempDir()})
	waitOnline(t, broker.URL, "dec")
	total := "smarty/SAG1030700000001/1-0:1.8.0"
	sub := testenv.Subscribe(t, broker.URL, total)
	pub := testenv.Subscribe(t, broker.URL)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	send := func(at time.Time, kWh float64) {
		stamp := at.Add(time.Hour).Format("060102150405") + "W"
		publishRaw(t, pub.Client, "smarty/raw/x", plainTelegram("0-0:1.0.0("+stamp+")", fmt.Sprintf("1-0:1.8.0(%010.3f*kWh)", kWh)))
		time.Sleep(30 * time.Millisecond)
	}
	real := func(i int) (time.Time, float64) {
		return t0.Add(time.Duration(i) * 10 * time.Second), 100 + float64(i)/10
	}

	send(real(0))
	send(t0.Add(5*time.Second), 999999) // an implausible total
	send(real(1))
	sub.WaitValue(total, "100.100", 5*time.Second)
	send(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), 100.15) // a stamp far ahead
	send(real(2))
	sub.WaitValue(total, "100.200", 5*time.Second)
	send(t0.Add(25*time.Second), 110) // plausible, false
	sub.WaitValue(total, "110.000", 5*time.Second)
	for i := 3; i <= 5; i++ {
		send(real(i))
	}
	sub.WaitValue(total, "100.500", 5*time.Second)
	send(real(6))
	sub.WaitValue(total, "100.600", 5*time.Second)
	if n := dec.Stats().Telegrams; n != 8 {
		t.Errorf("%d telegrams published, want the 7 real ones and the plausible forgery", n)
	}
	// 100.0, 100.1, 100.2, the forged 110, then 100.5 and 100.6: the two
	// real readings below the forged one were held back.
	if got := sub.N(total); got != 6 {
		t.Errorf("the total was published %d times, want 6", got)
	}
	for _, want := range []string{"faster than any connection", "far ahead", "stayed down"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning with %q:\n%s", want, logs)
		}
	}
}
