package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/metrics"
)

// problemWindow is how long a cause counts for the Problem sensor: 30 s,
// or the meter timeout when that is shorter.
func problemWindow(meterTimeout time.Duration) time.Duration {
	return min(30*time.Second, meterTimeout)
}

// startReport prepares the reporter of a Bridge in bridge or decrypt mode.
func (b *Bridge) startReport(mode discovery.Mode) {
	r := newReporter(mode, b.o.MQTT.ClientID, b.o.Name, b.o.TopicPrefix, b.log)
	r.words = b.o.Words
	started, window := time.Now(), problemWindow(b.o.MeterTimeout)
	var arrived changeTime
	var rate frameRate
	r.sample = func(now time.Time) (observation, diagnostics) {
		obs := observation{now: now, started: started, window: window, mode: mode, lastByte: arrived.see(b.bytesIn.Load(), now)}
		if ns := b.lastValid.Load(); ns != 0 {
			obs.lastValid = time.Unix(0, ns)
		}
		if rej := b.lastReject.Load(); rej != nil {
			obs.reject = *rej
		}
		if b.portError != nil {
			obs.portErr = b.portError()
		}
		s := b.Stats()
		v := diagnostics{
			telegrams: s.Telegrams, rejected: s.Rejected, lastTelegram: obs.lastValid,
		}
		switch mode {
		case discovery.ModeBridge:
			v.bytesSkipped = b.skipped.Load()
		case discovery.ModeDecrypt:
			v.metersServed = b.onlineMeters()
			v.framesPerMinute = rate.add(s.Telegrams)
		}
		return obs, v
	}
	r.publish = func(ctx context.Context, topic string, payload []byte) bool {
		return b.conn.up.Load() && b.pub.publish(ctx, topic, payload, 1, true) == nil
	}
	b.report = r
}

// changeTime remembers when a counter last moved.
type changeTime struct {
	n  int64
	at time.Time // zero: never
}

// see records the counter's value now and returns when it last changed.
func (c *changeTime) see(n int64, now time.Time) time.Time {
	if n != c.n {
		c.n, c.at = n, now
	}
	return c.at
}

// noteReject records a rejected frame for the Problem sensor.
func (b *Bridge) noteReject(err error, reason telegrams.Reason, title decrypt.Title, keyWorked bool) {
	b.lastReject.Store(&rejection{at: time.Now(), reason: reason, authKey: errors.Is(err, decrypt.ErrAuthKey),
		keyWorked: keyWorked, meter: title.String()})
}

// onlineMeters counts the meters whose telegrams arrive.
func (b *Bridge) onlineMeters() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, m := range b.meters {
		if m.online {
			n++
		}
	}
	return n
}

// bridgeDiscovery is the discovery of the instance's own device.
func bridgeDiscovery(r *reporter, style discovery.Style, o discovery.Options) []discovery.Message {
	if r == nil || style == discovery.Off {
		return nil
	}
	return discovery.BridgeConfig(r.device, style, o)
}

// startReport prepares the reporter of a Forwarder.
func (f *Forwarder) startReport() {
	r := newReporter(discovery.ModeForward, f.o.MQTT.ClientID, f.o.Name, f.o.TopicPrefix, f.log)
	r.words = f.o.Words
	started, window := time.Now(), problemWindow(f.o.MeterTimeout)
	var arrived changeTime
	r.sample = func(now time.Time) (observation, diagnostics) {
		obs := observation{now: now, started: started, window: window, mode: discovery.ModeForward, lastByte: arrived.see(f.bytesIn.Load(), now)}
		if ns := f.lastQueued.Load(); ns != 0 {
			obs.lastValid = time.Unix(0, ns)
		}
		if f.portError != nil {
			obs.portErr = f.portError()
		}
		f.mu.Lock()
		queued, unconfirmed := len(f.entries), f.unconfirmedLocked()
		// The queue is in the order frames were read: the first encrypted
		// entry is the oldest no decryptor confirmed.
		for _, e := range f.entries {
			if !e.plain {
				obs.oldestUnconfirmed = e.queuedAt
				break
			}
		}
		obs.lastConfirmed = f.lastAck
		f.mu.Unlock()
		return obs, diagnostics{framesForwarded: f.forwarded.Load(), bytesSkipped: f.skipped.Load(),
			framesQueued: queued, framesUnconfirmed: unconfirmed}
	}
	r.publish = func(ctx context.Context, topic string, payload []byte) bool {
		return f.conn.up.Load() && f.conn.publish(ctx, topic, payload, 1, true) == nil
	}
	f.report = r
}

// announceSelf publishes the forwarder's device discovery, moving what an
// earlier style left (switch.go).
func (f *Forwarder) announceSelf(ctx context.Context) {
	node := discovery.BridgeNode(f.o.MQTT.ClientID)
	f.sw.waitReady(ctx, node)
	msgs := f.selfDiscovery()
	if _, stale := f.sw.probed(node, msgs); !f.sw.publish(ctx, node, msgs, stale) {
		f.log.Debug("discovery not published")
	}
}

// Metrics is what the instance tells Prometheus (SMARTY_METRICS_LISTEN).
func (b *Bridge) Metrics() metrics.Snapshot {
	s := b.Stats()
	snap := metrics.Snapshot{
		Version: b.o.Version, BytesRead: b.bytesIn.Load(), StatesPublished: s.States, TelegramsResent: s.Resent, TelegramsLost: s.Lost,
		Rejected: map[string]int64{},
	}
	for _, r := range telegrams.Reasons {
		snap.Rejected[r.Metric()] = s.Rejected[r]
	}
	select {
	case <-b.ready:
		snap.Connected = b.conn.up.Load()
	default:
	}
	snap.BytesSkipped = b.skipped.Load()
	b.mu.Lock()
	for _, m := range b.meters {
		snap.Meters = append(snap.Meters, metrics.Meter{ID: m.id, Telegrams: m.telegrams, Last: m.seen})
	}
	b.mu.Unlock()
	return snap
}

// Metrics is what the forwarder tells Prometheus.
func (f *Forwarder) Metrics() metrics.Snapshot {
	snap := metrics.Snapshot{Version: f.o.Version, BytesRead: f.bytesIn.Load(), Forwarding: true,
		QueueFrames: f.Queued(), FramesForwarded: f.forwarded.Load()}
	select {
	case <-f.ready:
		snap.Connected = f.conn.up.Load()
	default:
	}
	snap.BytesSkipped = f.skipped.Load()
	return snap
}
