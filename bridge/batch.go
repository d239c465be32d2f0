package bridge

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
)

// batchConn lets the bridge send all state messages of one telegram in one
// write. paho writes every QoS 0 publish straight to the connection, one
// system call each: some fifty per telegram, which cost more CPU than
// decrypting and parsing it, and make the broker wake up fifty times.
// Between begin and flush, writes collect in a buffer instead.
//
// Only QoS 0 messages may be sent between begin and flush by the batching
// goroutine: a QoS 1 publish waits for an acknowledgement that cannot come
// before its bytes leave. Other goroutines' writes (pings, QoS 1 from the
// announcer) are merely delayed until the flush.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      []byte
	err      error
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.batching {
		c.buf = append(c.buf, p...)
		if len(c.buf) >= 64<<10 {
			return len(p), c.flushLocked()
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) begin() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	return c.flushLocked()
}

func (c *batchConn) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// dialBatch connects like autopaho would (TCP, or TLS for mqtts/ssl/tls)
// and wraps the connection in a batchConn, which it hands to keep.
func dialBatch(tlsCfg *tls.Config, keep func(*batchConn)) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		var c net.Conn
		var err error
		switch u.Scheme {
		case "mqtts", "ssl", "tls", "tcps", "mqtt+ssl":
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: tlsCfg}
			c, err = d.DialContext(ctx, "tcp", u.Host)
		default:
			d := net.Dialer{Timeout: 10 * time.Second}
			c, err = d.DialContext(ctx, "tcp", u.Host)
		}
		if err != nil {
			return nil, err
		}
		bc := &batchConn{Conn: c}
		keep(bc)
		return bc, nil
	}
}
