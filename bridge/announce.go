package bridge

import (
	"context"
	"sort"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
)

// announcer publishes discovery and availability when asked.
func (b *Bridge) announcer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.announce:
			b.announceDirty(ctx)
		}
	}
}

type outgoing struct {
	meter   *meter
	msgs    []discovery.Message
	stale   []string // configs of another style to move (switch.go)
	avail   string   // "online"/"offline" to publish, or ""
	availTo string
}

// announceDirty publishes the discovery of every meter whose sensors
// changed, or of all after a reconnection or Home Assistant's restart.
func (b *Bridge) announceDirty(ctx context.Context) {
	if !b.conn.up.Load() || b.connGen.Load() == 0 {
		return // connected() marks everything again
	}
	var out []outgoing
	if b.report != nil && b.selfDirty.Swap(false) {
		// The instance's own device first: meter devices link to it.
		node := discovery.BridgeNode(b.o.MQTT.ClientID)
		msgs := b.selfDiscovery()
		ready, stale := b.sw.probed(node, msgs)
		if !ready || !b.sw.publish(ctx, node, msgs, stale) {
			b.selfDirty.Store(true)
		}
	}
	b.mu.Lock()
	ids := make([]string, 0, len(b.meters))
	for id := range b.meters {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := b.meters[id]
		o := outgoing{meter: m}
		if m.dirty {
			msgs := b.discoveryMessages(m)
			if ready, stale := b.sw.probed(id, msgs); ready {
				o.msgs, o.stale = msgs, stale
				m.dirty, m.announcedGen = false, b.connGen.Load()
			}
		}
		if m.avail {
			o.avail, o.availTo = availability(m.online), discovery.AvailabilityTopic(b.o.TopicPrefix, id)
			m.avail = false
		}
		out = append(out, o)
	}
	b.mu.Unlock()

	for _, o := range out {
		// Availability first, so that entities come up available.
		if o.avail != "" && !b.send(ctx, o.availTo, []byte(o.avail), 1) {
			b.remark(o.meter, false, true)
		}
		if (len(o.msgs) > 0 || len(o.stale) > 0) && !b.sw.publish(ctx, o.meter.id, o.msgs, o.stale) {
			b.remark(o.meter, true, false)
			continue
		}
		b.counts.announcements.Add(int64(len(o.msgs)))
		if len(o.msgs) > 0 {
			b.log.Info("discovery sent", "meter", o.meter.id, "messages", len(o.msgs))
		}
	}
}

func (b *Bridge) remark(m *meter, dirty, avail bool) {
	b.mu.Lock()
	m.dirty = m.dirty || dirty
	m.avail = m.avail || avail
	b.mu.Unlock()
}

func availability(online bool) string {
	if online {
		return "online"
	}
	return "offline"
}

// discoveryMessages builds a meter's discovery. Called with b.mu held.
func (b *Bridge) discoveryMessages(m *meter) []discovery.Message {
	opts := b.discoveryOptions(m.id)
	switch b.o.Discovery {
	case discovery.DeviceStyle:
		return []discovery.Message{discovery.DeviceConfig(m.device, m.sensors, opts)}
	case discovery.EntityStyle:
		return discovery.EntityConfigs(m.device, m.sensors, opts)
	}
	return nil
}

// watchdog marks meters offline when they fall silent and warns when bytes
// arrive that never make a telegram.
func (b *Bridge) watchdog(ctx context.Context) {
	tick := min(time.Second, b.o.MeterTimeout/4)
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	var bytesAt int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			b.checkMeters(ctx, now)
			if n := b.bytesIn.Load(); n > bytesAt && now.Sub(start) > b.o.NoFrameWarning {
				b.checkQuiet(now)
				bytesAt = n
			}
		}
	}
}

func (b *Bridge) checkMeters(ctx context.Context, now time.Time) {
	var gone []*meter
	b.mu.Lock()
	for _, m := range b.meters {
		if m.online && now.Sub(m.seen) > b.o.MeterTimeout {
			m.online = false
			gone = append(gone, m)
		}
	}
	b.mu.Unlock()
	for _, m := range gone {
		b.log.Warn("no valid telegram from the meter; marking it offline", "meter", m.id, "silent_for", b.o.MeterTimeout)
		if !b.send(ctx, discovery.AvailabilityTopic(b.o.TopicPrefix, m.id), []byte("offline"), 1) {
			b.remark(m, false, true)
		}
	}
}

// checkQuiet warns once when bytes keep arriving but no telegram decoded
// for NoFrameWarning, with the likeliest cause.
func (b *Bridge) checkQuiet(now time.Time) {
	last := time.Unix(0, b.lastValid.Load())
	if b.lastValid.Load() != 0 && now.Sub(last) < b.o.NoFrameWarning || b.warnedQuiet.Load() {
		return
	}
	if b.bytesIn.Load() == 0 && (b.report == nil || b.report.mode != discovery.ModeDecrypt) {
		return // not one byte: the port says so itself (p1/port)
	}
	b.warnedQuiet.Store(true)
	b.counts.quiet.Add(1)
	reason := telegrams.Reason(b.lastReason.Load())
	hint := "bytes arrive on the port but form no frame: check the speed (SMARTY_BAUD=115200 for Smarty), that the cable inverts the signal (an FTDI P1 cable does; a plain USB-serial adapter does not), and that SMARTY_DEVICE is the meter's port"
	switch reason {
	case telegrams.Authentication:
		hint = "frames arrive but fail authentication: check SMARTY_KEY (the key of this meter, from the grid operator)"
	case telegrams.NoKey:
		hint = "encrypted frames arrive but no key is configured for the meter: set SMARTY_KEY"
	case telegrams.CRC, telegrams.Malformed:
		hint = "telegrams arrive damaged: check the cable and its connection"
	}
	b.log.Warn("no valid telegram for a while", "for", b.o.NoFrameWarning, "bytes_received", b.bytesIn.Load(), "hint", hint)
}

// stop publishes, at a clean stop, the discovery still pending (a capture
// file ends fast) and "offline" for every meter (part).
func (b *Bridge) stop(ctx context.Context) {
	b.announceDirty(ctx)
	b.mu.Lock()
	ids := make([]string, 0, len(b.meters))
	for id := range b.meters {
		ids = append(ids, id)
	}
	b.mu.Unlock()
	for _, id := range ids {
		b.send(ctx, discovery.AvailabilityTopic(b.o.TopicPrefix, id), []byte("offline"), 1)
	}
	if b.o.Ephemeral {
		b.forgetMeters(ctx)
	}
}

// forgetMeters deletes what was retained of every meter: its discovery,
// states, attributes, availability and reference power topics. The
// reading goroutine has ended: its maps are this goroutine's.
func (b *Bridge) forgetMeters(ctx context.Context) {
	b.mu.Lock()
	meters := make([]*meter, 0, len(b.meters))
	for _, m := range b.meters {
		meters = append(meters, m)
	}
	b.mu.Unlock()
	for _, m := range meters {
		b.forget(ctx, b.discoveryMessages(m), nil)
		topics := []string{discovery.AvailabilityTopic(b.o.TopicPrefix, m.id)}
		for code, t := range m.topics {
			// Deleting attributes an object never had costs nothing.
			topics = append(topics, t, discovery.AttributesTopic(b.o.TopicPrefix, m.id, code))
		}
		if q := m.quarterTopics; q != nil {
			topics = append(topics, q.all()...)
		}
		for _, t := range topics {
			_ = b.pub.publish(ctx, t, nil, 1, true) // best effort
		}
	}
	b.log.Info("deleted what the demo published", "meters", len(meters))
}

// logStopped says what the run did.
func (b *Bridge) logStopped() {
	s := b.Stats()
	b.log.Info("stopped", "telegrams", s.Telegrams, "states", s.States, "dropped", s.Dropped,
		"auth_failures", s.Rejected[telegrams.Authentication], "crc_errors", s.Rejected[telegrams.CRC], "malformed", s.Rejected[telegrams.Malformed],
		"resent", s.Resent, "lost", s.Lost)
}
