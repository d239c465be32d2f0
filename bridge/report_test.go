package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
)

func TestDiagnose(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	w := 30 * time.Second
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, c := range []struct {
		name string
		o    observation
		want discovery.Problem
	}{
		{"just started, nothing yet", observation{now: at(5 * time.Second)}, discovery.ProblemNoMeter},
		{"bytes at start are not yet a verdict", observation{now: at(5 * time.Second), lastByte: at(4 * time.Second)}, discovery.ProblemNoMeter},
		{"silent port", observation{now: at(time.Minute)}, discovery.ProblemNoData},
		{"bytes, no frame", observation{now: at(time.Minute), lastByte: at(59 * time.Second)}, discovery.ProblemNoFrames},
		{"telegrams", observation{now: at(time.Minute), lastByte: at(59 * time.Second), lastValid: at(58 * time.Second)}, discovery.ProblemOK},
		// The last telegram's bytes are seen at the reporter's next tick:
		// a meter falling silent is no_data at once, not no_frames first.
		{"a meter falls silent", observation{now: at(90*time.Second + 500*time.Millisecond), lastByte: at(61 * time.Second), lastValid: at(60 * time.Second)}, discovery.ProblemNoData},
		{"telegrams stopped, bytes go on", observation{now: at(2 * time.Minute), lastByte: at(119 * time.Second), lastValid: at(time.Minute)}, discovery.ProblemNoFrames},
		{"wrong key", observation{now: at(time.Minute), reject: rejection{at: at(59 * time.Second), reason: telegrams.Authentication}}, discovery.ProblemWrongKey},
		{"authentication key", observation{now: at(time.Minute), reject: rejection{at: at(59 * time.Second), reason: telegrams.Authentication, authKey: true}}, discovery.ProblemAuthKey},
		{"a damaged frame among good ones", observation{now: at(time.Minute), lastValid: at(58 * time.Second), reject: rejection{at: at(59 * time.Second), reason: telegrams.Authentication, keyWorked: true}}, discovery.ProblemCRCErrors},
		{"crc", observation{now: at(time.Minute), reject: rejection{at: at(59 * time.Second), reason: telegrams.CRC}}, discovery.ProblemCRCErrors},
		{"no key", observation{now: at(time.Minute), reject: rejection{at: at(59 * time.Second), reason: telegrams.NoKey}}, discovery.ProblemNoKey},
		{"an old rejection is forgotten", observation{now: at(time.Minute), lastValid: at(59 * time.Second), reject: rejection{at: at(10 * time.Second), reason: telegrams.CRC}}, discovery.ProblemOK},
		{"decryptor with nothing yet", observation{now: at(time.Minute), mode: "decrypt"}, discovery.ProblemNoMeter},
		{"decryptor whose meters fell silent", observation{now: at(2 * time.Minute), mode: "decrypt", lastByte: at(10 * time.Second), lastValid: at(10 * time.Second)}, discovery.ProblemNoData},
		{"forwarder, nothing confirmed", observation{now: at(time.Minute), mode: "forward", lastValid: at(59 * time.Second), oldestUnconfirmed: at(time.Second), lastConfirmed: t0}, discovery.ProblemNoDecryptor},
		{"forwarder, confirmed", observation{now: at(time.Minute), mode: "forward", lastValid: at(59 * time.Second), oldestUnconfirmed: at(59 * time.Second), lastConfirmed: at(58 * time.Second)}, discovery.ProblemOK},
	} {
		c.o.started, c.o.window = t0, w
		if c.o.mode == "" {
			c.o.mode = "bridge"
		}
		if got, _ := diagnose(c.o); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestFrameRate(t *testing.T) {
	var f frameRate
	var got float64
	for i := range 120 {
		got = f.add(int64(i) / 10) // one frame every 10 s
	}
	if got != 6 {
		t.Errorf("%v frames per minute, want 6", got)
	}
}

// BenchmarkReporterTick is the once-a-second cost of the bridge's own
// device when nothing has to be published.
func BenchmarkReporterTick(b *testing.B) {
	br, err := New(Options{MeterTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	br.startReport("bridge")
	br.report.publish = func(context.Context, string, []byte) bool { return true }
	ctx := context.Background()
	now := time.Now()
	br.report.tick(ctx, now)
	b.ReportAllocs()
	for b.Loop() {
		br.report.tick(ctx, now)
	}
}
