package bridge

import (
	"bytes"
	"context"
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
// configs with the same unique ids. On every connection the switcher
// subscribes once to the discovery topics of both styles, for every node
// (one wildcard subscription, not one per meter: on a clustered broker a
// SUBSCRIBE costs a consensus round), and keeps the topics that hold a
// config of smartybridge (its origin). Nodes are announced once those
// retained messages had a moment to arrive. A config of the other style is
// moved the way Home Assistant documents: {"migrate_discovery": true} on
// the old topic (Home Assistant unloads its entities and keeps them in the
// registry), an empty payload that deletes the old retained message (not
// on a device topic: see publishSwitched), then the new config. With
// discovery off, old configs are deleted; a decryptor with discovery off
// does not look at all (an operator's broker, no Home Assistant).

// probeWait is how long the retained configs get to arrive.
const probeWait = 500 * time.Millisecond

var migratePayload = []byte(`{"migrate_discovery":true}`)

// ourOrigin is in every config smartybridge publishes (discovery.origin).
var ourOrigin = []byte(`"origin":{"name":"smartybridge"`)

// maxFound bounds the config topics kept (a decryptor of many meters).
const maxFound = 100000

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
	full     bool          // maxFound reached (logged once)
	off      bool          // no looking (disable)
	synced   chan struct{} // closed once the first look had its time
	syncOnce sync.Once
	ctx      context.Context // ends with the instance's loops
	wg       sync.WaitGroup
}

func newSwitcher(prefix string, style discovery.Style, log *slog.Logger) *switcher {
	return &switcher{prefix: prefix, style: style, log: log, found: map[string]map[string]bool{}, synced: make(chan struct{})}
}

// begin sets the context the looks run in.
func (s *switcher) begin(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
}

// disable makes every node ready without looking.
func (s *switcher) disable() {
	s.mu.Lock()
	s.off = true
	s.mu.Unlock()
	s.markSynced()
}

func (s *switcher) markSynced() {
	s.syncOnce.Do(func() { close(s.synced) })
}

func (s *switcher) ready() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

// look subscribes to the discovery topics of every node (again after a
// reconnection: the broker may be another one) and, the first time, lets
// the retained configs arrive before nodes are announced.
func (s *switcher) look() {
	s.mu.Lock()
	ctx, off := s.ctx, s.off
	s.mu.Unlock()
	if off || ctx == nil || ctx.Err() != nil {
		return
	}
	first := !s.ready()
	s.wg.Go(func() {
		if c := s.conn(); c != nil {
			subs := []paho.SubscribeOptions{
				{Topic: s.prefix + "/device/+/config", QoS: 1},
				{Topic: s.prefix + "/sensor/+/+/config", QoS: 1},
				{Topic: s.prefix + "/binary_sensor/+/+/config", QoS: 1},
				{Topic: s.prefix + "/number/+/+/config", QoS: 1}, // the reference power's settings
			}
			if err := c.subscribeWith(ctx, subs); err != nil {
				s.log.Debug("cannot look for discovery of another style", "err", err)
			} else if first {
				select {
				case <-time.After(probeWait):
				case <-ctx.Done():
				}
			}
		}
		if first {
			s.markSynced()
			if s.trigger != nil {
				s.trigger()
			}
		}
	})
}

// waitReady waits until nodes may be announced (or ctx ends).
func (s *switcher) waitReady(ctx context.Context) {
	select {
	case <-s.synced:
	case <-ctx.Done():
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
	if !s.ready() {
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
