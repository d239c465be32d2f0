package testenv

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Subscriber records what a real MQTT client sees: the last payload and
// the number of messages per topic.
type Subscriber struct {
	t      testing.TB
	Client *paho.Client
	mu     sync.Mutex
	last   map[string]string
	count  map[string]int
	retain map[string]bool
	id     string
	synced atomic.Int64 // the last marker of Sync that came back
}

// syncPrefix is the topic of Sync's markers, never recorded.
const syncPrefix = "testenv/sync/"

var subscribers atomic.Int64

// Subscribe connects a client to the broker and subscribes to topics.
func Subscribe(t testing.TB, brokerURL string, topics ...string) *Subscriber {
	t.Helper()
	u, _ := url.Parse(brokerURL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return SubscribeConn(t, c, &paho.Connect{ClientID: fmt.Sprintf("test-sub-%d", subscribers.Add(1)), CleanStart: true, KeepAlive: 30}, topics...)
}

// SubscribeConn is Subscribe over c with the given CONNECT (a login, say).
func SubscribeConn(t testing.TB, c net.Conn, connect *paho.Connect, topics ...string) *Subscriber {
	t.Helper()
	s := &Subscriber{t: t, last: map[string]string{}, count: map[string]int{}, retain: map[string]bool{}, id: connect.ClientID}
	s.Client = paho.NewClient(paho.ClientConfig{Conn: c, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(p paho.PublishReceived) (bool, error) {
			if p.Packet.Topic == syncPrefix+s.id {
				n, _ := strconv.ParseInt(string(p.Packet.Payload), 10, 64)
				s.synced.Store(n)
				return true, nil
			}
			s.mu.Lock()
			s.last[p.Packet.Topic] = string(p.Packet.Payload)
			s.count[p.Packet.Topic]++
			s.retain[p.Packet.Topic] = p.Packet.Retain
			s.mu.Unlock()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.Client.Connect(ctx, connect); err != nil {
		t.Fatal(err)
	}
	subs := make([]paho.SubscribeOptions, len(topics))
	for i, tp := range topics {
		subs[i] = paho.SubscribeOptions{Topic: tp, QoS: 1}
	}
	if len(subs) > 0 {
		if _, err := s.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.Client.Disconnect(&paho.Disconnect{})
		<-ctx.Done()
	})
	return s
}

// Sync returns once everything the broker queued for s before the call
// has arrived (the retained messages of its subscriptions, say): the
// broker delivers a client's messages in order, so a marker published now
// comes after them.
func (s *Subscriber) Sync() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := syncPrefix + s.id
	n := s.synced.Load() + 1
	if n == 1 {
		if _, err := s.Client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
			s.t.Fatalf("sync: %v", err)
		}
	}
	if _, err := s.Client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: fmt.Append(nil, n)}); err != nil {
		s.t.Fatalf("sync: %v", err)
	}
	WaitFor(s.t, 30*time.Second, "the sync marker", func() bool { return s.synced.Load() >= n })
}

// Retained returns every retained message on the broker (the last
// payload per topic).
func Retained(t testing.TB, brokerURL string) map[string]string {
	t.Helper()
	s := Subscribe(t, brokerURL, "#")
	s.Sync()
	return s.Topics("")
}

// Get returns the last payload on topic.
func (s *Subscriber) Get(topic string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.last[topic]
	return v, ok
}

// N counts the messages on topic.
func (s *Subscriber) N(topic string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[topic]
}

// Topics returns the last payload of every topic under prefix.
func (s *Subscriber) Topics(prefix string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.last {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// WaitFor polls until cond holds or fails the test after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitValue waits until topic carries want.
func (s *Subscriber) WaitValue(topic, want string, d time.Duration) {
	s.t.Helper()
	WaitFor(s.t, d, topic+" = "+want, func() bool { v, _ := s.Get(topic); return v == want })
}
