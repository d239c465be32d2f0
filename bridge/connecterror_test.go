package bridge

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/mdns"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

// A .local name the static build cannot resolve (Go's resolver does not
// speak multicast DNS) gets a hint that says so and what to use instead;
// another name that does not resolve, one about its spelling.
func TestConnectErrorNamesTheResolver(t *testing.T) {
	for host, want := range map[string]string{
		"homeassistant.local": "nor from multicast DNS",
		"brokr.lan":           "does not resolve",
	} {
		logs := &testenv.Buffer{}
		c := &conn{log: slog.New(slog.NewTextHandler(logs, nil)), url: "mqtt://" + host + ":1883"}
		c.attempt.Store(&url.URL{Scheme: "mqtt", Host: host + ":1883"})
		c.connectError(fmt.Errorf("failed to connect: %w", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}))
		if !strings.Contains(logs.String(), want) {
			t.Errorf("%s: %s", host, logs)
		}
	}
}

// TestBrokerByLocalName: a broker named .local, which Go's resolver in a
// static build cannot resolve, is found by multicast DNS (here a
// responder on the loopback) and connected to.
func TestBrokerByLocalName(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	saved := mdns.Default
	t.Cleanup(func() { mdns.Default = saved })
	mdns.Default = &mdns.Resolver{Addr: testenv.MDNSResponder(t, "smarty-broker.local.", netip.MustParseAddr("127.0.0.1"))}
	u, _ := url.Parse(broker.URL)
	u.Host = net.JoinHostPort("smarty-broker.local", u.Port())
	logs := &testenv.Buffer{}
	o := testOptions(u.String(), logs, decrypt.Options{})
	sub := testenv.Subscribe(t, broker.URL, "smarty/status/#")
	pr, pw := io.Pipe() // a port that stays open
	start(t, o, pr)
	t.Cleanup(func() { _ = pw.Close() }) // first, so that the bridge can stop
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	}()
	sub.WaitValue("smarty/status/"+o.MQTT.ClientID, "online", 15*time.Second)
}
