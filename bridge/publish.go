package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/p1"
)

// handle publishes one telegram; it reports whether the broker connection
// took every state.
func (b *Bridge) handle(ctx context.Context, tg *p1.Telegram, from p1.Origin) bool {
	id := b.meterID(tg, from)
	now := time.Now()
	b.lastValid.Store(now.UnixNano())
	b.warnedQuiet.Store(false)
	clear(b.streak)

	b.mu.Lock()
	m := b.meters[id]
	if m == nil {
		m = &meter{id: id, device: discovery.Device{ID: id, Header: string(tg.Header)}, known: map[p1.OBIS]int{},
			topics: map[p1.OBIS]string{}, last: map[p1.OBIS]float64{}, lastAt: map[p1.OBIS]time.Time{}, down: map[p1.OBIS]downStreak{},
			texts: map[p1.OBIS]string{}, authentic: from.Encrypted}
		b.meters[id] = m
		b.log.Info("reading meter", "meter", id, "header", string(tg.Header))
		defer b.sw.add(id)() // registered now, started after b.mu is released
	}
	if m.quarterTopics == nil {
		m.quarterTopics = newQuarterTopics(b.o.TopicPrefix, id)
	}
	if m.learn(tg) {
		m.dirty = true
		b.trigger()
	}
	wasOnline := m.online
	m.online, m.seen = true, now
	m.telegrams++
	b.mu.Unlock()

	if b.implausible(m, tg, now) {
		b.lastWrite.gen, b.lastWrite.ping = 0, 0
		return true // dropped: nothing to send again
	}
	m.quarter, m.quarterOK = b.quarters.add(id, tg, now, b.log)
	ok := b.publishStates(ctx, m, id, tg, !wasOnline, false)
	b.counts.telegrams.Add(1)
	if ok && b.o.OnTelegram != nil {
		b.o.OnTelegram(id, tg)
	}
	return ok
}

// learn adds the telegram's new objects to the meter's sensors and reports
// whether there were any. Called with b.mu held.
func (m *meter) learn(tg *p1.Telegram) bool {
	fresh := false
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if _, ok := m.known[o.OBIS]; !ok && !o.Unused() {
			fresh = true
			break
		}
	}
	if !fresh {
		return false
	}
	for _, s := range discovery.Sensors(tg) {
		if _, ok := m.known[s.OBIS]; !ok {
			m.known[s.OBIS] = len(m.sensors)
			m.sensors = append(m.sensors, s)
		}
	}
	return true
}

// meterID names the meter of a telegram: its printed number, else the
// system title, else the identification line; safe for MQTT topics.
func (b *Bridge) meterID(tg *p1.Telegram, from p1.Origin) string {
	raw := tg.MeterID()
	if len(raw) == 0 {
		if from.Encrypted {
			return decrypt.Title(from.SystemTitle).String()
		}
		raw = tg.Header
	}
	if bytes.Equal(raw, b.lastRaw) {
		return b.lastID
	}
	b.lastRaw = append(b.lastRaw[:0], raw...)
	b.lastID = TopicSafe(string(raw))
	return b.lastID
}

// publishStates publishes the state of every object of tg in one write
// (batch.go).
//
// A meter that was offline is announced "online" first, in the same write:
// waiting for a QoS 1 acknowledgement here would hold up every meter behind
// it (a decryptor serving a thousand meters), and availability is
// published again after every reconnection anyway.
//
// resend: a held telegram (hold.go) whose totals were checked when it was
// read; later ones have moved the meter's last totals on since.
func (b *Bridge) publishStates(ctx context.Context, m *meter, id string, tg *p1.Telegram, announce, resend bool) bool {
	b.pending = b.pending[:0]
	now := time.Now()
	for i := range tg.Objects {
		o := &tg.Objects[i]
		if o.Unused() || !resend && !b.monotonic(m, o, now) {
			continue
		}
		if _, ok := m.topics[o.OBIS]; !ok {
			m.topics[o.OBIS] = discovery.StateTopic(b.o.TopicPrefix, id, o.OBIS)
		}
		b.pending = append(b.pending, i)
	}
	availTopic := discovery.AvailabilityTopic(b.o.TopicPrefix, id)
	b.lastWrite.gen, b.lastWrite.ping = 0, 0
	if !b.pub.isUp() || b.holdBack {
		return false // held (bridge mode) or sent again by the forwarder (decrypt mode)
	}
	b.packets = b.packets[:0]
	if announce {
		b.packets = appendPublish(b.packets, availTopic, []byte("online"), true)
	}
	for _, i := range b.pending {
		o := &tg.Objects[i]
		b.stateBuf = AppendState(b.stateBuf[:0], o)
		b.packets = appendPublish(b.packets, m.topics[o.OBIS], b.stateBuf, true)
		if topic, attrs := b.textAttributes(m, id, o); attrs != nil {
			b.packets = appendPublish(b.packets, topic, attrs, true)
		}
	}
	if m.quarterOK && !resend {
		gen := b.connGen.Load()
		full := m.quarterSent.gen != gen || m.quarterSent.version != m.quarter.version
		b.packets, b.stateBuf = appendQuarter(b.packets, b.stateBuf, m.quarterTopics, &m.quarter, full)
		m.quarterSent.gen, m.quarterSent.version = gen, m.quarter.version
	}
	gen, ping, sent, err := b.pub.writeBatch(b.packets)
	if sent && err == nil {
		b.counts.states.Add(int64(len(b.pending)))
		b.lastWrite.gen, b.lastWrite.ping = gen, ping
		return true
	}
	// No connection after all, or it broke: paho notices and reconnects.
	clear(m.texts)
	b.counts.dropped.Add(int64(len(b.pending)))
	b.log.Debug("states not sent", "err", err)
	return false
}

// textAttributes returns, for a message whose text changed, its attributes
// topic and {"text": the whole text}; nil otherwise. Reading goroutine.
func (b *Bridge) textAttributes(m *meter, id string, o *p1.Object) (string, []byte) {
	more := discovery.MoreValues(o)
	if !discovery.LongText(o.OBIS) && !more {
		return "", nil
	}
	if gen := b.connGen.Load(); m.textsGen != gen {
		clear(m.texts) // a new connection: the broker may have lost them
		m.textsGen = gen
	}
	if more {
		b.stateBuf = b.stateBuf[:0]
		for _, v := range o.Values {
			b.stateBuf = append(append(append(append(b.stateBuf, v.Text...), '*'), v.Unit...), '|')
		}
	} else {
		b.stateBuf = AppendFullText(b.stateBuf[:0], o)
	}
	if last, ok := m.texts[o.OBIS]; ok && last == string(b.stateBuf) {
		return "", nil
	}
	text := string(b.stateBuf)
	if len(m.texts) >= 64 {
		clear(m.texts) // a bound; a meter has six message objects
	}
	m.texts[o.OBIS] = text
	if more {
		values := make([]string, len(o.Values))
		for i, v := range o.Values {
			values[i] = strings.TrimSpace(string(v.Text) + " " + string(v.Unit))
		}
		attrs, _ := json.Marshal(map[string][]string{"values": values})
		return discovery.AttributesTopic(b.o.TopicPrefix, id, o.OBIS), attrs
	}
	attrs, _ := json.Marshal(map[string]string{"text": text})
	return discovery.AttributesTopic(b.o.TopicPrefix, id, o.OBIS), attrs
}

// send publishes and counts a failure; it reports success.
func (b *Bridge) send(ctx context.Context, topic string, payload []byte, qos byte) bool {
	if err := b.pub.publish(ctx, topic, payload, qos, true); err != nil {
		b.counts.dropped.Add(1)
		b.log.Debug("not published", "topic", topic, "err", err)
		return false
	}
	return true
}

// trigger asks the announcer to publish what is dirty.
func (b *Bridge) trigger() {
	select {
	case b.announce <- struct{}{}:
	default:
	}
}

// markAll marks every meter's discovery and availability for publishing.
func (b *Bridge) markAll() {
	b.mu.Lock()
	for _, m := range b.meters {
		m.dirty, m.avail = true, true
	}
	b.mu.Unlock()
	b.selfDirty.Store(true)
	b.trigger()
}

// markStale marks, after a (re)connection, the meters whose discovery went
// out on an earlier connection: the broker may have lost it. A meter first
// seen on this connection is announced once, not twice.
func (b *Bridge) markStale() {
	b.selfDirty.Store(true)
	b.mu.Lock()
	gen := b.connGen.Load()
	for _, m := range b.meters {
		if m.announcedGen != gen {
			m.dirty, m.avail = true, true
		}
	}
	b.mu.Unlock()
	b.trigger()
}
