package bridge

import (
	"bytes"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// TestAppendPublishDecodes checks our QoS 0 packets against paho's decoder,
// for short and long (multi-byte remaining length) packets.
func TestAppendPublishDecodes(t *testing.T) {
	var buf []byte
	cases := []struct {
		topic   string
		payload string
		retain  bool
	}{
		{"smarty/SAG1030700012701/1-0:1.8.0", "273.764", true},
		{"smarty/x/0-0:96.13.0", "", false},
		{"smarty/x/long", strings.Repeat("m", 300), true},
		{"smarty/x/longer", strings.Repeat("m", 20000), true},
	}
	for _, c := range cases {
		buf = appendPublish(buf, c.topic, []byte(c.payload), c.retain)
	}
	r := bytes.NewReader(buf)
	for _, c := range cases {
		cp, err := packets.ReadPacket(r)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := cp.Content.(*packets.Publish)
		if !ok {
			t.Fatalf("packet %T", cp.Content)
		}
		if p.Topic != c.topic || string(p.Payload) != c.payload || p.Retain != c.retain || p.QoS != 0 {
			t.Errorf("decoded %s %q retain=%v qos=%d, want %s %q retain=%v", p.Topic, p.Payload, p.Retain, p.QoS, c.topic, c.payload, c.retain)
		}
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left over", r.Len())
	}
}
