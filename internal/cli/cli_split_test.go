package cli

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/bridge"
	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// stopProcess sends SIGTERM and waits for a clean exit.
// startBinary starts the real binary with env, stops it (SIGTERM) at the
// end of the test unless the test did, and shows its log if the test
// failed.
func startBinary(t *testing.T, env map[string]string) (*exec.Cmd, *testenv.Buffer) {
	t.Helper()
	cmd, _, stderr := command(env)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			stopProcess(t, cmd)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", env["SMARTY_MQTT_CLIENT_ID"], stderr)
		}
	})
	return cmd, stderr
}

func stopProcess(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", cmd.Args, err)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Errorf("%s: no exit after SIGTERM", cmd.Args)
	}
}

// TestForwarderKilledWhileBrokerDown: frames queued on disk by a forwarder
// that is killed (no clean shutdown) while the broker is away still reach
// the decryptor once the forwarder restarts and the broker is back.
func TestForwarderKilledWhileBrokerDown(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	state := t.TempDir()
	m := sim.New(sim.Options{Start: time.Now(), Seed: 5, Counter: sim.ClockCounter(time.Now())})

	u, _ := url.Parse(broker.URL)
	dec, err := bridge.New(bridge.Options{MQTT: bridge.MQTTOptions{URL: u, ClientID: "dec"},
		Keys: decrypt.Options{Key: &sim.DemoKey}, MeterTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ddone := make(chan error, 1)
	go func() { ddone <- dec.RunDecrypt(ctx, bridge.SplitOptions{StateDir: t.TempDir()}) }()
	defer func() { cancel(); <-ddone }()

	// The forwarder trusts only the key `smartybridge confirm-key` prints.
	ck, out, _ := command(map[string]string{"SMARTY_KEY": sim.DemoKeyHex}, "confirm-key")
	if err := ck.Run(); err != nil || !strings.Contains(out.String(), "SMARTY_CONFIRM_KEY="+bridge.ConfirmPublicKey(sim.DemoKey)) || strings.Contains(out.String(), sim.DemoKeyHex) {
		t.Fatalf("confirm-key: %v %q", err, out)
	}
	confirmKey := strings.TrimPrefix(strings.TrimSpace(out.String()), "SMARTY_CONFIRM_KEY=")
	env := map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
		"SMARTY_MQTT_CLIENT_ID": "fwd", "SMARTY_STATE_DIR": state, "SMARTY_LOG_LEVEL": "debug", "SMARTY_CONFIRM_KEY": confirmKey}
	fwd, _, fwdErr := command(env)
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	write := func(n int) {
		for range n {
			at = at.Add(10 * time.Second)
			pty.Write(m.Frame(nil, at))
			time.Sleep(300 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	write(2)
	testenv.WaitFor(t, 10*time.Second, "first frames", func() bool { return dec.Stats().Telegrams == 2 })

	broker.Stop()
	write(3)
	queue := filepath.Join(state, "queue")
	testenv.WaitFor(t, 5*time.Second, "3 frames on disk", func() bool { e, _ := os.ReadDir(queue); return len(e) == 3 })
	fwd.Process.Kill()
	fwd.Wait()

	fwd2, _, fwd2Err := command(env)
	if err := fwd2.Start(); err != nil {
		t.Fatal(err)
	}
	broker.Start()
	testenv.WaitFor(t, 60*time.Second, "queued frames after restart", func() bool { return dec.Stats().Telegrams == 5 })
	// The last confirmation reaches the forwarder a moment after the
	// decryptor published the states.
	testenv.WaitFor(t, 10*time.Second, "the queue emptied by the confirmations", func() bool { e, _ := os.ReadDir(queue); return len(e) == 0 })
	stopProcess(t, fwd2)
	if !strings.Contains(fwd2Err.String(), "frames queued from the last run will be sent") {
		t.Errorf("restarted forwarder did not pick up its queue:\n%s\n--- first run:\n%s", fwd2Err, fwdErr)
	}
}

// stoppedCounts reads "stopped … telegrams=N" or "forwarded=N confirmed=N"
// from a log.
func stoppedCount(log, key string) int {
	m := regexp.MustCompile(`msg=stopped .*\b` + key + `=(\d+)`).FindStringSubmatch(log)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestAcrossTwoHosts runs the forwarder (with the broker) and the decryptor
// in two network namespaces joined by a veth pair, so that the frames
// cross a network between two processes.
func TestAcrossTwoHosts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root; this ran on loopback only in other tests")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	nsA, nsB := "sbA"+id, "sbB"+id
	vA, vB := "sbvA"+id, "sbvB"+id
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	run("netns", "add", nsA)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsA).Run() })
	run("netns", "add", nsB)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", nsB).Run() })
	run("link", "add", vA, "type", "veth", "peer", "name", vB)
	run("link", "set", vA, "netns", nsA)
	run("link", "set", vB, "netns", nsB)
	run("-n", nsA, "addr", "add", "10.231.77.1/24", "dev", vA)
	run("-n", nsB, "addr", "add", "10.231.77.2/24", "dev", vB)
	for _, ns := range []string{nsA, nsB} {
		run("-n", ns, "link", "set", "lo", "up")
	}
	run("-n", nsA, "link", "set", vA, "up")
	run("-n", nsB, "link", "set", vB, "up")

	// The broker runs on host A.
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte("listener 1883 10.231.77.1\nallow_anonymous true\nuser root\n"), 0o644)
	mosq := exec.Command("ip", "netns", "exec", nsA, mosquittoPath(), "-c", conf)
	if err := mosq.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mosq.Process.Kill(); mosq.Wait() })

	pty := testenv.Socat(t)
	brokerURL := "mqtt://10.231.77.1:1883"
	inNS := func(ns string, env map[string]string) (*exec.Cmd, *testenv.Buffer) {
		cmd, _, stderr := command(env)
		ip, err := exec.LookPath("ip")
		if err != nil {
			t.Fatal(err)
		}
		cmd.Path, cmd.Args = ip, append([]string{"ip", "netns", "exec", ns, binary}, cmd.Args[1:]...)
		return cmd, stderr
	}
	dec, decLog := inNS(nsB, map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_MQTT_URL": brokerURL, "SMARTY_KEY": sim.DemoKeyHex,
		"SMARTY_MQTT_CLIENT_ID": "hostB", "SMARTY_STATE_DIR": t.TempDir()})
	fwd, fwdLog := inNS(nsA, map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": brokerURL,
		"SMARTY_MQTT_CLIENT_ID": "hostA", "SMARTY_STATE_DIR": t.TempDir()})
	if err := dec.Start(); err != nil {
		t.Fatal(err)
	}
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	m := sim.New(sim.Options{Start: time.Now()})
	at := time.Now()
	for range 5 {
		at = at.Add(10 * time.Second)
		pty.Write(m.Frame(nil, at))
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	stopProcess(t, fwd)
	stopProcess(t, dec)
	if n := stoppedCount(fwdLog.String(), "confirmed"); n != 5 {
		t.Errorf("forwarder on host A: %d frames confirmed, want 5\n%s", n, fwdLog)
	}
	if n := stoppedCount(decLog.String(), "telegrams"); n != 5 {
		t.Errorf("decryptor on host B: %d telegrams, want 5\n%s", n, decLog)
	}
}

func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return "/usr/sbin/mosquitto"
}

// TestDefaultClientIDs: a forwarder and a decryptor on one host, both
// without SMARTY_MQTT_CLIENT_ID and sharing a state directory, get ids
// that differ by mode; two bridges on hosts named alike (different state
// directories) by their suffix. Frames flow; nobody throws anybody out.
func TestDefaultClientIDs(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	sub := testenv.Subscribe(t, broker.URL, "smarty/#")
	state := t.TempDir()
	base := map[string]string{"SMARTY_MQTT_URL": broker.URL, "SMARTY_STATE_DIR": state}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	dec, _, decErr := command(with(map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_KEY": sim.DemoKeyHex}))
	fwd, _, fwdErr := command(with(map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device}))
	// Another host named alike: its own state directory, with the suffix
	// its first run kept there (on one machine a state directory of its
	// own would otherwise get the machine's suffix: the same instance).
	otherState := t.TempDir()
	if err := os.WriteFile(otherState+"/client-id-suffix", []byte("a1b2c3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, _, otherErr := command(map[string]string{"SMARTY_MQTT_URL": broker.URL, "SMARTY_STATE_DIR": otherState, "SMARTY_MODE": "decrypt", "SMARTY_KEY": sim.DemoKeyHex, "SMARTY_SHARE_GROUP": "g"})
	for _, c := range []*exec.Cmd{dec, fwd, other} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	online := func() []string {
		var ids []string
		for topic, v := range sub.Topics("smarty/status/") {
			if v == "online" {
				ids = append(ids, strings.TrimPrefix(topic, "smarty/status/"))
			}
		}
		return ids
	}
	testenv.WaitFor(t, 10*time.Second, "three instances online", func() bool { return len(online()) == 3 })
	m := sim.New(sim.Options{Start: time.Now(), Counter: sim.ClockCounter(time.Now())})
	time.Sleep(500 * time.Millisecond)
	pty.Write(m.Frame(nil, time.Now()))
	testenv.WaitFor(t, 10*time.Second, "the frame decoded", func() bool { _, ok := sub.Get("smarty/SAG1100000000001/1-0:1.8.0"); return ok })
	ids := online()
	for _, c := range []*exec.Cmd{dec, fwd, other} {
		stopProcess(t, c)
	}
	var modes []string
	for _, id := range ids {
		parts := strings.Split(id, "-")
		if len(parts) < 4 || parts[0] != "smartybridge" || len(parts[len(parts)-1]) != 6 {
			t.Errorf("client id %q is not smartybridge-<mode>-<host>-<suffix>", id)
			continue
		}
		modes = append(modes, parts[1])
	}
	if strings.Join(modes, " ") == "" || len(ids) != 3 {
		t.Errorf("ids %v", ids)
	}
	for _, log := range []string{decErr.String(), fwdErr.String(), otherErr.String()} {
		if strings.Contains(log, "same client id") {
			t.Errorf("a default id collided:\n%s", log)
		}
	}
}

// TestSessionTakeoverBacksOff: two instances with the same explicit client
// id. Each time one connects the broker throws the other out (MQTT 5
// reason 0x8E); they back off for 30 s instead of reconnecting thousands
// of times, and say why, naming SMARTY_MQTT_CLIENT_ID.
func TestSessionTakeoverBacksOff(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	env := func() map[string]string {
		return map[string]string{"SMARTY_MQTT_URL": broker.URL, "SMARTY_MODE": "decrypt", "SMARTY_KEY": sim.DemoKeyHex,
			"SMARTY_MQTT_CLIENT_ID": "same", "SMARTY_STATE_DIR": t.TempDir()}
	}
	a, _, aErr := command(env())
	b, _, bErr := command(env())
	a.Start()
	time.Sleep(500 * time.Millisecond)
	b.Start()
	time.Sleep(10 * time.Second)
	stopProcess(t, a)
	stopProcess(t, b)
	logs := aErr.String() + bErr.String()
	connects := strings.Count(logs, "connected to MQTT broker")
	t.Logf("%d connections in 10 s", connects)
	if connects > 12 {
		t.Errorf("%d connections in 10 s: no backoff", connects)
	}
	if !strings.Contains(logs, "same client id") || !strings.Contains(logs, "SMARTY_MQTT_CLIENT_ID") {
		t.Errorf("no takeover warning naming SMARTY_MQTT_CLIENT_ID:\n%s", logs)
	}
}

// TestDecryptorKilled: the decryptor is killed (SIGKILL) in the middle of
// a stream and started again: every frame's telegram still reaches Home
// Assistant's side, each once.
func TestDecryptorKilled(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	sub := testenv.Subscribe(t, broker.URL, "smarty/SAG1100000000001/0-0:1.0.0")
	decState := t.TempDir()
	decEnv := map[string]string{"SMARTY_MODE": "decrypt", "SMARTY_KEY": sim.DemoKeyHex, "SMARTY_MQTT_URL": broker.URL,
		"SMARTY_MQTT_CLIENT_ID": "dec", "SMARTY_STATE_DIR": decState}
	dec, _, _ := command(decEnv)
	fwd, _, fwdErr := command(map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
		"SMARTY_MQTT_CLIENT_ID": "fwd", "SMARTY_STATE_DIR": t.TempDir()})
	for _, c := range []*exec.Cmd{dec, fwd} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	m := sim.New(sim.Options{Start: time.Now(), Counter: sim.ClockCounter(time.Now())})
	at := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	const frames = 30
	for i := range frames {
		if i == 10 {
			dec.Process.Kill()
			dec.Wait()
		}
		if i == 20 {
			dec, _, _ = command(decEnv)
			if err := dec.Start(); err != nil {
				t.Fatal(err)
			}
		}
		pty.Write(m.Frame(nil, at))
		at = at.Add(10 * time.Second)
		time.Sleep(200 * time.Millisecond)
	}
	testenv.WaitFor(t, 60*time.Second, "every telegram", func() bool { return sub.N("smarty/SAG1100000000001/0-0:1.0.0") >= frames })
	time.Sleep(time.Second)
	stopProcess(t, dec)
	stopProcess(t, fwd)
	if n := sub.N("smarty/SAG1100000000001/0-0:1.0.0"); n != frames {
		t.Errorf("%d telegrams for %d frames\n%s", n, frames, fwdErr)
	}
}
