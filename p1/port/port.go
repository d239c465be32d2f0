// Package port opens the source of P1 bytes: a serial device (the meter's
// cable), a TCP socket (ser2net, network P1 dongles) or a capture file. A
// serial or TCP port never fails for good: when the device vanishes or the
// connection drops it logs once and reopens with capped backoff, so that
// the meter keeps being read for as long as the program runs.
//
// Reads always carry a timeout. A quiet line makes Read return
// p1.ErrSilence, which ends whatever partial frame a p1.Scanner holds (the
// meter pauses about ten seconds between frames).
package port

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smartybridge/smartybridge/p1"
)

// Options configure Open.
type Options struct {
	// Device is a serial device ("/dev/ttyUSB0"), "tcp://host:port", or a
	// regular file holding a capture (read once, then io.EOF).
	Device string
	// Baud is the serial speed; Smarty meters send at 115200 8N1.
	Baud int
	// Log receives lifecycle messages; nil discards them.
	Log *slog.Logger
	// ReadTimeout bounds every read; a read that times out returns
	// p1.ErrSilence. Default 1 s.
	ReadTimeout time.Duration
	// IdleReconnect: a TCP peer silent this long is reconnected. Default 30 s.
	IdleReconnect time.Duration
	// MinBackoff and MaxBackoff bound the wait between reopen attempts.
	// Defaults 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// NoDataWarning: the port is open and not one byte came for this long:
	// warn once, with the likely causes. Default 30 s.
	NoDataWarning time.Duration
}

type kind int

const (
	serialPort kind = iota
	tcpPort
	filePort
)

// Reader reads P1 bytes from a port, reopening it as needed. It is meant
// for one reading goroutine; Close may be called from another.
type Reader struct {
	ctx  context.Context
	o    Options
	kind kind
	addr string
	log  *slog.Logger

	mu     sync.Mutex
	conn   io.ReadCloser
	closed bool

	backoff   time.Duration
	failing   bool      // the last open or read failed; logged once
	downSince time.Time // when the port was lost
	lastData  time.Time
	quickEOFs int // serial reads that returned nothing long before the timeout
	openedAt  time.Time
	gotData   bool // a byte ever arrived since the port was opened
	warned    bool // the no-data warning was given
	// NoData counts the times the port stayed silent for NoDataWarning
	// right after opening.
	noData atomic.Int64
	// openErr is why the port cannot be opened; nil while it is open (or
	// before the first attempt).
	openErr atomic.Pointer[OpenError]
}

// OpenError is why the port cannot be opened, and what to do.
type OpenError struct {
	Err  error
	Hint string
}

func (e *OpenError) Error() string { return e.Err.Error() }
func (e *OpenError) Unwrap() error { return e.Err }

// OpenError says why the port cannot be opened (an *OpenError); nil while
// it is open. Any goroutine may call it.
func (r *Reader) OpenError() error {
	if e := r.openErr.Load(); e != nil {
		return e
	}
	return nil
}

// Live reports whether the port is a meter's line (serial or TCP), as
// opposed to a capture file.
func (r *Reader) Live() bool { return r.kind != filePort }

// NoData counts the times an open port sent nothing for NoDataWarning.
func (r *Reader) NoData() int64 { return r.noData.Load() }

// Open prepares a Reader; the port itself is opened on the first Read. The
// error is only for options that can never work.
func Open(ctx context.Context, o Options) (*Reader, error) {
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = time.Second
	}
	if o.NoDataWarning <= 0 {
		o.NoDataWarning = 30 * time.Second
	}
	if o.IdleReconnect <= 0 {
		o.IdleReconnect = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.Baud <= 0 {
		o.Baud = 115200
	}
	r := &Reader{ctx: ctx, o: o, log: o.Log, backoff: o.MinBackoff}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.Device == "":
		return nil, errors.New("no device: set SMARTY_DEVICE to the serial port (such as /dev/ttyUSB0) or tcp://host:port")
	case strings.HasPrefix(o.Device, "tcp://"):
		host, p, err := net.SplitHostPort(strings.TrimPrefix(o.Device, "tcp://"))
		if err != nil || host == "" || p == "" {
			return nil, fmt.Errorf("device %q: want tcp://host:port", o.Device)
		}
		r.kind, r.addr = tcpPort, net.JoinHostPort(host, p)
	default:
		r.kind, r.addr = serialPort, o.Device
		if fi, err := os.Stat(o.Device); err == nil && fi.Mode().IsRegular() {
			r.kind = filePort
		}
	}
	return r, nil
}

// Read reads bytes from the port. It returns p1.ErrSilence after a read
// timeout, io.EOF at the end of a capture file, and the context's error
// once the context is done; all other trouble is handled inside.
func (r *Reader) Read(p []byte) (int, error) {
	for {
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		conn, err := r.current()
		if err != nil {
			return 0, err
		}
		if conn == nil {
			r.wait()
			continue
		}
		if c, ok := conn.(net.Conn); ok {
			// A connection that takes no deadline is read without one;
			// the meter's silence is then noticed by TCP keepalive.
			_ = c.SetReadDeadline(time.Now().Add(r.o.ReadTimeout))
		}
		start := time.Now()
		n, err := conn.Read(p)
		if n > 0 {
			r.lastData = time.Now()
			r.quickEOFs = 0
			if r.warned {
				r.log.Info("the meter port sends data now", "device", r.o.Device)
			}
			r.gotData, r.warned = true, false
			return n, nil
		}
		if r.kind == filePort && err == io.EOF {
			return 0, io.EOF
		}
		if r.silent(err, time.Since(start)) {
			r.checkNoData()
			if r.kind == tcpPort && time.Since(r.lastData) > r.o.IdleReconnect {
				r.drop(fmt.Errorf("no data for %s", r.o.IdleReconnect.Round(time.Second)))
				continue
			}
			return 0, p1.ErrSilence
		}
		if err == nil {
			continue
		}
		r.drop(err)
	}
}

// checkNoData warns once when an open port has sent nothing at all: the
// commonest first-install failure.
func (r *Reader) checkNoData() {
	if r.gotData || r.warned || r.kind == filePort || time.Since(r.openedAt) < r.o.NoDataWarning {
		return
	}
	r.warned = true
	r.noData.Add(1)
	hint := "ask the grid operator to open the meter's P1 port (it is closed by default); check that the cable drives the data-request line (RJ12 pin 2 at 5 V) and that SMARTY_DEVICE is the cable's port (ls /dev/serial/by-id/)"
	if r.kind == tcpPort {
		hint = "the dongle or ser2net accepts the connection but sends nothing: check its serial settings (115200 8N1), its cable, and that the meter's P1 port is open (ask the grid operator)"
	}
	r.log.Warn(fmt.Sprintf("the meter port is open but not one byte came in %s", r.o.NoDataWarning.Round(time.Second)), "device", r.o.Device, "hint", hint)
}

// silent reports whether a read that returned nothing was a timeout. A
// serial port with a read timeout returns io.EOF when the timeout passes;
// one that returns io.EOF at once, again and again, is gone (a pulled USB
// adapter), and treating that as silence would spin the CPU.
func (r *Reader) silent(err error, took time.Duration) bool {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return true
	case r.kind == serialPort && err == io.EOF:
		if took >= r.o.ReadTimeout/2 {
			r.quickEOFs = 0
			return true
		}
		r.quickEOFs++
		return r.quickEOFs < 3
	}
	return false
}

// current returns the open port, opening it if needed; nil means the open
// failed and the caller should wait.
func (r *Reader) current() (io.ReadCloser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("port closed")
	}
	if r.conn != nil {
		return r.conn, nil
	}
	c, err := r.open()
	if err != nil {
		if r.kind == filePort {
			return nil, err
		}
		r.openErr.Store(&OpenError{Err: err, Hint: hint(r.kind, err)})
		if !r.failing {
			r.failing = true
			if r.downSince.IsZero() {
				r.downSince = time.Now()
			}
			r.log.Warn("cannot open meter port; retrying with backoff", "device", r.o.Device, "err", err, "hint", hint(r.kind, err))
		} else {
			r.log.Debug("meter port still unavailable", "device", r.o.Device, "err", err, "retry_in", r.backoff)
		}
		return nil, nil
	}
	if r.failing || !r.downSince.IsZero() {
		r.log.Info("meter port reopened", "device", r.o.Device, "down_for", time.Since(r.downSince).Round(time.Second))
	} else {
		r.log.Info("meter port opened", "device", r.o.Device)
	}
	r.openErr.Store(nil)
	r.failing, r.downSince, r.backoff = false, time.Time{}, r.o.MinBackoff
	r.conn, r.lastData, r.quickEOFs = c, time.Now(), 0
	r.openedAt, r.gotData = time.Now(), false
	return c, nil
}

func (r *Reader) open() (io.ReadCloser, error) {
	switch r.kind {
	case tcpPort:
		d := net.Dialer{Timeout: 10 * time.Second}
		return d.DialContext(r.ctx, "tcp", r.addr)
	case filePort:
		return os.Open(r.addr)
	}
	return openSerial(r.addr, r.o.Baud, r.o.ReadTimeout)
}

func hint(k kind, err error) string {
	if errors.Is(err, os.ErrPermission) {
		return "no permission to open the device: add the user to its group (sudo usermod -aG dialout $USER, then log in again); under systemd, SupplementaryGroups=dialout; in the add-on, pick the device in its configuration (it is then mapped in)"
	}
	if errors.Is(err, os.ErrNotExist) {
		return "no such device: check SMARTY_DEVICE (ls /dev/serial/by-id/ lists USB serial adapters; COM3 and so on on Windows, /dev/cu.usbserial-… on macOS) and that the cable is plugged in"
	}
	if k == tcpPort {
		return "check that the P1 dongle or ser2net is reachable at that address"
	}
	return "check the cable and SMARTY_DEVICE; in the add-on, pick the device in the configuration"
}

// drop closes the port after an error so that the next Read reopens it.
func (r *Reader) drop(err error) {
	r.mu.Lock()
	c := r.conn
	r.conn = nil
	r.mu.Unlock()
	if c != nil {
		_ = c.Close() // a port that failed: the reopen says what is wrong
	}
	if r.ctx.Err() != nil {
		return
	}
	r.downSince = time.Now()
	r.log.Warn("lost the meter port; reopening", "device", r.o.Device, "err", err)
}

// wait sleeps for the current backoff, then doubles it up to the cap.
func (r *Reader) wait() {
	t := time.NewTimer(r.backoff)
	defer t.Stop()
	select {
	case <-r.ctx.Done():
	case <-t.C:
	}
	r.backoff = min(2*r.backoff, r.o.MaxBackoff)
}

// Close closes the port; a blocked Read returns within the read timeout.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.conn == nil {
		return nil
	}
	err := r.conn.Close()
	r.conn = nil
	return err
}
