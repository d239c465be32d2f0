package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/bridge"
	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestCluster runs split mode on a real three-node rmqtt cluster: three
// meters, each behind a forwarder binary reading a pty, two decryptor
// binaries in one share group, every instance given all three brokers.
// Mid-run the node holding the most of them is SIGKILLed and restarted.
// Every telegram reaches the subscriber (on another node), and the
// decryptors decode each once, but for frames caught on the killed node.
func TestCluster(t *testing.T) {
	const meters, rounds, killAt = 3, 24, 8
	cluster := testenv.RMQTTCluster(t, 3, 10000)
	start := time.Now()

	sims := make([]*sim.Meter, meters)
	meterKeys := make([]decrypt.Key, meters)
	var keys strings.Builder
	for i := range sims {
		k := decrypt.Key{0xC1, byte(i), 0x5A, 0x11}
		meterKeys[i] = k
		sims[i] = sim.New(sim.Options{Key: k, MeterID: fmt.Sprintf("SAG14%011d", i+1), Seed: uint64(i), Start: start, Counter: sim.ClockCounter(start)})
		fmt.Fprintf(&keys, "%s:%X\n", sims[i].Title(), k[:])
	}
	keysFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keysFile, []byte(keys.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	// The subscriber stays on node 1; node 2 or 3 is killed. It records
	// when each telegram's clock state first arrived.
	var mu sync.Mutex
	arrived := map[string]time.Time{} // meter/clock value → first arrival
	online := map[string]string{}     // client → last status
	sub := testenv.Subscribe(t, cluster.Nodes[0].URL, "smarty/+/0-0:1.0.0", "smarty/status/+")
	sub.Client.AddOnPublishReceived(func(p paho.PublishReceived) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		topic, v := p.Packet.Topic, string(p.Packet.Payload)
		if id, ok := strings.CutPrefix(topic, "smarty/status/"); ok {
			online[id] = v
			return true, nil
		}
		if _, seen := arrived[topic+" "+v]; !seen {
			arrived[topic+" "+v] = time.Now()
		}
		return true, nil
	})

	type instance struct {
		id    string
		cmd   *exec.Cmd
		log   *testenv.Buffer
		state string
	}
	var decs, fwds []instance
	for i := range 2 {
		id, state := fmt.Sprintf("dec%d", i+1), t.TempDir()
		cmd, log := startBinary(t, map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_MQTT_URL": cluster.URLs(), "SMARTY_KEYS_FILE": keysFile,
			"SMARTY_SHARE_GROUP": "lux", "SMARTY_MQTT_CLIENT_ID": id, "SMARTY_STATE_DIR": state, "SMARTY_METER_TIMEOUT": "1h"})
		decs = append(decs, instance{id, cmd, log, state})
	}
	ptys := make([]*testenv.PTY, meters)
	for i := range sims {
		ptys[i] = testenv.Socat(t)
		id, state := fmt.Sprintf("fwd%d", i+1), t.TempDir()
		cmd, log := startBinary(t, map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": ptys[i].Device, "SMARTY_MQTT_URL": cluster.URLs(),
			"SMARTY_MQTT_CLIENT_ID": id, "SMARTY_STATE_DIR": state, "SMARTY_CONFIRM_KEY": bridge.ConfirmPublicKey(meterKeys[i]), "SMARTY_LOG_LEVEL": "debug"})
		fwds = append(fwds, instance{id, cmd, log, state})
	}
	all := append(append([]instance{}, decs...), fwds...)
	testenv.WaitFor(t, 30*time.Second, "every instance online", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, in := range all {
			if online[in.id] != "online" {
				return false
			}
		}
		return true
	})
	time.Sleep(time.Second) // the decryptors' subscriptions went round the cluster

	// Which node each instance is on, from its log.
	onNode := func(in instance) int {
		m := regexp.MustCompile(`connected to MQTT broker" broker=mqtt://127\.0\.0\.1:(\d+)`).FindAllStringSubmatch(in.log.String(), -1)
		if m == nil {
			return -1
		}
		for k, n := range cluster.Nodes {
			if fmt.Sprint(n.Port) == m[len(m)-1][1] {
				return k
			}
		}
		return -1
	}
	load := make([]int, 3)
	for _, in := range all {
		if k := onNode(in); k >= 0 {
			load[k]++
		}
	}
	victim := 1
	if load[2] > load[1] {
		victim = 2
	}
	t.Logf("instances per node %v; node %d is killed after round %d", load, victim+1, killAt)
	if load[victim] == 0 {
		t.Fatalf("no instance on node %d: the kill would test nothing (instances per node %v)", victim+1, load)
	}

	written := map[string]time.Time{}
	var killed, restarted time.Time
	for r := range rounds {
		at := start.Add(time.Duration(r+1) * 10 * time.Second)
		for i, m := range sims {
			clock := clockState(t, m.Telegram(at))
			ptys[i].Write(m.Frame(nil, at))
			written["smarty/"+m.ID()+"/0-0:1.0.0 "+clock] = time.Now()
		}
		if r == killAt {
			cluster.Nodes[victim].Kill()
			killed = time.Now()
		}
		if r == killAt+6 {
			if err := cluster.Nodes[victim].Start(); err != nil {
				t.Fatal(err)
			}
			restarted = time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
	testenv.WaitFor(t, 90*time.Second, "every telegram at the subscriber", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range written {
			if _, ok := arrived[k]; !ok {
				return false
			}
		}
		return true
	})
	var worst time.Duration
	mu.Lock()
	for k, w := range written {
		worst = max(worst, arrived[k].Sub(w))
	}
	mu.Unlock()
	// Frames the broker lost with the node come again from the forwarders'
	// queues, ResendAfter (10 s) later at most.
	if worst > 20*time.Second {
		t.Errorf("a telegram took %v from the pty to the subscriber", worst)
	}
	t.Logf("%d telegrams of %d meters all arrived; the longest from pty to subscriber %v (node killed %v, back %v after the kill)",
		len(written), meters, worst.Round(time.Millisecond), killed.Format("15:04:05.000"), restarted.Sub(killed).Round(time.Millisecond))

	// Each forwarder's queue empties by confirmations. The decryptors
	// decode every telegram once, except that a frame decoded on the
	// killed node whose confirmation died with it is sent again by its
	// forwarder and decoded again by the other decryptor (the same
	// states, harmless): duplicates are bounded by the frames the
	// forwarders sent more than once, and a replay accepted without a
	// re-send would break the bound.
	resent := 0
	for _, in := range fwds {
		queue := filepath.Join(in.state, "queue")
		testenv.WaitFor(t, 30*time.Second, in.id+"'s queue emptied by confirmations", func() bool { e, _ := os.ReadDir(queue); return len(e) == 0 })
		stopProcess(t, in.cmd)
		resent += stoppedCount(in.log.String(), "forwarded") - stoppedCount(in.log.String(), "confirmed")
	}
	decoded := 0
	for _, in := range decs {
		stopProcess(t, in.cmd)
		n := stoppedCount(in.log.String(), "telegrams")
		if n < 0 {
			t.Fatalf("%s: no stop line:\n%s", in.id, in.log)
		}
		decoded += n
	}
	t.Logf("decoded %d telegrams of %d written; the forwarders sent %d frames again", decoded, len(written), resent)
	if decoded < len(written) || decoded-len(written) > resent {
		t.Errorf("the decryptors decoded %d telegrams of %d written, with %d frames sent again", decoded, len(written), resent)
	}
}

// clockState is the state smartybridge publishes for the meter clock of
// telegram.
func clockState(t *testing.T, telegram []byte) string {
	t.Helper()
	tg, err := p1.Parse(telegram)
	if err != nil {
		t.Fatal(err)
	}
	for i := range tg.Objects {
		if o := &tg.Objects[i]; o.OBIS.String() == "0-0:1.0.0" {
			return string(bridge.AppendState(nil, o))
		}
	}
	t.Fatal("no clock in the telegram")
	return ""
}
