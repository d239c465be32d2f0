// Command splitbench measures decrypt mode at scale: it starts a real
// mosquitto and one or more smartybridge decryptors (one share group),
// publishes simulated raw frames of many meters (distinct titles and keys)
// as fast as the decryptors take them, and counts every resulting state
// message at a subscriber. It reports sustained frames per second, loss,
// and the CPU used by the broker and by the decryptors.
//
//	go build -o /tmp/smartybridge . && go run ./tools/splitbench -bin /tmp/smartybridge -decryptors 2
//
// Everything runs on 127.0.0.1; the run is bounded by -meters × -rounds
// frames and -timeout.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
	"github.com/smartybridge/smartybridge/tools/internal/benchkit"
)

func main() {
	bin := flag.String("bin", "", "smartybridge binary (required)")
	meters := flag.Int("meters", 1000, "simulated meters")
	rounds := flag.Int("rounds", 5, "frames per meter")
	decryptors := flag.Int("decryptors", 1, "decryptors in the share group")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "splitbench: -bin is required")
		os.Exit(2)
	}
	if err := run(*bin, *meters, *rounds, *decryptors, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "splitbench:", err)
		os.Exit(1)
	}
}

func run(bin string, meters, rounds, decryptors int, timeout time.Duration) error {
	dir, err := os.MkdirTemp("", "splitbench")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	mosq, addr, err := benchkit.Mosquitto(dir, "max_queued_messages 0\nmax_inflight_messages 0\n")
	if err != nil {
		return err
	}
	defer func() { _ = mosq.Process.Kill() }()

	// Meters, their keys, their frames.
	fmt.Printf("preparing %d frames of %d meters…\n", meters*rounds, meters)
	var keys strings.Builder
	sims := make([]*sim.Meter, meters)
	for i := range sims {
		k := decrypt.Key{0xB0, byte(i >> 8), byte(i), 0x11, byte(i * 13)}
		sims[i] = sim.New(sim.Options{Key: k, MeterID: fmt.Sprintf("SAG12%011d", i+1), Seed: uint64(i), Start: time.Now()})
		fmt.Fprintf(&keys, "%s:%X\n", sims[i].Title(), k[:])
	}
	keysFile := filepath.Join(dir, "keys")
	if err := os.WriteFile(keysFile, []byte(keys.String()), 0o600); err != nil {
		return err
	}
	type msg struct {
		topic string
		frame []byte
	}
	var frames []msg
	start := time.Now()
	for r := range rounds {
		for _, m := range sims {
			frames = append(frames, msg{"smarty/raw/" + m.Title().String(), m.Frame(nil, start.Add(time.Duration(r)*10*time.Second))})
		}
	}
	tg, _ := p1.Parse(sims[0].Telegram(start))
	statesPer := len(tg.Objects)
	if os.Getenv("COUNTERS") != "" {
		statesPer = 1
	}

	// Subscriber: every state message.
	var states atomic.Int64
	var lastState atomic.Int64
	sub, err := client(addr, "splitbench-sub", func(p paho.PublishReceived) {
		t := p.Packet.Topic
		if strings.HasPrefix(t, "smarty/SAG") && !strings.HasSuffix(t, "/availability") || os.Getenv("COUNTERS") != "" && strings.HasPrefix(t, "smarty/counter/") {
			states.Add(1)
			lastState.Store(time.Now().UnixNano())
		}
	})
	if err != nil {
		return err
	}
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: subTopic()}}}); err != nil {
		return err
	}

	// Decryptors.
	var decs []*exec.Cmd
	for i := range decryptors {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "SMARTY_MODE=decrypt", "SMARTY_MQTT_URL=mqtt://"+addr, "SMARTY_KEYS_FILE="+keysFile,
			"SMARTY_SHARE_GROUP=bench", fmt.Sprintf("SMARTY_MQTT_CLIENT_ID=dec%d", i), "SMARTY_STATE_DIR="+filepath.Join(dir, fmt.Sprint("dec", i)),
			"SMARTY_DISCOVERY=off", "SMARTY_LOG_LEVEL=warn", "SMARTY_METER_TIMEOUT=1h")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		decs = append(decs, cmd)
	}
	defer func() {
		for _, d := range decs {
			_ = d.Process.Signal(syscall.SIGTERM)
			_ = d.Wait()
		}
	}()
	time.Sleep(2 * time.Second)

	cpu0 := benchkit.CPUTime(mosq.Process.Pid)
	var dcpu0 []time.Duration
	for _, d := range decs {
		dcpu0 = append(dcpu0, benchkit.CPUTime(d.Process.Pid))
	}
	pub, err := client(addr, "splitbench-pub", nil)
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, f := range frames {
		if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: f.topic, Payload: f.frame, QoS: 1}); err != nil {
			return err
		}
	}
	published := time.Since(t0)
	want := int64(len(frames) * statesPer)
	deadline := time.Now().Add(timeout)
	for states.Load() < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Duration(lastState.Load() - t0.UnixNano())
	mcpu := benchkit.CPUTime(mosq.Process.Pid) - cpu0
	var dcpu []string
	for i, d := range decs {
		dcpu = append(dcpu, (benchkit.CPUTime(d.Process.Pid) - dcpu0[i]).String())
	}
	got := states.Load()
	fmt.Printf("decryptors %d, meters %d, frames %d (%d states each), published in %s\n", decryptors, meters, len(frames), statesPer, published.Round(time.Millisecond))
	fmt.Printf("state messages received %d of %d (loss %d)\n", got, want, want-got)
	fmt.Printf("sustained %.0f frames/s (%.0f state messages/s) until the last state arrived after %s\n",
		float64(got)/float64(statesPer)/elapsed.Seconds(), float64(got)/elapsed.Seconds(), elapsed.Round(time.Millisecond))
	fmt.Printf("CPU: broker %s, decryptors %s\n", mcpu, strings.Join(dcpu, " + "))
	if got < want {
		return fmt.Errorf("lost %d state messages", want-got)
	}
	return nil
}

func client(addr, id string, on func(paho.PublishReceived)) (*paho.Client, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cfg := paho.ClientConfig{Conn: conn}
	if on != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(p paho.PublishReceived) (bool, error) { on(p); return true, nil }}
	}
	c := paho.NewClient(cfg)
	_, err = c.Connect(context.Background(), &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 60,
		Properties: &paho.ConnectProperties{ReceiveMaximum: ptr(uint16(65535))}})
	return c, err
}

func ptr[T any](v T) *T { return &v }

func subTopic() string {
	if os.Getenv("COUNTERS") != "" {
		return "smarty/counter/#"
	}
	return "smarty/#"
}
