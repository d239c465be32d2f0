// Command splitbench measures decrypt mode at scale: one or more
// smartybridge decryptors (one share group) take simulated raw frames of
// many meters (distinct titles and keys), published as fast as the broker
// takes them, and a subscriber counts every resulting state exactly. It
// reports sustained frames per second, lost and duplicated telegrams, and
// the CPU used by the broker (when it started it) and by the decryptors.
//
//	go build -o /tmp/smartybridge . && go run ./tools/splitbench -bin /tmp/smartybridge -decryptors 2
//
// By default it starts its own mosquitto on 127.0.0.1. Against a broker
// cluster, give the nodes: -pub (publishers, one client per node, frames
// spread over them), -dec (the decryptors' SMARTY_MQTT_URL: each gets the
// whole list and starts at a node of its own) and -sub (the subscriber):
//
//	go run ./tools/splitbench -bin /tmp/smartybridge -decryptors 2 \
//	    -pub 127.0.0.1:1885 -dec mqtt://127.0.0.1:1883,mqtt://127.0.0.1:1884 -sub 127.0.0.1:1885
//
// Or let it start an rmqtt cluster of its own on 127.0.0.1 (-rmqtt 3; the
// binary from tools/rmqtt/setup.sh): frames are published to every node,
// the decryptors get all of them, the subscriber counts on node 1.
//
// The run is bounded by -meters × -rounds frames and -timeout.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
	"github.com/smartybridge/smartybridge/tools/internal/benchkit"
)

type options struct {
	bin                string
	meters, rounds     int
	decryptors         int
	timeout            time.Duration
	pub, dec, sub      string // external brokers; empty: an own mosquitto
	rmqtt              int    // nodes of an own rmqtt cluster instead
	decNodes           int    // with rmqtt: the decryptors get the first decNodes nodes (0: all)
	rate               int    // frames per second at most (0: as fast as the broker takes them)
	discovery          string // the decryptors' SMARTY_DISCOVERY
	shareGroup, prefix string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "smartybridge binary (required)")
	flag.IntVar(&o.meters, "meters", 1000, "simulated meters")
	flag.IntVar(&o.rounds, "rounds", 5, "frames per meter")
	flag.IntVar(&o.decryptors, "decryptors", 1, "decryptors in the share group")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after")
	flag.StringVar(&o.pub, "pub", "", "host:port of the brokers the frames are published to, comma-separated (default: an own mosquitto)")
	flag.StringVar(&o.dec, "dec", "", "the decryptors' SMARTY_MQTT_URL (default: the own mosquitto)")
	flag.StringVar(&o.sub, "sub", "", "host:port of the broker the states are counted on (default: the first of -pub)")
	flag.StringVar(&o.prefix, "prefix", "smarty", "topic prefix (a run per prefix keeps runs on one cluster apart)")
	flag.StringVar(&o.discovery, "discovery", "off", "the decryptors' SMARTY_DISCOVERY (device: they publish Home Assistant discovery for every meter too)")
	flag.IntVar(&o.rate, "rate", 0, "publish at most this many frames per second in all (0: as fast as the broker takes them)")
	flag.IntVar(&o.decNodes, "dec-nodes", 0, "with -rmqtt: give the decryptors only the first this many nodes (0: all; 1 for a binary that takes one broker)")
	flag.IntVar(&o.rmqtt, "rmqtt", 0, "start an rmqtt cluster of this many nodes (tools/rmqtt/setup.sh builds rmqttd) instead of mosquitto")
	flag.Parse()
	if o.bin == "" {
		fmt.Fprintln(os.Stderr, "splitbench: -bin is required")
		os.Exit(2)
	}
	if (o.pub == "") != (o.dec == "") {
		fmt.Fprintln(os.Stderr, "splitbench: -pub and -dec go together (an external broker for both)")
		os.Exit(2)
	}
	if o.sub == "" {
		o.sub, _, _ = strings.Cut(o.pub, ",")
	}
	o.shareGroup = "bench"
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "splitbench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "splitbench")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	var mosq *exec.Cmd
	var brokerPids []int
	switch {
	case o.rmqtt > 0:
		var dirs []string
		for i := range o.rmqtt {
			d := filepath.Join(dir, fmt.Sprint("node", i+1))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, d)
		}
		cluster, err := testenv.StartCluster(testenv.RMQTTBinary(), dirs, 1000000)
		if cluster != nil {
			defer cluster.Kill()
		}
		if err != nil {
			return err
		}
		var addrs []string
		for _, n := range cluster.Nodes {
			addrs = append(addrs, strings.TrimPrefix(n.URL, "mqtt://"))
			brokerPids = append(brokerPids, n.Pid())
		}
		o.pub, o.dec, o.sub = strings.Join(addrs, ","), cluster.URLs(), addrs[0]
		if o.decNodes > 0 && o.decNodes < len(addrs) {
			o.dec = "mqtt://" + strings.Join(addrs[:o.decNodes], ",mqtt://")
		}
		time.Sleep(2 * time.Second) // the cluster settles
	case o.pub == "":
		var addr string
		mosq, addr, err = benchkit.Mosquitto(dir, "max_queued_messages 0\nmax_inflight_messages 0\n")
		if err != nil {
			return err
		}
		defer func() { _ = mosq.Process.Kill() }()
		o.pub, o.sub, o.dec = addr, addr, "mqtt://"+addr
		brokerPids = []int{mosq.Process.Pid}
	}

	// Meters, their keys, their frames.
	fmt.Printf("preparing %d frames of %d meters…\n", o.meters*o.rounds, o.meters)
	var keys strings.Builder
	sims := make([]*sim.Meter, o.meters)
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
	for r := range o.rounds {
		for _, m := range sims {
			frames = append(frames, msg{o.prefix + "/raw/" + m.Title().String(), m.Frame(nil, start.Add(time.Duration(r)*10*time.Second))})
		}
	}
	tg, _ := p1.Parse(sims[0].Telegram(start))
	statesPer := len(tg.Objects)

	// Subscriber: every state, counted per meter and object. A state is
	// smarty/<meter>/<OBIS>: not …/attributes, …/availability, nor the
	// reference power's topics.
	count := newCounter(o.prefix)
	sub, err := client(o.sub, "splitbench-sub", count.take)
	if err != nil {
		return err
	}
	if _, err := sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: o.prefix + "/+/+"}}}); err != nil {
		return err
	}

	// Decryptors.
	var decs []*exec.Cmd
	for i := range o.decryptors {
		cmd := exec.Command(o.bin)
		cmd.Env = append(os.Environ(), "SMARTY_MODE=decrypt", "SMARTY_MQTT_URL="+o.dec, "SMARTY_KEYS_FILE="+keysFile,
			"SMARTY_SHARE_GROUP="+o.shareGroup, fmt.Sprintf("SMARTY_MQTT_CLIENT_ID=%s-dec%d", o.prefix, i), "SMARTY_STATE_DIR="+filepath.Join(dir, fmt.Sprint("dec", i)),
			"SMARTY_TOPIC_PREFIX="+o.prefix, "SMARTY_DISCOVERY="+o.discovery, "SMARTY_LOG_LEVEL=warn", "SMARTY_METER_TIMEOUT=1h")
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

	brokerCPU := func() (d time.Duration) {
		for _, pid := range brokerPids {
			d += benchkit.CPUTime(pid)
		}
		return d
	}
	cpu0 := brokerCPU()
	var dcpu0 []time.Duration
	for _, d := range decs {
		dcpu0 = append(dcpu0, benchkit.CPUTime(d.Process.Pid))
	}
	var pubs []*paho.Client
	for i, addr := range strings.Split(o.pub, ",") {
		c, err := client(addr, fmt.Sprintf("splitbench-pub%d", i), nil)
		if err != nil {
			return err
		}
		pubs = append(pubs, c)
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(pubs))
	for i, c := range pubs {
		wg.Go(func() {
			for k := i; k < len(frames); k += len(pubs) {
				if o.rate > 0 {
					// Frame k is due at k/rate seconds after the start.
					time.Sleep(time.Until(t0.Add(time.Duration(k) * time.Second / time.Duration(o.rate))))
				}
				if _, err := c.Publish(context.Background(), &paho.Publish{Topic: frames[k].topic, Payload: frames[k].frame, QoS: 1}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	published := time.Since(t0)
	want := int64(len(frames) * statesPer)
	deadline := time.Now().Add(o.timeout)
	for count.states.Load() < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // duplicates arrive after the last state
	elapsed := time.Duration(count.last.Load() - t0.UnixNano())
	var dcpu []string
	for i, d := range decs {
		dcpu = append(dcpu, (benchkit.CPUTime(d.Process.Pid) - dcpu0[i]).String())
	}
	got := count.states.Load()
	lost, dup := count.telegrams(sims, o.rounds)
	fmt.Printf("decryptors %d, meters %d, frames %d (%d states each), published in %s over %d broker(s)\n", o.decryptors, o.meters, len(frames), statesPer, published.Round(time.Millisecond), len(pubs))
	fmt.Printf("states received %d of %d; telegrams lost %d, duplicated %d (by each meter's 1-0:1.8.0)\n", got, want, lost, dup)
	fmt.Printf("sustained %.0f frames/s (%.0f states/s) until the last state arrived after %s\n",
		float64(got)/float64(statesPer)/elapsed.Seconds(), float64(got)/elapsed.Seconds(), elapsed.Round(time.Millisecond))
	broker := "external (not measured)"
	if len(brokerPids) > 0 {
		broker = (brokerCPU() - cpu0).String()
	}
	fmt.Printf("CPU: broker %s, decryptors %s\n", broker, strings.Join(dcpu, " + "))
	if lost > 0 || dup > 0 || got != want {
		return fmt.Errorf("%d telegrams lost, %d duplicated, %d of %d states", lost, dup, got, want)
	}
	return nil
}

// counter counts states per topic.
type counter struct {
	prefix string
	mu     sync.Mutex
	n      map[string]int
	states atomic.Int64
	last   atomic.Int64 // when the last state arrived, Unix ns
}

func newCounter(prefix string) *counter { return &counter{prefix: prefix, n: map[string]int{}} }

func (c *counter) take(p paho.PublishReceived) {
	meter, obis, ok := strings.Cut(strings.TrimPrefix(p.Packet.Topic, c.prefix+"/"), "/")
	if !ok || !strings.HasPrefix(meter, "SAG") {
		return
	}
	if _, err := p1.ParseOBIS(obis); err != nil {
		return
	}
	c.mu.Lock()
	c.n[p.Packet.Topic]++
	c.mu.Unlock()
	c.states.Add(1)
	c.last.Store(time.Now().UnixNano())
}

// telegrams counts, per meter, the telegrams that arrived short of rounds
// or beyond it: one state of 1-0:1.8.0 per telegram.
func (c *counter) telegrams(sims []*sim.Meter, rounds int) (lost, dup int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range sims {
		n := c.n[c.prefix+"/"+m.ID()+"/1-0:1.8.0"]
		lost += max(0, rounds-n)
		dup += max(0, n-rounds)
	}
	return lost, dup
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
