package bridge

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	paholog "github.com/eclipse/paho.golang/paho/log"
)

// Knowing what the broker took.
//
// A telegram's states are QoS 0: the broker acknowledges none of them, so
// a connection that died (a broker killed, a half-open path where packets
// go out and nothing comes back) swallows whatever was written since it
// last answered. The bridge therefore ends every batch of states with a
// PINGREQ. The broker reads a connection's packets in order and answers
// every PINGREQ with a PINGRESP, so the n-th PINGRESP says that
// everything written before the n-th PINGREQ was read: the batch it
// closes was delivered. A PINGREQ unanswered for pingTimeout means the
// path is dead: the pinger ends the connection (paho reconnects) and the
// batches it did not confirm are sent again on the next connection
// (hold.go).
//
// The pinger also does paho's keepalive: it pings when nothing was both
// sent and received for the keepalive interval.

// pingTimeout is how long a PINGREQ may stay unanswered before the
// connection counts as dead: well above a broker's answer time on a slow
// link, well below the keepalive's 1.5 × 30 s.
const pingTimeout = 10 * time.Second

// maxUnanswered bounds the PINGREQs waiting for an answer; past it the
// connection is dead anyway.
const maxUnanswered = 4096

var errPingTimeout = errors.New("the broker answered no PINGREQ for 10 s: the connection is dead")

// pingReq is an MQTT PINGREQ packet.
var pingReq = []byte{0xC0, 0x00}

// pinger implements paho.Pinger. Safe for concurrent use.
type pinger struct {
	mu       sync.Mutex
	conn     net.Conn
	gen      int64 // counts connections
	sent     int64 // PINGREQs written on this connection
	answered int64 // PINGRESPs received on it
	pending  []time.Time
	lastSent time.Time
	lastRecv time.Time
}

// Run pings until ctx ends or the broker stops answering.
func (p *pinger) Run(ctx context.Context, conn net.Conn, keepAlive uint16) error {
	if conn == nil {
		return errors.New("pinger: no connection")
	}
	p.mu.Lock()
	p.attach(conn)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.conn == conn {
			p.conn = nil
		}
		p.mu.Unlock()
	}()
	interval := time.Duration(keepAlive) * time.Second
	if err := p.ping(); err != nil {
		return err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		p.mu.Lock()
		now := time.Now()
		dead := len(p.pending) > 0 && now.Sub(p.pending[0]) > pingTimeout
		idle := len(p.pending) == 0 && interval > 0 && now.Sub(p.lastSent) >= interval/2 && now.Sub(p.lastRecv) >= interval/2
		p.mu.Unlock()
		if dead {
			return errPingTimeout
		}
		if idle {
			if err := p.ping(); err != nil {
				return err
			}
		}
	}
}

// ping writes a PINGREQ of its own (keepalive, or the first on a
// connection).
func (p *pinger) ping() error {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		return net.ErrClosed
	}
	if l, ok := c.(sync.Locker); ok {
		l.Lock()
		defer l.Unlock()
	}
	p.written(c)
	_, err := c.Write(pingReq)
	return err
}

// adopt makes c the connection whose PINGREQs are counted, as soon as it is
// up (before paho starts Run, and before anything is written on it), so
// that current names it whenever the connection counts as up.
func (p *pinger) adopt(c net.Conn) {
	p.mu.Lock()
	p.attach(c)
	p.mu.Unlock()
}

// attach makes c the connection whose PINGREQs are counted. Called with
// p.mu held.
func (p *pinger) attach(c net.Conn) {
	if p.conn != c {
		p.conn = c
		p.gen++
		p.sent, p.answered, p.pending = 0, 0, p.pending[:0]
	}
}

// written books a PINGREQ about to be written on c, under c's lock so that
// numbers follow the order on the wire; it returns the connection and the
// number.
func (p *pinger) written(c net.Conn) (gen, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attach(c)
	if len(p.pending) >= maxUnanswered {
		p.pending = p.pending[1:]
	}
	p.sent++
	now := time.Now()
	p.pending = append(p.pending, now)
	p.lastSent = now
	return p.gen, p.sent
}

// delivered reports whether the broker answered PINGREQ n of connection
// gen: everything written before it was read.
func (p *pinger) delivered(gen, n int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return n > 0 && gen == p.gen && p.answered >= n
}

// current returns the connection now counted.
func (p *pinger) current() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// PacketSent is called by paho after it wrote a packet.
func (p *pinger) PacketSent() {
	p.mu.Lock()
	p.lastSent = time.Now()
	p.mu.Unlock()
}

// PacketReceived is called by paho for every packet it read.
func (p *pinger) PacketReceived() {
	p.mu.Lock()
	p.lastRecv = time.Now()
	p.mu.Unlock()
}

// PingResp is called by paho for every PINGRESP.
func (p *pinger) PingResp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) > 0 {
		p.pending = p.pending[1:]
		p.answered++
	}
}

// SetDebug is paho's; the pinger logs nothing.
func (p *pinger) SetDebug(paholog.Logger) {}
