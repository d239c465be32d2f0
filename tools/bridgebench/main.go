// Command bridgebench measures the bridge as a user runs it: it starts a
// real mosquitto and a socat pty pair, runs the smartybridge binary on the
// pty, writes simulated Smarty frames into the pty at a fixed rate and
// times, for every frame, the span from the last byte written until the
// last of its state messages reaches a subscriber. It reports latency
// percentiles, CPU time per frame, the bridge's resident memory and what
// it wrote to storage (/proc/PID/io: a Raspberry Pi's SD card wears).
//
//	go build -o /tmp/smartybridge . && go run ./tools/bridgebench -bin /tmp/smartybridge
//
// Everything runs on 127.0.0.1; the run is bounded by -frames.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
	"github.com/smartybridge/smartybridge/tools/internal/benchkit"
)

func main() {
	bin := flag.String("bin", "", "smartybridge binary to measure (required)")
	frames := flag.Int("frames", 600, "frames to send")
	every := flag.Duration("every", 100*time.Millisecond, "time between frames")
	useTLS := flag.Bool("tls", false, "the bridge reaches the broker over mqtts:// (a test CA)")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "bridgebench: -bin is required")
		os.Exit(2)
	}
	if err := run(*bin, *frames, *every, *useTLS); err != nil {
		fmt.Fprintln(os.Stderr, "bridgebench:", err)
		os.Exit(1)
	}
}

func run(bin string, frames int, every time.Duration, useTLS bool) error {
	dir, err := os.MkdirTemp("", "bridgebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// Broker: the subscriber uses the plain listener, the bridge the TLS
	// one with -tls.
	var extra, tlsURL, caFile string
	if useTLS {
		if extra, tlsURL, caFile, err = benchkit.TLSListener(dir); err != nil {
			return err
		}
	}
	mosq, addr, err := benchkit.Mosquitto(dir, extra)
	if err != nil {
		return err
	}
	defer mosq.Process.Kill()
	brokerEnv := []string{"SMARTY_MQTT_URL=mqtt://" + addr}
	if useTLS {
		brokerEnv = []string{"SMARTY_MQTT_URL=" + tlsURL, "SMARTY_MQTT_CA_FILE=" + caFile}
		time.Sleep(200 * time.Millisecond) // the second listener
	}

	// Serial cable.
	dev, meterEnd := filepath.Join(dir, "ttyP1"), filepath.Join(dir, "meter")
	socat := exec.Command("socat", "pty,raw,echo=0,link="+meterEnd, "pty,raw,echo=0,b115200,link="+dev)
	if err := socat.Start(); err != nil {
		return fmt.Errorf("socat: %w", err)
	}
	defer socat.Process.Kill()
	for range 500 {
		if _, err := os.Stat(dev); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	w, err := os.OpenFile(meterEnd, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer w.Close()

	// Subscriber: counts state messages.
	arrivals := make(chan time.Time, 4096)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	cli := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(p paho.PublishReceived) (bool, error) {
			if !strings.HasSuffix(p.Packet.Topic, "/availability") {
				arrivals <- time.Now()
			}
			return true, nil
		}}})
	ctx := context.Background()
	if _, err := cli.Connect(ctx, &paho.Connect{ClientID: "bridgebench", CleanStart: true, KeepAlive: 30}); err != nil {
		return err
	}
	meterID := "SAG1100000000001"
	if _, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "smarty/" + meterID + "/#"}}}); err != nil {
		return err
	}

	// The bridge.
	bridge := exec.Command(bin)
	bridge.Env = append(append(os.Environ(), brokerEnv...), "SMARTY_DEVICE="+dev, "SMARTY_KEY="+sim.DemoKeyHex,
		"SMARTY_MQTT_CLIENT_ID=bench", "SMARTY_LOG_LEVEL=warn", "SMARTY_STATE_DIR="+dir)
	bridge.Stderr = os.Stderr
	if err := bridge.Start(); err != nil {
		return err
	}
	defer bridge.Process.Signal(syscall.SIGTERM)
	time.Sleep(time.Second)

	meter := sim.New(sim.Options{Start: time.Now(), Counter: sim.ClockCounter(time.Now())})
	perFrame := statesPerFrame(meter)
	var lat []time.Duration
	var buf []byte
	cpu0 := benchkit.CPUTime(bridge.Process.Pid)
	wb0, wc0 := benchkit.IO(bridge.Process.Pid)
	start := time.Now()
	next := time.Now()
	for i := range frames {
		buf = meter.Frame(buf[:0], time.Now())
		if _, err := w.Write(buf); err != nil {
			return err
		}
		sent := time.Now()
		var last time.Time
		for got := 0; got < perFrame; got++ {
			select {
			case last = <-arrivals:
			case <-time.After(5 * time.Second):
				return fmt.Errorf("frame %d: %d of %d states arrived", i, got, perFrame)
			}
		}
		lat = append(lat, last.Sub(sent))
		next = next.Add(every)
		time.Sleep(time.Until(next))
	}
	elapsed := time.Since(start)
	cpu := benchkit.CPUTime(bridge.Process.Pid) - cpu0
	rss := benchkit.RSSKB(bridge.Process.Pid)
	wb, wc := benchkit.IO(bridge.Process.Pid)
	wb, wc = wb-wb0, wc-wc0

	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	fmt.Printf("frames %d every %s (%d states each), %s\n", frames, every, perFrame, elapsed.Round(time.Millisecond))
	fmt.Printf("latency last byte -> last state: p50 %s  p90 %s  p99 %s  max %s\n",
		pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	fmt.Printf("bridge CPU: %s total, %s per frame\n", cpu, cpu/time.Duration(frames))
	fmt.Printf("bridge VmRSS after %d frames: %.1f MB\n", frames, float64(rss)/1024)
	perHour := float64(time.Hour) / float64(elapsed)
	fmt.Printf("bridge storage writes: %.2f MB in %s (%.1f MB per hour), %d write calls\n",
		float64(wb)/1e6, elapsed.Round(time.Second), float64(wb)/1e6*perHour, wc)
	return nil
}

// statesPerFrame is how many state messages one simulated telegram gives.
func statesPerFrame(m *sim.Meter) int {
	tg, err := p1.Parse(sim.New(sim.Options{}).Telegram(time.Now()))
	if err != nil {
		panic(err)
	}
	n := 0
	for i := range tg.Objects {
		if !tg.Objects[i].Unused() {
			n++
		}
	}
	return n
}
