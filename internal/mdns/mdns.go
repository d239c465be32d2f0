// Package mdns looks up a .local host name with multicast DNS (RFC 6762),
// which Go's own resolver does not do: a static build (CGO_ENABLED=0), as
// smartybridge ships, cannot resolve homeassistant.local otherwise.
//
// It sends one query for the name's A and AAAA records from an ephemeral
// port to 224.0.0.251:5353, as a "legacy unicast" querier (RFC 6762 §6.7):
// responders answer to that port directly, so no multicast membership is
// needed. The first answer that carries an address wins.
package mdns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Resolver sends queries to Addr.
type Resolver struct {
	Addr string // 224.0.0.251:5353 for the network; a test's responder
	// Timeout bounds one lookup; 0 means 2 s.
	Timeout time.Duration
}

// Default is the network's multicast DNS.
var Default = &Resolver{Addr: "224.0.0.251:5353"}

// IsLocal reports whether host is a name multicast DNS answers for.
func IsLocal(host string) bool {
	return strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".local")
}

// Lookup returns the addresses of a .local host, IPv4 first.
func (r *Resolver) Lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if !IsLocal(host) {
		return nil, fmt.Errorf("mdns: %s is not a .local name", host)
	}
	name, err := dnsmessage.NewName(strings.TrimSuffix(host, ".") + ".")
	if err != nil {
		return nil, fmt.Errorf("mdns: %s: %w", host, err)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := uint16(rand.Uint32())
	q := dnsmessage.Message{
		Header: dnsmessage.Header{ID: id},
		Questions: []dnsmessage.Question{
			{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
			{Name: name, Type: dnsmessage.TypeAAAA, Class: dnsmessage.ClassINET},
		},
	}
	packet, err := q.Pack()
	if err != nil {
		return nil, err
	}
	to, err := net.ResolveUDPAddr("udp", r.Addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	if _, err := c.WriteToUDP(packet, to); err != nil {
		return nil, fmt.Errorf("mdns: query for %s: %w", host, err)
	}
	buf := make([]byte, 9000)
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil || isTimeout(err) {
				return nil, fmt.Errorf("mdns: no answer for %s within %s", host, timeout)
			}
			return nil, err
		}
		if addrs := answers(buf[:n], name); len(addrs) > 0 {
			return addrs, nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// answers are the addresses a response gives for name; responses to other
// questions (multicast DNS is chatty) give none.
func answers(b []byte, name dnsmessage.Name) []netip.Addr {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || !h.Response {
		return nil
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil
	}
	var v4, v6 []netip.Addr
	for {
		rh, err := p.AnswerHeader()
		if err != nil {
			break
		}
		if !strings.EqualFold(rh.Name.String(), name.String()) {
			_ = p.SkipAnswer()
			continue
		}
		switch rh.Type {
		case dnsmessage.TypeA:
			if r, err := p.AResource(); err == nil {
				v4 = append(v4, netip.AddrFrom4(r.A))
			}
		case dnsmessage.TypeAAAA:
			if r, err := p.AAAAResource(); err == nil {
				v6 = append(v6, netip.AddrFrom16(r.AAAA))
			}
		default:
			_ = p.SkipAnswer()
		}
	}
	return append(v4, v6...)
}
