package bridge

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

// A .local name the static build cannot resolve (Go's resolver does not
// speak multicast DNS) gets a hint that says so and what to use instead;
// another name that does not resolve, one about its spelling.
func TestConnectErrorNamesTheResolver(t *testing.T) {
	for host, want := range map[string]string{
		"homeassistant.local": "cannot look up .local names",
		"brokr.lan":           "does not resolve",
	} {
		logs := &testenv.Buffer{}
		c := &conn{log: slog.New(slog.NewTextHandler(logs, nil)), url: "mqtt://" + host + ":1883", host: host}
		c.connectError(fmt.Errorf("failed to connect: %w", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}))
		if !strings.Contains(logs.String(), want) {
			t.Errorf("%s: %s", host, logs)
		}
	}
}
