package bridge

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/url"
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
// own: on a plain TCP connection, Go sends each paho packet with one
// writev and each of our buffers with one write, under the descriptor's
// write lock. tls.Conn writes a paho packet in several calls, so over TLS
// the bridge publishes through paho, one message at a time.

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
// to it; tls marks a connection where that is not safe.
type rawConn struct {
	net.Conn
	tls bool
}

// dialKeep connects like autopaho would (TCP, or TLS for mqtts/ssl/tls) and
// hands the connection to keep before paho gets it.
func dialKeep(tlsCfg *tls.Config, keep func(*rawConn)) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		nd := &net.Dialer{Timeout: 10 * time.Second}
		switch u.Scheme {
		case "mqtts", "ssl", "tls", "tcps", "mqtt+ssl":
			d := tls.Dialer{NetDialer: nd, Config: tlsCfg}
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return nil, err
			}
			keep(&rawConn{Conn: c, tls: true})
			return c, nil
		}
		c, err := nd.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return nil, err
		}
		keep(&rawConn{Conn: c})
		return c, nil
	}
}
