package bridge

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
)

// Sending a telegram's states in one write.
//
// paho builds every publish with about fifteen allocations and writes it
// with its own system call: for the fifty state messages of one telegram
// that costs more CPU than decrypting and parsing it (measured: 6.4 µs per
// QoS 0 publish, BenchmarkPahoPublishQoS0), and wakes the broker fifty
// times. QoS 0 PUBLISH packets are simple (MQTT 5.0 §3.3), so the bridge
// encodes them itself into one buffer and writes it to the connection in a
// single Write call.
//
// That is only safe where every write is atomic with respect to paho's
// own: Go sends each paho packet with one writev, and each of our buffers
// with one write, under the descriptor's write lock. A tls.Conn has no
// writev: paho writes a packet to it in several calls, and two goroutines
// (a publish, a PUBACK, a PINGREQ) can interleave them and corrupt the
// stream. So over TLS paho gets one end of a Unix socket pair, which has
// writev, and two goroutines copy between the other end and the TLS
// connection: every packet, paho's or ours, then reaches TLS whole and in
// order.

// appendPublish appends an MQTT 5 PUBLISH packet, QoS 0, with no
// properties.
func appendPublish(dst []byte, topic string, payload []byte, retain bool) []byte {
	flags := byte(0x30)
	if retain {
		flags |= 0x01
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(2+len(topic)+1+len(payload)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	dst = append(dst, 0) // property length
	return append(dst, payload...)
}

// rawConn is the connection paho uses, kept so that batches can be written
// to it.
type rawConn struct {
	net.Conn
}

// dialKeep connects like autopaho would (TCP, or TLS for mqtts/ssl/tls) and
// hands the connection to keep before paho gets it.
func dialKeep(tlsCfg *tls.Config, keep func(*rawConn)) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		nd := &net.Dialer{Timeout: 10 * time.Second}
		var c net.Conn
		switch u.Scheme {
		case "mqtts", "ssl", "tls", "tcps", "mqtt+ssl":
			d := tls.Dialer{NetDialer: nd, Config: tlsCfg}
			tc, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return nil, err
			}
			if c, err = spliced(tc); err != nil {
				tc.Close()
				return nil, err
			}
		default:
			var err error
			if c, err = nd.DialContext(ctx, "tcp", u.Host); err != nil {
				return nil, err
			}
		}
		keep(&rawConn{Conn: c})
		return c, nil
	}
}

// spliced returns one end of a Unix socket pair whose other end is copied
// to and from conn, until either side closes.
func spliced(conn net.Conn) (net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket pair: %w", err)
	}
	ends := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "mqtt-splice")
		ends[i], err = net.FileConn(f)
		f.Close()
		if err != nil {
			for _, e := range ends[:i] {
				e.Close()
			}
			return nil, fmt.Errorf("socket pair: %w", err)
		}
	}
	copyThenClose := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	go copyThenClose(conn, ends[1])
	go copyThenClose(ends[1], conn)
	return ends[0], nil
}
