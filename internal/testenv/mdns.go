package testenv

import (
	"net"
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// MDNSResponder answers multicast DNS queries for name (with the final
// dot, "broker.local.") with addr, on the loopback, as a device on the
// network answers a legacy-unicast query; before each answer it sends one
// about another name, as a chatty network does. It returns its address,
// for an mdns.Resolver.
func MDNSResponder(t testing.TB, name string, addr netip.Addr) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	answer := func(id uint16, q []dnsmessage.Question, host dnsmessage.Name, a netip.Addr) []byte {
		b, _ := (&dnsmessage.Message{Header: dnsmessage.Header{ID: id, Response: true, Authoritative: true}, Questions: q,
			Answers: []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: host, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 120},
				Body:   &dnsmessage.AResource{A: a.As4()},
			}}}).Pack()
		return b
	}
	go func() {
		buf := make([]byte, 9000)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			var q dnsmessage.Message
			if q.Unpack(buf[:n]) != nil || len(q.Questions) == 0 || q.Questions[0].Name.String() != name {
				continue
			}
			_, _ = c.WriteToUDP(answer(0, nil, dnsmessage.MustNewName("printer.local."), netip.MustParseAddr("10.0.0.9")), from)
			_, _ = c.WriteToUDP(answer(q.ID, q.Questions, q.Questions[0].Name, addr), from)
		}
	}()
	return c.LocalAddr().String()
}
