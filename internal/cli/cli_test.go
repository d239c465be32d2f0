package cli

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

var binary string

func TestMain(m *testing.M) {
	// The tests read the repository's files (testdata, addon, packaging)
	// and build the binary from its root, as a user would.
	if err := os.Chdir("../.."); err != nil {
		panic(err)
	}
	// The release main.go names, as Main would set it.
	src, err := os.ReadFile("main.go")
	if err != nil {
		panic(err)
	}
	if m := regexp.MustCompile(`(?m)^\s*version\s*=\s*"([^"]*)"`).FindSubmatch(src); m != nil {
		version = string(m[1])
	}
	dir, err := os.MkdirTemp("", "smartybridge-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "smartybridge")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// command prepares the real binary with only the given SMARTY_ variables.
func command(env map[string]string, args ...string) (*exec.Cmd, *testenv.Buffer, *testenv.Buffer) {
	cmd := exec.Command(binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SMARTY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if _, ok := env["SMARTY_STATE_DIR"]; !ok {
		// Counters and client ids of a test run stay in a fresh directory.
		dir, _ := os.MkdirTemp("", "smartybridge-state")
		cmd.Env = append(cmd.Env, "SMARTY_STATE_DIR="+dir)
	}
	// Locked buffers: tests read the log while the process writes it.
	var out, errb testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	return cmd, &out, &errb
}

func TestBadConfigurationExits2(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"unknown mode":    {"SMARTY_MODE": "bogus"},
		"short key":       {"SMARTY_KEY": "1234"},
		"url with a path": {"SMARTY_MQTT_URL": "mqtt://localhost/smarty"},
		"bad discovery":   {"SMARTY_DISCOVERY": "everything"},
		"bad log level":   {"SMARTY_LOG_LEVEL": "loud"},
		"bad timeout":     {"SMARTY_METER_TIMEOUT": "soon"},
	} {
		t.Run(name, func(t *testing.T) {
			cmd, _, stderr := command(env)
			err := cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit %d (%v), want 2; stderr %s", code, err, stderr)
			}
			if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n") + 1; lines != 1 {
				t.Errorf("want one line, got %d: %s", lines, stderr)
			}
		})
	}
}

// TestStopSignals runs the real binary on a pty and a real broker and stops
// it as a service manager would (SIGTERM), or as a closed terminal or a
// "reload" does (SIGHUP, which ended it with status 129 and its meter left
// online before): a clean exit 0, "offline" published.
func TestStopSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			broker := testenv.Mosquitto(t, "")
			pty := testenv.Socat(t)
			sub := testenv.Subscribe(t, broker.URL, "smarty/#")
			id := "stop-" + strings.ToLower(strings.ReplaceAll(sig.String(), " ", "-"))
			cmd, _, stderr := command(map[string]string{
				"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": testKey,
				"SMARTY_MQTT_CLIENT_ID": id, "SMARTY_LOG_LEVEL": "debug",
			})
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sub.WaitValue("smarty/status/"+id, "online", 10*time.Second)
			frame, _ := os.ReadFile("testdata/smarty-2026.frame")
			pty.Write(frame)
			sub.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 5*time.Second)
			cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("exit after %v: %v\n%s", sig, err, stderr)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("no exit after %v", sig)
			}
			sub.WaitValue("smarty/status/"+id, "offline", 5*time.Second)
			sub.WaitValue("smarty/SAG1030700012701/availability", "offline", 5*time.Second)
			if strings.Contains(stderr.String(), testKey) {
				t.Error("the key is in the log")
			}
		})
	}
}

// TestDemoWithoutEmbeddedBroker: the add-on's build (-tags nodemo) links
// no MQTT broker (about a megabyte of resident memory on a Pi); its demo
// says how to run with a broker of one's own, and runs with one.
func TestDemoWithoutEmbeddedBroker(t *testing.T) {
	deps, err := exec.Command("go", "list", "-deps", "-tags", "nodemo", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(deps), "mochi-mqtt") {
		t.Error("the nodemo build links the embedded broker")
	}
	nodemo := filepath.Join(filepath.Dir(binary), "smartybridge-nodemo")
	if out, err := exec.Command("go", "build", "-tags", "nodemo", "-o", nodemo, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd, _, stderr := command(nil, "demo")
	cmd.Path, cmd.Args[0] = nodemo, nodemo
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != exitConfig || !strings.Contains(stderr.String(), "SMARTY_MQTT_URL") {
		t.Errorf("demo without a broker: %v, %s", err, stderr)
	}
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/#")
	cmd, _, _ = command(map[string]string{"SMARTY_MQTT_URL": broker.URL, "SMARTY_DEMO_INTERVAL": "200ms"}, "demo")
	cmd.Path, cmd.Args[0] = nodemo, nodemo
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stopProcess(t, cmd)
	sub.WaitValue("smarty/status/smartybridge-demo", "online", 10*time.Second)
	testenv.WaitFor(t, 10*time.Second, "a simulated telegram", func() bool { return sub.N("smarty/SAG1100000000001/1-0:1.8.0") > 0 })
}

// TestDemo runs the README's first command (as the built binary) and
// checks that a simulated meter shows up on the embedded broker.
//
// The demo's binary is built without -race: the embedded broker,
// mochi-mqtt v2.7.9, writes a topic's retainPath under the topic's lock
// (RetainMessage, topics.go:461) and reads it without (scanMessages,
// topics.go:554) when a wildcard subscription meets a retained publish.
// That race is the library's, outside smartybridge's code; every other CLI
// test runs the -race build.
func TestDemo(t *testing.T) {
	norace := filepath.Join(filepath.Dir(binary), "smartybridge-norace")
	if out, err := exec.Command("go", "build", "-o", norace, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd, stdout, stderr := command(map[string]string{"SMARTY_DEMO_LISTEN": addr, "SMARTY_DEMO_INTERVAL": "200ms"}, "demo")
	cmd.Path, cmd.Args[0] = norace, norace
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	testenv.WaitFor(t, 10*time.Second, "embedded broker", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	sub := testenv.Subscribe(t, "mqtt://"+addr, "smarty/#", "homeassistant/#")
	testenv.WaitFor(t, 10*time.Second, "discovery and states", func() bool {
		_, cfg := sub.Get("homeassistant/device/SAG1100000000001/config")
		v, _ := sub.Get("smarty/SAG1100000000001/1-0:1.8.0")
		return cfg && v != ""
	})
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("demo exit: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout.String(), "SAG1100000000001  import") {
		t.Errorf("no telegram line on stdout:\n%s", stdout)
	}
}

// TestCommandLine: -h on every command prints its usage and exits 0 with
// no side effect (no file created, no demo started); -h lists every
// command and variable within 80 columns; version names the commit.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	for cmd := range commandHelp {
		for _, h := range []string{"-h", "--help"} {
			args := []string{cmd, h}
			c, out, errb := command(nil, args...)
			c.Dir = dir
			if err := c.Run(); err != nil {
				t.Errorf("%v: %v %s", args, err, errb)
			}
			if !strings.HasPrefix(out.String(), "usage: smartybridge "+strings.TrimPrefix(cmd, "run")) {
				t.Errorf("%v printed %q", args, out.String())
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("-h left %d files behind", len(entries))
	}
	c, out, _ := command(nil, "-h")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, line := range strings.Split(help, "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("%d columns: %s", n, line)
		}
	}
	for cmd := range commandHelp {
		if !strings.Contains(help, "smartybridge "+cmd) && cmd != "run" {
			t.Errorf("-h does not list %s", cmd)
		}
	}
	for _, v := range variables() {
		if !strings.Contains(help, v.name) {
			t.Errorf("-h does not list %s", v.name)
		}
	}
	c, out, _ = command(nil, "version")
	c.Run()
	if !regexp.MustCompile(`^smartybridge \S+ \(commit \S+, go1\.\d+`).MatchString(out.String()) {
		t.Errorf("version: %q", out)
	}
}

// TestReadmeListsEveryVariable: the README's variable table cannot drift
// from what the program reads.
func TestReadmeListsEveryVariable(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range variables() {
		row := regexp.MustCompile("(?m)^\\| `" + v.name + "` \\|([^|]*)\\|")
		m := row.FindStringSubmatch(string(b))
		if m == nil {
			t.Errorf("README's table lacks %s", v.name)
			continue
		}
		if def := strings.Trim(strings.TrimSpace(m[1]), "`"); def != v.def && !(v.name == "SMARTY_STATE_DIR" || v.name == "SMARTY_MQTT_CLIENT_ID" || v.name == "SMARTY_AUTH_KEY") {
			t.Errorf("README says %s defaults to %q, the program %q", v.name, def, v.def)
		}
	}
}

// TestDecodeFromDevice: decode reads the meter's port itself (a pty here)
// in raw mode, stops after -frames, and keeps the raw bytes with -raw.
func TestDecodeFromDevice(t *testing.T) {
	pty := testenv.Socat(t)
	raw := filepath.Join(t.TempDir(), "capture.bin")
	m := sim.New(sim.Options{Start: time.Now(), Counter: 5})
	cmd, out, errb := command(map[string]string{"SMARTY_KEY": sim.DemoKeyHex}, "decode", "-device", pty.Device, "-frames", "2", "-duration", "20s", "-raw", raw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	var sent []byte
	for range 2 {
		f := m.Frame(nil, time.Now())
		sent = append(sent, f...)
		pty.Write(f)
		time.Sleep(300 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, errb)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("decode -frames 2 did not stop:\n%s", errb)
	}
	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("%d telegrams, want 2:\n%s", n, errb)
	}
	if b, _ := os.ReadFile(raw); !bytes.Equal(b, sent) {
		t.Errorf("raw capture holds %d bytes, sent %d", len(b), len(sent))
	}
	// -duration ends a silent capture.
	start := time.Now()
	cmd, _, errb = command(nil, "decode", "-device", pty.Device, "-duration", "1s")
	if err := cmd.Run(); err != nil || time.Since(start) > 10*time.Second {
		t.Errorf("decode -duration 1s: %v after %s\n%s", err, time.Since(start), errb)
	}
}

// TestReadmeEntityTable: the README's table of which OBIS code becomes
// which Home Assistant entity is made from the discovery catalog, over the
// telegrams of testdata/ (go test -run TestReadmeEntityTable -update
// rewrites it).
func TestReadmeEntityTable(t *testing.T) {
	seen := map[string]discovery.Sensor{}
	var order []string
	for _, name := range []string{"smarty-2026", "spec-appendix-a", "dsmr5-nl", "austria-t210dr"} {
		b, err := os.ReadFile("testdata/" + name + ".telegram")
		if err != nil {
			t.Fatal(err)
		}
		tg, err := p1.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range discovery.Sensors(tg) {
			code := s.OBIS.String()
			if _, ok := seen[code]; !ok { // the Smarty meter's first
				order = append(order, code)
				seen[code] = s
			}
		}
	}
	var tbl strings.Builder
	tbl.WriteString("| OBIS | entity | device class | unit | state class | shown |\n|---|---|---|---|---|---|\n")
	for _, code := range order {
		s := seen[code]
		shown := map[discovery.Visibility]string{discovery.Shown: "yes", discovery.Hidden: "disabled", discovery.Diagnostic: "diagnostic", discovery.HiddenDiagnostic: "disabled, diagnostic"}[s.Visibility]
		fmt.Fprintf(&tbl, "| `%s` | %s | %s | %s | %s | %s |\n", code, s.Name, s.DeviceClass, s.Unit, s.StateClass, shown)
	}
	const begin, end = "<!-- entity table: generated by TestReadmeEntityTable -->\n", "<!-- end of entity table -->\n"
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatal("README lacks the entity table markers")
	}
	if *update {
		os.WriteFile("README.md", []byte(readme[:i+len(begin)]+tbl.String()+readme[j:]), 0o644)
		return
	}
	if got := readme[i+len(begin) : j]; got != tbl.String() {
		t.Errorf("README's entity table differs from the catalog; go test -run TestReadmeEntityTable -update rewrites it")
	}
}
