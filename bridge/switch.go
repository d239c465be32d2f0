package bridge

import (
	"bytes"
	"context"
	"strings"
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

// probe is what the bridge found of a node's earlier discovery.
type probe struct {
	ready bool
	stale map[string]bool // topics of another style holding a config
}

// probeNode subscribes to node's discovery topics once and marks it ready
// after probeWait (at once if the subscription fails).
func (b *Bridge) probeNode(node string) {
	b.mu.Lock()
	start := b.addProbe(node)
	b.mu.Unlock()
	start()
}

// addProbe registers node as not yet ready, so that it is not announced
// before its probe; it returns what starts the probe. Called with b.mu
// held.
func (b *Bridge) addProbe(node string) (start func()) {
	if _, ok := b.probes[node]; ok || len(b.probes) >= maxProbes {
		return func() {}
	}
	p := &probe{stale: map[string]bool{}}
	b.probes[node] = p
	ctx := b.probeCtx
	return func() { b.probing.Go(func() { b.runProbe(ctx, node, p) }) }
}

// runProbe subscribes and waits for the retained configs.
func (b *Bridge) runProbe(ctx context.Context, node string, p *probe) {
	if ctx != nil && b.conn != nil {
		b.conn.awaitConnection(ctx, 10*time.Second)
		dp := b.o.DiscoveryPrefix
		subs := []paho.SubscribeOptions{
			{Topic: dp + "/device/" + node + "/config", QoS: 1},
			{Topic: dp + "/sensor/" + node + "/+/config", QoS: 1},
			{Topic: dp + "/binary_sensor/" + node + "/+/config", QoS: 1},
		}
		if err := b.conn.subscribeWith(ctx, subs); err == nil {
			select {
			case <-time.After(probeWait):
			case <-ctx.Done():
			}
		} else {
			b.log.Debug("cannot look for discovery of another style", "node", node, "err", err)
		}
	}
	b.mu.Lock()
	p.ready = true
	b.mu.Unlock()
	b.trigger()
}

// maxProbes bounds the nodes probed (a decryptor of many meters).
const maxProbes = 10000

// probeMessage takes a retained config found on a probed node's topic.
// Called with any message; it reports whether it was one.
func (b *Bridge) probeMessage(topic string, payload []byte) bool {
	dp := b.o.DiscoveryPrefix + "/"
	if !strings.HasPrefix(topic, dp) || !strings.HasSuffix(topic, "/config") {
		return false
	}
	parts := strings.Split(strings.TrimPrefix(topic, dp), "/")
	var node string
	switch {
	case len(parts) == 3 && parts[0] == "device":
		node = parts[1]
	case len(parts) == 4 && (parts[0] == "sensor" || parts[0] == "binary_sensor"):
		node = parts[1]
	default:
		return false
	}
	if len(payload) == 0 || bytes.Equal(payload, migratePayload) {
		return true
	}
	b.mu.Lock()
	if p, ok := b.probes[node]; ok && len(p.stale) < 512 {
		p.stale[topic] = true
	}
	b.mu.Unlock()
	return true
}

// probed reports whether node may be announced, and takes the topics of
// another style found for it: those not among msgs.
func (b *Bridge) probed(node string, msgs []discovery.Message) (ready bool, stale []string) {
	p, ok := b.probes[node]
	if !ok {
		return true, nil
	}
	if !p.ready {
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
func (b *Bridge) restale(node string, stale []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.probes[node]; ok {
		for _, t := range stale {
			p.stale[t] = true
		}
	}
}

// publishSwitched publishes msgs, moving the configs of stale topics to
// them (or deleting them, when msgs is empty: discovery is off). Home
// Assistant unloads a moved entity on {"migrate_discovery": true} and keeps
// it in its registry; the empty payload then deletes the retained old
// config while nothing is loaded from it (after the new config it would
// reach the moved entity, which shares its discovery id, and Home
// Assistant would warn of a conflict); the new config loads the entity
// again, with its id, history and settings.
func (b *Bridge) publishSwitched(ctx context.Context, node string, msgs []discovery.Message, stale []string) bool {
	if len(stale) > 0 {
		b.log.Info("moving discovery from another style", "node", node, "topics", len(stale), "discovery", b.o.Discovery)
	}
	for _, t := range stale {
		moving := len(msgs) > 0
		if moving && !b.send(ctx, t, migratePayload, 1) {
			return false
		}
		// An old device topic keeps the migrate request: emptied after a
		// move, Home Assistant finds no component left to clean up and
		// warns. It holds no config.
		if moving && strings.HasPrefix(t, b.o.DiscoveryPrefix+"/device/") {
			continue
		}
		if !b.send(ctx, t, nil, 1) {
			return false
		}
	}
	for _, msg := range msgs {
		if !b.send(ctx, msg.Topic, msg.Payload, 1) {
			return false
		}
		b.counts.announcements.Add(1)
	}
	return true
}
