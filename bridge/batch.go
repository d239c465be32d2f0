package bridge

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"

	"github.com/smartybridge/smartybridge/internal/mdns"
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
// Why that is safe (checked against paho.golang v0.23.0; re-check on every
// upgrade, TestBatchesInterleavedOverTLS fails if this stops holding):
//   - paho writes every packet with packets.ControlPacket.WriteTo, which
//     takes the connection's lock when the connection implements
//     sync.Locker (packets/packets.go) and then writes the packet, in one
//     writev on a TCP socket but in several Write calls on a tls.Conn.
//   - autopaho wraps its TLS connections in packets.NewThreadSafeConn for
//     that reason; our dialer wraps every connection, TCP and TLS, the same
//     way (autopaho's AttemptConnection contract).
//   - writeBatch takes that same lock around its one Write, so a batch
//     never lands inside one of paho's packets, nor one of paho's inside a
//     batch.
//   - The batch only holds QoS 0 PUBLISH packets without properties or
//     topic aliases, which need no packet identifier and no session state
//     in paho.

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

// errTLSHandshake marks a failure after the TCP connection was made,
// during the TLS handshake.
var errTLSHandshake = errors.New("TLS handshake failed")

// lockedConn is the connection paho writes to: a net.Conn that is also a
// sync.Locker, so that paho and writeBatch take turns per packet.
type lockedConn interface {
	net.Conn
	sync.Locker
}

// brokerAddress is where to dial the broker: its host and port, or for a
// .local name that the system cannot resolve (a static build has no
// multicast DNS) the address multicast DNS gives. TLS still checks the
// certificate against the name (tls.Config.ServerName).
func brokerAddress(ctx context.Context, u *url.URL) string {
	host := u.Hostname()
	if !mdns.IsLocal(host) {
		return u.Host
	}
	if _, err := net.DefaultResolver.LookupHost(ctx, host); err == nil {
		return u.Host
	}
	ips, err := mdns.Default.Lookup(ctx, host)
	if err != nil {
		return u.Host // the dial fails and says why (connectError)
	}
	return net.JoinHostPort(ips[0].String(), u.Port())
}

// dialKeep connects like autopaho would (TCP, or TLS for mqtts/ssl/tls),
// wraps the connection in paho's own thread-safe connection, and hands it
// to keep before paho gets it.
func dialKeep(tlsCfg *tls.Config, attempt func(*url.URL), keep func(lockedConn)) func(context.Context, autopaho.ClientConfig, *url.URL) (net.Conn, error) {
	return func(ctx context.Context, cfg autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
		attempt(u)
		ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
		defer cancel()
		nd := &net.Dialer{Timeout: 10 * time.Second}
		addr := brokerAddress(ctx, u)
		var c net.Conn
		var err error
		switch u.Scheme {
		case "mqtts", "ssl", "tls", "tcps", "mqtt+ssl":
			// The certificate is checked against this broker's name, even
			// when multicast DNS gave its address.
			tc := &tls.Config{}
			if tlsCfg != nil {
				tc = tlsCfg.Clone()
			}
			if tc.ServerName == "" {
				tc.ServerName = u.Hostname()
			}
			d := tls.Dialer{NetDialer: nd, Config: tc}
			c, err = d.DialContext(ctx, "tcp", addr)
			var opErr *net.OpError
			if err != nil && !(errors.As(err, &opErr) && opErr.Op == "dial") {
				err = fmt.Errorf("%w: %w", errTLSHandshake, err)
			}
		default:
			c, err = nd.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return nil, err
		}
		lc, ok := packets.NewThreadSafeConn(c).(lockedConn)
		if !ok {
			// paho changed its thread-safe connection: batches would no
			// longer be safe (TestBatchesInterleavedOverTLS shows it).
			_ = c.Close() // the error below says what matters
			return nil, errors.New("paho's thread-safe connection is not a sync.Locker (paho upgrade?)")
		}
		keep(lc)
		return lc, nil
	}
}
