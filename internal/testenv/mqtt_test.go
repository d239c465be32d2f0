package testenv

import (
	"context"
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// TestRetainedSeesEverything: Retained returns when the broker has sent
// every retained message, not after a guessed pause (a loaded machine
// once saw 8 of 100 after 300 ms).
func TestRetainedSeesEverything(t *testing.T) {
	broker := Mosquitto(t, "")
	pub := Subscribe(t, broker.URL)
	const n = 500
	for i := range n {
		if _, err := pub.Client.Publish(context.Background(), &paho.Publish{Topic: fmt.Sprintf("t/%d", i), Payload: []byte("x"), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if got := Retained(t, broker.URL); len(got) != n {
			t.Fatalf("Retained saw %d of %d topics", len(got), n)
		}
	}
}
