package mdns

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

func TestLookup(t *testing.T) {
	want := netip.MustParseAddr("192.0.2.17")
	r := &Resolver{Addr: testenv.MDNSResponder(t, "homeassistant.local.", want), Timeout: 2 * time.Second}
	got, err := r.Lookup(context.Background(), "homeassistant.local")
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("Lookup: %v, %v; want %v", got, err, want)
	}
	if _, err := r.Lookup(context.Background(), "nobody.local"); err == nil {
		t.Error("a name nobody answers for resolved")
	}
	if _, err := r.Lookup(context.Background(), "example.com"); err == nil {
		t.Error("a name outside .local went to multicast DNS")
	}
}
