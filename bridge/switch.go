package bridge

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/discovery"
)

// Switching SMARTY_DISCOVERY between device, entity and off would leave the
// other style's retained configs behind: Home Assistant would then see two
// configs with the same unique ids. Before a node (a meter, or the
// instance's own device) is first announced, the bridge subscribes to its
// discovery topics of both styles and waits a moment for the broker's
// retained messages. A config of the other style is moved the way Home
// Assistant documents: {"migrate_discovery": true} on the old topic (Home
// Assistant unloads its entities and keeps them in the registry), an empty
// payload that deletes the old retained message (not on a device topic:
// see publishSwitched), then the new config. With discovery off, old
// configs are deleted.

// probeWait is how long the retained configs of a node get to arrive.
const probeWait = 500 * time.Millisecond

var migratePayload = []byte(`{"migrate_discovery":true}`)

// maxProbes bounds the nodes probed (a decryptor of many meters).
const maxProbes = 10000

// probe is what was found of a node's earlier discovery.
type probe struct {
	done  chan struct{}   // closed when the retained configs had their time
	stale map[string]bool // topics of another style holding a config
}

func (p *probe) ready() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// switcher finds and moves an instance's discovery of another style; the
// Bridge and the Forwarder each have one.
type switcher struct {
	prefix  string // Home Assistant's discovery prefix
	style   discovery.Style
	log     *slog.Logger
	conn    func() *conn                                                 // nil until connected
	send    func(ctx context.Context, topic string, payload []byte) bool // QoS 1, retained
	trigger func()                                                       // a node became ready; may be nil

	mu     sync.Mutex
	probes map[string]*probe
	ctx    context.Context // ends with the instance's loops
	wg     sync.WaitGroup
}

func newSwitcher(prefix string, style discovery.Style, log *slog.Logger) *switcher {
	return &switcher{prefix: prefix, style: style, log: log, probes: map[string]*probe{}}
}

// begin sets the context the probes run in.
func (s *switcher) begin(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
}

// add registers node as not yet ready, so that it is not announced before
// its probe, and returns what starts the probe: the caller may hold its
// own locks while registering.
func (s *switcher) add(node string) (start func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.probes[node]; ok || len(s.probes) >= maxProbes {
		return func() {}
	}
	p := &probe{done: make(chan struct{}), stale: map[string]bool{}}
	s.probes[node] = p
	ctx := s.ctx
	return func() { s.wg.Go(func() { s.run(ctx, node, p) }) }
}

// run subscribes and waits for the retained configs.
func (s *switcher) run(ctx context.Context, node string, p *probe) {
	if c := s.conn(); ctx != nil && c != nil {
		c.awaitConnection(ctx, 10*time.Second)
		subs := []paho.SubscribeOptions{
			{Topic: s.prefix + "/device/" + node + "/config", QoS: 1},
			{Topic: s.prefix + "/sensor/" + node + "/+/config", QoS: 1},
			{Topic: s.prefix + "/binary_sensor/" + node + "/+/config", QoS: 1},
			{Topic: s.prefix + "/number/" + node + "/+/config", QoS: 1}, // the reference power's settings
		}
		if err := c.subscribeWith(ctx, subs); err == nil {
			select {
			case <-time.After(probeWait):
			case <-ctx.Done():
			}
		} else {
			s.log.Debug("cannot look for discovery of another style", "node", node, "err", err)
		}
	}
	close(p.done)
	if s.trigger != nil {
		s.trigger()
	}
}

// waitReady waits until node's probe is done (or ctx ends).
func (s *switcher) waitReady(ctx context.Context, node string) {
	s.mu.Lock()
	p, ok := s.probes[node]
	s.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-p.done:
	case <-ctx.Done():
	}
}

// wait waits for the probes to end.
func (s *switcher) wait() { s.wg.Wait() }

// message takes a retained config found on a probed node's topic. Called
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
	if len(payload) == 0 || bytes.Equal(payload, migratePayload) {
		return true
	}
	s.mu.Lock()
	if p, ok := s.probes[node]; ok && len(p.stale) < 512 {
		p.stale[topic] = true
	}
	s.mu.Unlock()
	return true
}

// probed reports whether node may be announced, and takes the topics of
// another style found for it: those not among msgs.
func (s *switcher) probed(node string, msgs []discovery.Message) (ready bool, stale []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.probes[node]
	if !ok {
		return true, nil
	}
	if !p.ready() {
		return false, nil
	}
	current := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		current[m.Topic] = true
	}
	for t := range p.stale {
		if !current[t] {
			stale = append(stale, t)
		}
	}
	clear(p.stale)
	return true, stale
}

// restale puts back stale topics whose move failed.
func (s *switcher) restale(node string, stale []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.probes[node]; ok {
		for _, t := range stale {
			p.stale[t] = true
		}
	}
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
	if !ok {
		s.restale(node, stale)
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
