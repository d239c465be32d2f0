package main

import (
	"bytes"
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
	m := sim.New(sim.Options{Start: time.Now(), Seed: 5})

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

	env := map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
		"SMARTY_MQTT_CLIENT_ID": "fwd", "SMARTY_STATE_DIR": state, "SMARTY_LOG_LEVEL": "debug"}
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
	stopProcess(t, fwd2)
	if !strings.Contains(fwd2Err.String(), "frames queued from the last run will be sent") {
		t.Errorf("restarted forwarder did not pick up its queue:\n%s\n--- first run:\n%s", fwd2Err, fwdErr)
	}
	if e, _ := os.ReadDir(queue); len(e) != 0 {
		t.Errorf("%d frames left in the queue", len(e))
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
	inNS := func(ns string, env map[string]string) (*exec.Cmd, *bytes.Buffer) {
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
