// Command bridgebench measures the bridge as a user runs it: it starts a
// real mosquitto and a socat pty pair, runs the smartybridge binary on the
// pty, writes simulated Smarty frames into the pty at a fixed rate and
// times, for every frame, the span from the last byte written until the
// last of its state messages reaches a subscriber. It reports latency
// percentiles, CPU time per frame, the bridge's memory (VmRSS, VmHWM, and
// how much of it is anonymous, from smaps_rollup) and what it wrote to
// storage (/proc/PID/io: a Raspberry Pi's SD card wears).
//
//	go build -o /tmp/smartybridge . && go run ./tools/bridgebench -bin /tmp/smartybridge
//
// With -before, two binaries run in turn, -rounds times each, and the
// medians and spreads (min–max) of both are printed side by side: the
// machines are noisy, so one run says little.
//
//	go run ./tools/bridgebench -before /tmp/old -bin /tmp/new -frames 90 -every 1s -rounds 5
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
	before := flag.String("before", "", "a second binary to compare with, run in turn with -bin")
	rounds := flag.Int("rounds", 1, "runs of each binary")
	frames := flag.Int("frames", 600, "frames to send")
	every := flag.Duration("every", 100*time.Millisecond, "time between frames")
	useTLS := flag.Bool("tls", false, "the bridge reaches the broker over mqtts:// (a test CA)")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "bridgebench: -bin is required")
		os.Exit(2)
	}
	bins := []string{*bin}
	if *before != "" {
		bins = []string{*before, *bin}
	}
	results := make([][]result, len(bins))
	for r := range *rounds {
		for i, b := range bins {
			res, err := run(b, *frames, *every, *useTLS)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bridgebench:", err)
				os.Exit(1)
			}
			fmt.Printf("round %d %s: %s\n", r+1, b, res)
			results[i] = append(results[i], res)
		}
	}
	if *rounds > 1 || len(bins) > 1 {
		summarize(bins, results)
	}
}

// result is one run's measurements.
type result struct {
	p50, p99       time.Duration // latency, last byte to last state
	cpuPerFrame    time.Duration
	rssKB, hwmKB   int
	anonKB, fileKB int     // smaps_rollup: anonymous and file-backed
	mbPerHour      float64 // storage writes
	writeCalls     int64
}

func (r result) String() string {
	return fmt.Sprintf("latency p50 %s p99 %s; CPU %s/frame; VmRSS %.1f MB (anon %.1f, file %.1f), VmHWM %.1f MB; storage %.2f MB/h, %d write calls",
		r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.cpuPerFrame.Round(time.Microsecond),
		mb(r.rssKB), mb(r.anonKB), mb(r.fileKB), mb(r.hwmKB), r.mbPerHour, r.writeCalls)
}

func mb(kb int) float64 { return float64(kb) / 1024 }

// summarize prints each metric's median and range per binary.
func summarize(bins []string, results [][]result) {
	metrics := []struct {
		name string
		get  func(result) float64
	}{
		{"latency p50 (µs)", func(r result) float64 { return float64(r.p50.Microseconds()) }},
		{"CPU per frame (µs)", func(r result) float64 { return float64(r.cpuPerFrame.Microseconds()) }},
		{"VmRSS (MB)", func(r result) float64 { return mb(r.rssKB) }},
		{"VmHWM (MB)", func(r result) float64 { return mb(r.hwmKB) }},
		{"anonymous (MB)", func(r result) float64 { return mb(r.anonKB) }},
		{"file-backed (MB)", func(r result) float64 { return mb(r.fileKB) }},
		{"storage writes (MB/h)", func(r result) float64 { return r.mbPerHour }},
	}
	fmt.Printf("\n%-24s", "median [min–max]")
	for _, b := range bins {
		fmt.Printf("  %-28s", filepath.Base(b))
	}
	fmt.Println()
	for _, m := range metrics {
		fmt.Printf("%-24s", m.name)
		for _, rs := range results {
			var v []float64
			for _, r := range rs {
				v = append(v, m.get(r))
			}
			slices.Sort(v)
			fmt.Printf("  %-28s", fmt.Sprintf("%.2f [%.2f–%.2f]", v[len(v)/2], v[0], v[len(v)-1]))
		}
		fmt.Println()
	}
}

func run(bin string, frames int, every time.Duration, useTLS bool) (res result, err error) {
	dir, err := os.MkdirTemp("", "bridgebench")
	if err != nil {
		return res, err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	// Broker: the subscriber uses the plain listener, the bridge the TLS
	// one with -tls.
	var extra, tlsURL, caFile string
	if useTLS {
		if extra, tlsURL, caFile, err = benchkit.TLSListener(dir); err != nil {
			return res, err
		}
	}
	mosq, addr, err := benchkit.Mosquitto(dir, extra)
	if err != nil {
		return res, err
	}
	defer func() { _ = mosq.Process.Kill() }()
	brokerEnv := []string{"SMARTY_MQTT_URL=mqtt://" + addr}
	if useTLS {
		brokerEnv = []string{"SMARTY_MQTT_URL=" + tlsURL, "SMARTY_MQTT_CA_FILE=" + caFile}
		time.Sleep(200 * time.Millisecond) // the second listener
	}

	// Serial cable.
	dev, meterEnd := filepath.Join(dir, "ttyP1"), filepath.Join(dir, "meter")
	socat := exec.Command("socat", "pty,raw,echo=0,link="+meterEnd, "pty,raw,echo=0,b115200,link="+dev)
	if err := socat.Start(); err != nil {
		return res, fmt.Errorf("socat: %w", err)
	}
	defer func() { _ = socat.Process.Kill() }()
	for range 500 {
		if _, err := os.Stat(dev); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	w, err := os.OpenFile(meterEnd, os.O_WRONLY, 0)
	if err != nil {
		return res, err
	}
	defer func() { _ = w.Close() }()

	// Subscriber: counts state messages.
	arrivals := make(chan time.Time, 4096)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return res, err
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
		return res, err
	}
	meterID := "SAG1100000000001"
	if _, err := cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "smarty/" + meterID + "/#"}}}); err != nil {
		return res, err
	}

	// The bridge.
	bridge := exec.Command(bin)
	bridge.Env = append(append(os.Environ(), brokerEnv...), "SMARTY_DEVICE="+dev, "SMARTY_KEY="+sim.DemoKeyHex,
		"SMARTY_MQTT_CLIENT_ID=bench", "SMARTY_LOG_LEVEL=warn", "SMARTY_STATE_DIR="+dir)
	bridge.Stderr = os.Stderr
	if err := bridge.Start(); err != nil {
		return res, err
	}
	defer func() { // a clean stop before the broker goes
		_ = bridge.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = bridge.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = bridge.Process.Kill()
		}
	}()
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
			return res, err
		}
		sent := time.Now()
		var last time.Time
		for got := 0; got < perFrame; got++ {
			select {
			case last = <-arrivals:
			case <-time.After(5 * time.Second):
				return res, fmt.Errorf("frame %d: %d of %d states arrived", i, got, perFrame)
			}
		}
		// A frame may carry more than the usual states (a finished
		// quarter-hour's, a setting's): what arrives before the next frame
		// is written is this frame's, so that the next is not matched to it.
		next = next.Add(every)
		time.Sleep(time.Until(next))
	drain:
		for {
			select {
			case last = <-arrivals:
			default:
				break drain
			}
		}
		lat = append(lat, last.Sub(sent))
	}
	elapsed := time.Since(start)
	pid := bridge.Process.Pid
	cpu := benchkit.CPUTime(pid) - cpu0
	wb, wc := benchkit.IO(pid)
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	res = result{
		p50: pct(0.50), p99: pct(0.99), cpuPerFrame: cpu / time.Duration(frames),
		rssKB: benchkit.StatusKB(pid, "VmRSS"), hwmKB: benchkit.StatusKB(pid, "VmHWM"),
		anonKB:     benchkit.SmapsKB(pid, "Anonymous"),
		mbPerHour:  float64(wb-wb0) / 1e6 * float64(time.Hour) / float64(elapsed),
		writeCalls: wc - wc0,
	}
	res.fileKB = benchkit.SmapsKB(pid, "Rss") - res.anonKB
	return res, nil
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
