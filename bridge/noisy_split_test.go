package bridge

import (
	"fmt"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestForwarderNoisyStream: every intact frame of a noisy line (noise, a
// frame cut short, false headers: sim.NoisyLine) reaches the decryptor,
// in whatever chunks the forwarder reads it. A meter's first frame cut
// short held every later frame of that meter for an hour before: no
// decryptor answers a frame of a meter it never authenticated, and the
// forwarder kept one frame in flight per meter.
func TestForwarderNoisyStream(t *testing.T) {
	stream, intact, titles := sim.NoisyLine(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	keys := decrypt.Options{Keys: map[decrypt.Title]decrypt.Key{}}
	for _, title := range titles {
		keys.Keys[title] = sim.DemoKey
	}
	for _, chunk := range []int{len(stream), 512, 61} {
		t.Run(fmt.Sprintf("chunks of %d", chunk), func(t *testing.T) {
			broker := testenv.Mosquitto(t, "")
			dec, _ := runDecryptor(t, opts(t, broker.URL, "dec", &logBuffer{}, keys), SplitOptions{StateDir: t.TempDir()})
			waitOnline(t, broker.URL, "dec")
			src := &slowReader{}
			for i := 0; i < len(stream); i += chunk {
				src.feed(stream[i:min(i+chunk, len(stream))])
			}
			fwd, _ := runForwarder(t, opts(t, broker.URL, "fwd", &logBuffer{}, decrypt.Options{}), ForwardOptions{ResendAfter: time.Second}, src)
			defer func() {
				f, c, d := fwd.Stats()
				t.Logf("published %d; forwarded %d, confirmed %d, dropped %d, queued %d, rejected %d", dec.Stats().Telegrams, f, c, d, fwd.Queued(), fwd.Rejected())
			}()
			testenv.WaitFor(t, 20*time.Second, "every intact frame published", func() bool { return dec.Stats().Telegrams == int64(intact) })
		})
	}
}
