// Package testenv starts the real peers that integration tests talk to: a
// mosquitto broker on a free 127.0.0.1 port and a socat pseudo-terminal
// pair standing in for the meter's serial cable. Tests skip when the tools
// are missing, unless CI is set, where a missing tool is a failure.
package testenv

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

// Buffer collects what a logger or a running process writes while the
// test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// need finds a program or skips (fails under CI).
func need(t testing.TB, name string, alt ...string) string {
	t.Helper()
	for _, n := range append([]string{name}, alt...) {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		if _, err := os.Stat(n); err == nil {
			return n
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not installed (.ci/run installs it)", name)
	}
	t.Skipf("%s not installed: apt-get install %s", name, name)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Broker is a mosquitto process.
type Broker struct {
	t    testing.TB
	bin  string
	conf string
	Port int
	URL  string // mqtt://127.0.0.1:PORT
	cmd  *exec.Cmd
}

// Mosquitto starts a broker with persistence in a temp dir. extra is added
// to its config file.
func Mosquitto(t testing.TB, extra string) *Broker {
	t.Helper()
	bin := need(t, "mosquitto", "/usr/sbin/mosquitto")
	dir := t.TempDir()
	port := FreePort(t)
	conf := filepath.Join(dir, "mosquitto.conf")
	cfg := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nlog_dest stderr\nlog_type error\n%s\n", port, dir, extra)
	if os.Geteuid() == 0 {
		// As root, mosquitto drops to user "mosquitto", who cannot write
		// the test's persistence directory.
		cfg += "user root\n"
	}
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Broker{t: t, bin: bin, conf: conf, Port: port, URL: fmt.Sprintf("mqtt://127.0.0.1:%d", port)}
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start starts the broker and waits until it accepts connections.
func (b *Broker) Start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", b.conf)
	logf, err := os.OpenFile(b.conf+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer func() { _ = logf.Close() }()
	b.cmd.Stderr = logf
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	waitTCP(b.t, b.Port)
}

// Stop stops the broker (SIGTERM, so it saves its persistence).
func (b *Broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	_ = b.cmd.Wait()
	b.cmd = nil
}

// Kill kills the broker with SIGKILL: no chance to save anything.
func (b *Broker) Kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	b.cmd = nil
}

func waitTCP(t testing.TB, port int) {
	t.Helper()
	if !listening(port, 10*time.Second) {
		t.Fatalf("nothing listens on 127.0.0.1:%d", port)
	}
}

// listening reports whether something accepts connections on
// 127.0.0.1:port within d.
func listening(port int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			_ = c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// PTY is a socat pseudo-terminal pair: the bridge opens Device, the test
// writes the meter's bytes to Meter.
type PTY struct {
	t      testing.TB
	bin    string
	Device string
	Meter  string
	cmd    *exec.Cmd
	w      *os.File
}

// Socat starts a pty pair in a temp dir.
func Socat(t testing.TB) *PTY {
	t.Helper()
	bin := need(t, "socat")
	dir := t.TempDir()
	p := &PTY{t: t, bin: bin, Device: filepath.Join(dir, "ttyP1"), Meter: filepath.Join(dir, "meter")}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// Start creates the pair (again, after Stop: the cable is plugged back).
func (p *PTY) Start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "pty,raw,echo=0,link="+p.Meter, "pty,raw,echo=0,b115200,link="+p.Device)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, e1 := os.Stat(p.Meter)
		_, e2 := os.Stat(p.Device)
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			p.t.Fatal("socat made no pty")
		}
		time.Sleep(10 * time.Millisecond)
	}
	w, err := os.OpenFile(p.Meter, os.O_WRONLY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	p.w = w
}

// Write sends bytes as the meter would.
func (p *PTY) Write(b []byte) (int, error) { return p.w.Write(b) }

// Stop removes the pair: the cable is pulled.
func (p *PTY) Stop() {
	if p.w != nil {
		_ = p.w.Close()
		p.w = nil
	}
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		_ = p.cmd.Wait()
		p.cmd = nil
	}
}

// Len is the number of bytes written so far.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// WithMessage returns telegram with text as its message 0-0:96.13.0 (hex,
// as meters send it; the telegram must carry an empty one) and the CRC of
// the result.
func WithMessage(telegram []byte, text string) []byte {
	tg := strings.Replace(string(telegram), "0-0:96.13.0()", "0-0:96.13.0("+strings.ToUpper(hex.EncodeToString([]byte(text)))+")", 1)
	body := tg[:strings.LastIndexByte(tg, '!')+1]
	return fmt.Appendf([]byte(body), "%04X\r\n", crc16.Checksum([]byte(body)))
}
