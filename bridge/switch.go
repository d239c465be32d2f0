package bridge

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/discovery"
)

// Switching SMARTY_DISCOVERY between device, entity and off would leave the
// other style's retained configs behind: Home Assistant would then see two
// configs with the same unique ids. Before a node (a meter, or the
// instance's own device) is first announced, the switcher subscribes to
// its discovery topics of both styles and waits a moment for the broker's
// retained messages; it keeps the topics that hold a config of smartybridge
// (its origin). A decryptor, which may serve thousands of meters, instead
// subscribes once per connection to those topics of every node (a
// wildcard: on a clustered broker a SUBSCRIBE costs a consensus round, and
// one per meter held new meters back for seconds), and a decryptor with
// discovery off does not look at all (an operator's broker). Bridge and
// forward mode keep to their own nodes: a wildcard would also bring every
// other device's config, some larger than the packets they accept (which
// some brokers answer by closing the connection).
//
// A config of the other style is moved the way Home Assistant documents:
// {"migrate_discovery": true} on the old topic (Home Assistant unloads its
// entities and keeps them in the registry), an empty payload that deletes
// the old retained message (not on a device topic: see publishSwitched),
// then the new config. With discovery off, old configs are deleted.

// probeWait is how long the retained configs get to arrive.
const probeWait = 500 * time.Millisecond

var migratePayload = []byte(`{"migrate_discovery":true}`)

// ourOrigin is in every config smartybridge publishes (discovery.origin).
var ourOrigin = []byte(`"origin":{"name":"smartybridge"`)

// maxFound bounds the config topics kept, and maxProbes the nodes probed
// (a decryptor of many meters).
const (
	maxFound  = 100000
	maxProbes = 10000
)

// switcher finds and moves an instance's discovery of another style; the
// Bridge and the Forwarder each have one.
type switcher struct {
	prefix  string // Home Assistant's discovery prefix
	style   discovery.Style
	log     *slog.Logger
	conn    func() *conn                                                 // nil until connected
	send    func(ctx context.Context, topic string, payload []byte) bool // QoS 1, retained
	trigger func()                                                       // nodes became ready; may be nil

	mu       sync.Mutex
	found    map[string]map[string]bool // node → topics holding one of our configs
	nFound   int
	full     bool                     // maxFound reached (logged once)
	probes   map[string]chan struct{} // per node, closed when its probe had its time
	wildcard bool                     // one look at every node per connection (lookAtAll)
	off      bool                     // no probes (disable)
	synced   chan struct{}            // wildcard: closed once the first look had its time
	syncOnce sync.Once
	ctx      context.Context // ends with the instance's loops
	wg       sync.WaitGroup
}

func newSwitcher(prefix string, style discovery.Style, log *slog.Logger) *switcher {
	return &switcher{prefix: prefix, style: style, log: log, found: map[string]map[string]bool{},
		probes: map[string]chan struct{}{}, synced: make(chan struct{})}
}

// begin sets the context the probes run in.
func (s *switcher) begin(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
}

// lookAtAll makes the switcher look at every node with one subscription
// per connection (decrypt mode); disable makes it not look at all.
func (s *switcher) lookAtAll() {
	s.mu.Lock()
	s.wildcard = true
	s.mu.Unlock()
}

func (s *switcher) disable() {
	s.mu.Lock()
	s.off = true
	s.mu.Unlock()
}

// filters are the discovery topics of node ("+": every node).
func (s *switcher) filters(node string) []paho.SubscribeOptions {
	nodeFilter := s.prefix + "/%s/" + node + "/+/config"
	return []paho.SubscribeOptions{
		{Topic: s.prefix + "/device/" + node + "/config", QoS: 1},
		{Topic: fmt.Sprintf(nodeFilter, "sensor"), QoS: 1},
		{Topic: fmt.Sprintf(nodeFilter, "binary_sensor"), QoS: 1},
		{Topic: fmt.Sprintf(nodeFilter, "number"), QoS: 1}, // the reference power's settings
	}
}

// subscribe subscribes to filters and, when wait, lets the retained
// configs arrive.
func (s *switcher) subscribe(ctx context.Context, filters []paho.SubscribeOptions, wait bool) {
	c := s.conn()
	if c == nil {
		return
	}
	c.awaitConnection(ctx, 10*time.Second)
	if err := c.subscribeWith(ctx, filters); err != nil {
		s.log.Debug("cannot look for discovery of another style", "filter", filters[0].Topic, "err", err)
		return
	}
	if wait {
		select {
		case <-time.After(probeWait):
		case <-ctx.Done():
		}
	}
}

// look runs after every connection: with the wildcard it subscribes again
// (the broker may be another node) and, the first time, lets the retained
// configs arrive before nodes are announced.
func (s *switcher) look() {
	s.mu.Lock()
	ctx, wildcard := s.ctx, s.wildcard
	s.mu.Unlock()
	if !wildcard || ctx == nil || ctx.Err() != nil {
		return
	}
	first := !s.ready("")
	s.wg.Go(func() {
		s.subscribe(ctx, s.filters("+"), first)
		if first {
			s.syncOnce.Do(func() { close(s.synced) })
			if s.trigger != nil {
				s.trigger()
			}
		}
	})
}

// add registers node as not yet ready, so that it is not announced before
// its probe, and returns what starts the probe: the caller may hold its
// own locks while registering. With the wildcard (or none) it does nothing.
func (s *switcher) add(node string) (start func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.probes[node]; ok || s.wildcard || s.off || len(s.probes) >= maxProbes {
		return func() {}
	}
	done := make(chan struct{})
	s.probes[node] = done
	ctx := s.ctx
	return func() {
		s.wg.Go(func() {
			if ctx != nil {
				s.subscribe(ctx, s.filters(node), true)
			}
			close(done)
			if s.trigger != nil {
				s.trigger()
			}
		})
	}
}

// gate is closed once node may be announced; nil when it need not wait.
func (s *switcher) gate(node string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wildcard {
		return s.synced
	}
	return s.probes[node]
}

// ready reports whether node may be announced.
func (s *switcher) ready(node string) bool {
	g := s.gate(node)
	if g == nil {
		return true
	}
	select {
	case <-g:
		return true
	default:
		return false
	}
}

// waitReady waits until node may be announced (or ctx ends).
func (s *switcher) waitReady(ctx context.Context, node string) {
	if g := s.gate(node); g != nil {
		select {
		case <-g:
		case <-ctx.Done():
		}
	}
}

// wait waits for the looks to end.
func (s *switcher) wait() { s.wg.Wait() }

// message takes a config (or its deletion) on a discovery topic. Called
// with any message; it reports whether it was one.
func (s *switcher) message(topic string, payload []byte) bool {
	dp := s.prefix + "/"
	if !strings.HasPrefix(topic, dp) || !strings.HasSuffix(topic, "/config") {
		return false
	}
	parts := strings.Split(strings.TrimPrefix(topic, dp), "/")
	var node string
	switch {
	case len(parts) == 3 && parts[0] == "device":
		node = parts[1]
	case len(parts) == 4 && (parts[0] == "sensor" || parts[0] == "binary_sensor" || parts[0] == "number"):
		node = parts[1]
	default:
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	topics := s.found[node]
	if len(payload) == 0 || bytes.Equal(payload, migratePayload) || !bytes.Contains(payload, ourOrigin) {
		// Deleted, moved, or not ours.
		if topics[topic] {
			delete(topics, topic)
			s.nFound--
			if len(topics) == 0 {
				delete(s.found, node)
			}
		}
		return true
	}
	if topics[topic] {
		return true
	}
	if s.nFound >= maxFound {
		if !s.full {
			s.full = true
			s.log.Warn("too many discovery configs on the broker to keep track of; configs of another style beyond them are not moved", "kept", maxFound)
		}
		return true
	}
	if topics == nil {
		topics = map[string]bool{}
		s.found[node] = topics
	}
	topics[topic] = true
	s.nFound++
	return true
}

// probed reports whether node may be announced, and the topics of another
// style found for it: those holding a config of ours not among msgs.
func (s *switcher) probed(node string, msgs []discovery.Message) (ready bool, stale []string) {
	if !s.ready(node) {
		return false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	topics := s.found[node]
	if len(topics) == 0 {
		return true, nil
	}
	current := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		current[m.Topic] = true
	}
	for t := range topics {
		if !current[t] {
			stale = append(stale, t)
		}
	}
	sort.Strings(stale)
	return true, stale
}

// publish publishes msgs, moving the configs of stale topics to them (or
// deleting them, when msgs is empty: discovery is off). Home Assistant
// unloads a moved entity on {"migrate_discovery": true} and keeps it in its
// registry; the empty payload then deletes the retained old config while
// nothing is loaded from it (after the new config it would reach the moved
// entity, which shares its discovery id, and Home Assistant would warn of a
// conflict); the new config loads the entity again, with its id, history
// and settings. A failed move is kept for the next announcement.
func (s *switcher) publish(ctx context.Context, node string, msgs []discovery.Message, stale []string) bool {
	if len(stale) > 0 {
		s.log.Info("moving discovery from another style", "node", node, "topics", len(stale), "discovery", s.style)
	}
	ok := s.move(ctx, stale, len(msgs) > 0)
	for _, msg := range msgs {
		ok = ok && s.send(ctx, msg.Topic, msg.Payload)
	}
	return ok
}

func (s *switcher) move(ctx context.Context, stale []string, moving bool) bool {
	for _, t := range stale {
		if moving && !s.send(ctx, t, migratePayload) {
			return false
		}
		// An old device topic keeps the migrate request: emptied after a
		// move, Home Assistant finds no component left to clean up and
		// warns. It holds no config.
		if moving && strings.HasPrefix(t, s.prefix+"/device/") {
			continue
		}
		if !s.send(ctx, t, nil) {
			return false
		}
	}
	return true
}
