package bridge

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
)

// node is what every mode shares: the broker connection and its life, the
// instance's status topic with its Last Will, Home Assistant's status, the
// discovery-style switcher (switch.go), the reporter of the instance's own
// device (report.go) and the clean "offline" at the end. A mode plugs into
// it as a part.
type node struct {
	o           Options // defaults set (Options.withDefaults)
	log         *slog.Logger
	statusTopic string
	conn        *conn
	pub         publisher     // conn, or a test's recorder
	ready       chan struct{} // closed once conn is set
	connGen     atomic.Int64  // counts connections
	subscribed  atomic.Int64  // connections whose subscriptions are in place
	report      *reporter     // nil until the mode runs
	sw          *switcher
	part        part
}

// part is a mode's share of the node's connection.
type part interface {
	// connected runs after every (re)connection, once the status says
	// "online" and Home Assistant's status is subscribed.
	connected(ctx context.Context)
	// message takes what the broker sends for the mode.
	message(topic string, payload []byte)
	// homeAssistantOnline: Home Assistant (re)started and needs discovery
	// again.
	homeAssistantOnline(ctx context.Context)
	// stop publishes what the mode says at a clean stop (its meters
	// "offline"), while the connection is still up.
	stop(ctx context.Context)
}

// Defaults of Options, set once for every mode.
const (
	defaultMeterTimeout    = time.Minute
	defaultNoFrameWarning  = time.Minute
	defaultTopicPrefix     = "smarty"
	defaultDiscoveryPrefix = "homeassistant"
)

// withDefaults returns o with its zero values replaced by the defaults.
func (o Options) withDefaults() Options {
	if o.MeterTimeout <= 0 {
		o.MeterTimeout = defaultMeterTimeout
	}
	if o.NoFrameWarning <= 0 {
		o.NoFrameWarning = defaultNoFrameWarning
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = saveEvery
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = defaultTopicPrefix
	}
	if o.DiscoveryPrefix == "" {
		o.DiscoveryPrefix = defaultDiscoveryPrefix
	}
	if o.Discovery == "" {
		o.Discovery = discovery.DeviceStyle
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

func newNode(o Options) *node {
	o = o.withDefaults()
	n := &node{o: o, log: o.Log, statusTopic: o.TopicPrefix + "/status/" + o.MQTT.ClientID, ready: make(chan struct{}),
		sw: newSwitcher(o.DiscoveryPrefix, o.Discovery, o.Log)}
	n.sw.conn = func() *conn { return n.conn }
	n.sw.send = func(ctx context.Context, topic string, payload []byte) bool {
		return n.pub.publish(ctx, topic, payload, 1, true) == nil
	}
	return n
}

// run connects, starts the reporter, the switcher's probe of the own
// device and the mode's loops, runs body until it returns, then says
// "offline" (the mode's, then the instance's) and disconnects cleanly.
func (n *node) run(ctx context.Context, co connectOptions, p part, loops []func(context.Context), body func(context.Context) error) error {
	// The connection outlives ctx so that "offline" can still be sent.
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	n.part = p
	co.statusTopic = n.statusTopic
	// A telegram published between "up" and a new generation would
	// count as the old connection's: its message attributes went out
	// twice (publish.go, textAttributes).
	co.beforeUp = func() { n.connGen.Add(1) }
	co.onUp = func() {
		if n.report != nil {
			n.report.again()
		}
		go n.connected(connCtx)
	}
	co.onMessage = func(topic string, payload []byte) { n.message(connCtx, topic, payload) }

	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	n.sw.begin(loopCtx)
	// The own device is announced after its discovery topics were probed
	// (switch.go); registered before the first connection announces it.
	startProbe := n.sw.add(discovery.BridgeNode(n.o.MQTT.ClientID))
	c, err := dial(connCtx, n.o.MQTT, co, n.log)
	if err != nil {
		return err
	}
	n.conn, n.pub = c, c
	close(n.ready)
	startProbe()

	var wg sync.WaitGroup
	if n.report != nil {
		wg.Go(func() { n.report.run(loopCtx) })
	}
	for _, loop := range loops {
		wg.Go(func() { loop(loopCtx) })
	}
	err = body(ctx)
	stopLoops()
	wg.Wait()
	n.sw.wait()

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.up.Load() {
		p.stop(sctx)
		last := []byte("offline")
		if n.o.Ephemeral {
			last = nil // an empty retained message deletes the status
			n.forget(sctx, n.selfDiscovery(), n.report)
		}
		if err := n.pub.publish(sctx, n.statusTopic, last, 1, true); err != nil {
			n.log.Debug("offline not published; the broker sends the Last Will", "err", err)
		}
	}
	c.close(sctx)
	return err
}

// connected runs after every (re)connection: the status, Home Assistant's
// status, then the mode's subscriptions and what it publishes again (the
// broker may have lost what was retained).
func (n *node) connected(ctx context.Context) {
	<-n.ready
	if err := n.pub.publish(ctx, n.statusTopic, []byte("online"), 1, true); err != nil {
		n.log.Debug("status not published", "err", err)
	}
	n.sw.look() // configs of another style (switch.go)
	if n.o.Discovery != discovery.Off {
		if err := n.conn.subscribe(ctx, n.o.DiscoveryPrefix+"/status"); err != nil {
			n.log.Warn("cannot subscribe to Home Assistant's status; discovery is still sent on every connection", "err", err)
		}
	}
	n.part.connected(ctx)
	n.subscribed.Add(1)
}

// message routes what the broker sends: the switcher's probes, Home
// Assistant's birth message, else the mode's.
func (n *node) message(ctx context.Context, topic string, payload []byte) {
	if n.sw.message(topic, payload) {
		return
	}
	if topic == n.o.DiscoveryPrefix+"/status" {
		if string(payload) == "online" {
			n.log.Info("Home Assistant came online; sending discovery again")
			n.part.homeAssistantOnline(ctx)
		}
		return
	}
	n.part.message(topic, payload)
}

// selfDiscovery is the discovery of the instance's own device.
func (n *node) selfDiscovery() []discovery.Message {
	return bridgeDiscovery(n.report, n.o.Discovery, n.discoveryOptions(""))
}

// discoveryOptions are the discovery options for meter (or, with "", for
// the instance's own device).
func (n *node) discoveryOptions(meter string) discovery.Options {
	o := discovery.Options{TopicPrefix: n.o.TopicPrefix, DiscoveryPrefix: n.o.DiscoveryPrefix,
		Version: n.o.Version, SupportURL: n.o.SupportURL}
	if meter != "" {
		o.Availability = []string{n.statusTopic, discovery.AvailabilityTopic(n.o.TopicPrefix, meter)}
		if n.report != nil {
			o.ViaDevice = discovery.BridgeID(n.o.MQTT.ClientID)
		}
	}
	return o
}

// forget deletes retained messages: the discovery msgs (an empty config
// removes the entities from Home Assistant) and the reporter's topics.
func (n *node) forget(ctx context.Context, msgs []discovery.Message, r *reporter) {
	for _, m := range msgs {
		_ = n.pub.publish(ctx, m.Topic, nil, 1, true) // best effort: the broker is going away with us
	}
	if r != nil {
		_ = n.pub.publish(ctx, r.device.DiagnosticsTopic, nil, 1, true)
		_ = n.pub.publish(ctx, r.device.ProblemTopic, nil, 1, true)
	}
}
