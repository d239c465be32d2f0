package port

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
)

func frame(t *testing.T) []byte {
	b, err := os.ReadFile("../../testdata/smarty-2026.frame")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logCounter counts log records by message.
type logCounter struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// frames scans r and sends each frame on a channel until ctx ends.
func frames(r io.Reader) <-chan []byte {
	ch := make(chan []byte, 16)
	go func() {
		defer close(ch)
		s := p1.NewScanner(r)
		for s.Scan() {
			ch <- bytes.Clone(s.Frame())
		}
	}()
	return ch
}

func expect(t *testing.T, ch <-chan []byte, want []byte, within time.Duration) {
	t.Helper()
	select {
	case got, ok := <-ch:
		if !ok {
			t.Fatal("scanner ended")
		}
		if !bytes.Equal(got, want) {
			t.Fatal("frame differs")
		}
	case <-time.After(within):
		t.Fatal("no frame in time")
	}
}

func TestSerialUnplugAndReplug(t *testing.T) {
	pty := testenv.Socat(t)
	logs := &logCounter{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Open(ctx, Options{Device: pty.Device, Log: slog.New(logs), ReadTimeout: 200 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ch := frames(r)
	f := frame(t)
	pty.Write(f)
	expect(t, ch, f, 5*time.Second)

	// Pull the cable for two seconds: with backoff from 50 ms capped at
	// 400 ms there are at most a dozen attempts, not a busy loop.
	pty.Stop()
	time.Sleep(2 * time.Second)
	if n := logs.count("meter port still unavailable"); n > 12 {
		t.Errorf("%d reopen attempts in 2 s: spinning", n)
	}
	if n := logs.count("lost the meter port") + logs.count("cannot open meter port"); n < 1 || n > 3 {
		t.Errorf("%d warnings for one unplug, want one or two", n)
	}
	pty.Start()
	deadline := time.Now().Add(5 * time.Second)
	for logs.count("meter port reopened") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	pty.Write(f)
	expect(t, ch, f, 5*time.Second)
	cancel()
	for range ch {
	}
}

func TestTCPReconnectsAndSilence(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f := frame(t)
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Open(ctx, Options{Device: "tcp://" + l.Addr().String(), ReadTimeout: 100 * time.Millisecond,
		IdleReconnect: 500 * time.Millisecond, MinBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	buf := make([]byte, 4096)
	readFrame := func() {
		t.Helper()
		var got []byte
		deadline := time.Now().Add(3 * time.Second)
		for len(got) < len(f) && time.Now().Before(deadline) {
			n, err := r.Read(buf)
			if err != nil && !errors.Is(err, p1.ErrSilence) {
				t.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
		if !bytes.Equal(got, f) {
			t.Fatalf("read %d bytes, want the frame", len(got))
		}
	}
	// First connection: one frame, then the peer hangs up.
	done := make(chan struct{})
	go func() {
		c := <-conns
		c.Write(f)
		time.Sleep(100 * time.Millisecond)
		c.Close()
		close(done)
	}()
	readFrame()
	<-done
	// Second connection: the reader reconnects by itself.
	go func() {
		c := <-conns
		c.Write(f)
		// Then stays silent: the reader reports silence, then reconnects.
	}()
	readFrame()
	start := time.Now()
	if _, err := r.Read(buf); !errors.Is(err, p1.ErrSilence) {
		t.Fatalf("silent peer: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("silence reported after %s", d)
	}
	// Keep reading: after IdleReconnect a third connection is made.
	go func() {
		for {
			if _, err := r.Read(buf); err != nil && !errors.Is(err, p1.ErrSilence) {
				return
			}
		}
	}()
	select {
	case c := <-conns:
		c.Close()
	case <-time.After(3 * time.Second):
		t.Fatal("no reconnect after the peer stayed silent")
	}
}

func TestFileEndsWithEOF(t *testing.T) {
	r, err := Open(context.Background(), Options{Device: "../../testdata/smarty-2026.frame"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(b, frame(t)) {
		t.Fatalf("read %d bytes, %v", len(b), err)
	}
}

func TestOpenRejectsBadDevice(t *testing.T) {
	for _, d := range []string{"", "tcp://nohostport", "tcp://:2000"} {
		if _, err := Open(context.Background(), Options{Device: d}); err == nil {
			t.Errorf("Open(%q) accepted", d)
		}
	}
}

// TestSilentPortIsReported: a port that opens but sends nothing (P1 port
// closed, data-request line not driven, wrong device) gets one warning
// with the causes and a counter, and a line when data comes.
func TestSilentPortIsReported(t *testing.T) {
	pty := testenv.Socat(t)
	logs := &logCounter{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := Open(ctx, Options{Device: pty.Device, ReadTimeout: 100 * time.Millisecond, NoDataWarning: time.Second, Log: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64)
	deadline := time.Now().Add(2500 * time.Millisecond)
	for time.Now().Before(deadline) {
		r.Read(buf)
	}
	if n := logs.count("the meter port is open but not one byte came"); n != 1 || r.NoData() != 1 {
		t.Fatalf("silence warned %d times, counted %d", n, r.NoData())
	}
	pty.Write([]byte("x"))
	for range 50 {
		if n, _ := r.Read(buf); n > 0 {
			break
		}
	}
	if logs.count("the meter port sends data now") != 1 {
		t.Error("data after the silence not reported")
	}
}

func TestHints(t *testing.T) {
	if h := hint(serialPort, &os.PathError{Op: "open", Path: "/dev/ttyUSB0", Err: os.ErrPermission}); !strings.Contains(h, "dialout") {
		t.Errorf("permission hint %q", h)
	}
	if h := hint(serialPort, &os.PathError{Op: "open", Path: "/dev/ttyUSB9", Err: os.ErrNotExist}); !strings.Contains(h, "by-id") {
		t.Errorf("missing device hint %q", h)
	}
}
