package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/quarter"
	"github.com/smartybridge/smartybridge/internal/statefile"
	"github.com/smartybridge/smartybridge/p1"
)

// Luxembourg's reference power (internal/quarter), per meter: every
// telegram with an import total moves the meter's quarter-hour, whose
// live values, last finished quarter and totals go out in the same write
// as the telegram's states (discovery/quarter.go names the topics). The
// household sets its reference power and overrun price from Home
// Assistant (two number entities); the values, and each meter's running
// quarter and totals, are kept in <StateDir>/quarters.json: written when a
// quarter finished or a setting changed, at most as often as the saver
// runs (SaveEvery), and at a clean stop.

// maxQuarterMeters bounds the meters whose quarters are followed.
const maxQuarterMeters = 10000

// quarterMeter is what is kept of one meter.
type quarterMeter struct {
	Tracker  quarter.Tracker  `json:"tracker"`
	Settings quarter.Settings `json:"settings"`
	// version changes whenever what is published once per quarter (the
	// last quarter, the totals, the settings) changed.
	version uint64
	// Defaults are the start-up values (SMARTY_REFERENCE_POWER,
	// SMARTY_OVERRUN_PRICE) the settings were last set from: when they
	// change, the new start-up value wins over one set in Home
	// Assistant; else the one set in Home Assistant stays.
	Defaults quarter.Settings `json:"defaults"`
}

// quarterBook holds the meters' quarters.
type quarterBook struct {
	file     string // "" keeps them in memory only
	defaults quarter.Settings

	mu      sync.Mutex
	meters  map[string]*quarterMeter
	dirty   bool
	refused bool // said that meters past maxQuarterMeters are not followed
}

func newQuarterBook(stateDir string, defaults quarter.Settings) *quarterBook {
	q := &quarterBook{defaults: defaults, meters: map[string]*quarterMeter{}}
	if stateDir != "" {
		q.file = filepath.Join(stateDir, "quarters.json")
	}
	return q
}

// load reads what an earlier run saved; a start-up value that changed
// since replaces the setting it was the default of.
func (q *quarterBook) load(log *slog.Logger) {
	if q.file == "" {
		return
	}
	m := map[string]*quarterMeter{}
	if aside, err := statefile.ReadJSON(q.file, &m); err != nil {
		log.Warn("saved quarter-hours unreadable (a power cut or a full disk?); the running quarter-hours start afresh and the reference power comes from the configuration",
			"file", q.file, "set_aside", aside, "err", err)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, qm := range m {
		if qm == nil || len(q.meters) >= maxQuarterMeters {
			continue
		}
		if qm.Defaults.ReferenceKW != q.defaults.ReferenceKW {
			qm.Settings.ReferenceKW = q.defaults.ReferenceKW
		}
		if qm.Defaults.Price != q.defaults.Price {
			qm.Settings.Price = q.defaults.Price
		}
		qm.Defaults = q.defaults
		q.meters[id] = qm
	}
}

// quarterView is a meter's quarter as published with one telegram.
type quarterView struct {
	live     quarter.Live
	settings quarter.Settings
	totals   quarter.Totals
	expected bool
	version  uint64 // quarterMeter.version
}

// add moves meter's quarter to the telegram's reading; ok is false when
// the telegram has no import total or the meter is not followed.
func (q *quarterBook) add(meter string, tg *p1.Telegram, now time.Time, log *slog.Logger) (v quarterView, ok bool) {
	r, ok := quarter.ReadingOf(tg, now)
	if !ok {
		return v, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	qm := q.meters[meter]
	if qm == nil {
		if len(q.meters) >= maxQuarterMeters {
			if !q.refused {
				q.refused = true
				log.Warn("too many meters: the quarter-hours of further meters are not followed", "max", maxQuarterMeters)
			}
			return v, false
		}
		qm = &quarterMeter{Settings: q.defaults, Defaults: q.defaults}
		q.meters[meter] = qm
	}
	day := qm.Tracker.Totals.Day
	if len(qm.Tracker.Add(r, qm.Settings)) > 0 || qm.Tracker.Totals.Day != day {
		q.dirty = true
		qm.version++
	}
	v.live, _ = qm.Tracker.Meter.Live()
	v.settings, v.totals, v.expected, v.version = qm.Settings, qm.Tracker.Totals, qm.Tracker.Expected, qm.version
	return v, true
}

// set changes a setting of a meter already followed from a command
// payload; it returns the meter's settings and false for a payload that
// is no valid value, or an unknown meter.
func (q *quarterBook) set(meter, setting string, payload []byte) (quarter.Settings, bool) {
	v, err := strconv.ParseFloat(string(payload), 64)
	limit := discovery.MaxReferenceKW
	if setting == discovery.SettingOverrunPrice {
		limit = discovery.MaxPrice
	}
	if err != nil || math.IsNaN(v) || v < 0 || v > limit {
		return quarter.Settings{}, false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	qm := q.meters[meter]
	if qm == nil {
		return quarter.Settings{}, false
	}
	if setting == discovery.SettingOverrunPrice {
		qm.Settings.Price = v
	} else {
		qm.Settings.ReferenceKW = v
	}
	q.dirty = true
	qm.version++
	return qm.Settings, true
}

// isDirty reports whether there is something to save.
func (q *quarterBook) isDirty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dirty && q.file != ""
}

// save writes the book when it changed.
func (q *quarterBook) save() error {
	q.mu.Lock()
	if q.file == "" || !q.dirty {
		q.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(q.meters)
	q.dirty = false
	q.mu.Unlock()
	if err == nil {
		err = statefile.Write(q.file, b, 0o600)
	}
	if err != nil {
		q.mu.Lock()
		q.dirty = true
		q.mu.Unlock()
	}
	return err
}

// quarterTopics are a meter's topics of the reference power, made once.
type quarterTopics struct {
	energy, average, allowed, expected, lastEnergy, lastAverage, lastOverrun, peak, peakAttrs  string
	overrunToday, overrunMonth, costToday, costMonth, hasReference, hasPrice, reference, price string
}

// all are every topic of the reference power a meter publishes to.
func (t *quarterTopics) all() []string {
	return []string{t.energy, t.average, t.allowed, t.expected, t.lastEnergy, t.lastAverage, t.lastOverrun, t.peak, t.peakAttrs,
		t.overrunToday, t.overrunMonth, t.costToday, t.costMonth, t.hasReference, t.hasPrice, t.reference, t.price}
}

func newQuarterTopics(prefix, meter string) *quarterTopics {
	t := func(key string) string { return discovery.QuarterTopic(prefix, meter, key) }
	return &quarterTopics{
		energy: t("energy"), average: t("average_power"), allowed: t("allowed_power"), expected: t("overrun_expected"),
		lastEnergy: t("last_energy"), lastAverage: t("last_average_power"), lastOverrun: t("last_overrun"),
		peak: t("peak_month"), peakAttrs: t("peak_month") + "/attributes",
		overrunToday: t("overrun_today"), overrunMonth: t("overrun_month"), costToday: t("cost_today"), costMonth: t("cost_month"),
		hasReference: t(discovery.QuarterHasReference), hasPrice: t(discovery.QuarterHasPrice),
		reference: discovery.SettingTopic(prefix, meter, discovery.SettingReferencePower),
		price:     discovery.SettingTopic(prefix, meter, discovery.SettingOverrunPrice),
	}
}

// appendQuarter appends the PUBLISH packets of a meter's quarter to
// packets, with buf as scratch; neither allocates once grown. The running
// quarter goes out with every telegram; the rest (the last quarter, the
// totals, the settings) only with full, when it changed or the connection
// is new: 4 messages a telegram instead of 16.
func appendQuarter(packets, buf []byte, t *quarterTopics, v *quarterView, full bool) ([]byte, []byte) {
	num := func(topic string, f float64, prec int) {
		buf = strconv.AppendFloat(buf[:0], f, 'f', prec, 64)
		packets = appendPublish(packets, topic, buf, true)
	}
	text := func(topic, s string) {
		buf = append(buf[:0], s...)
		packets = appendPublish(packets, topic, buf, true)
	}
	s, tot := v.settings, &v.totals
	hasRef, hasPrice := s.ReferenceKW > 0, s.Price > 0
	num(t.energy, v.live.Energy, 3)
	num(t.average, v.live.Projected, 3)
	if hasRef {
		num(t.allowed, v.live.Allowed(s.ReferenceKW), 3)
		onOff := "OFF"
		if v.expected {
			onOff = "ON"
		}
		text(t.expected, onOff)
	}
	if !full {
		return packets, buf
	}
	if tot.HaveLast {
		num(t.lastEnergy, tot.Last.Energy, 3)
		num(t.lastAverage, tot.Last.AverageKW(), 3)
		if hasRef {
			num(t.lastOverrun, tot.Last.Overrun(s.ReferenceKW), 3)
		}
	}
	if !tot.PeakStart.IsZero() {
		num(t.peak, tot.PeakMonth, 3)
		buf = append(buf[:0], `{"start":"`...)
		buf = quarter.Local(tot.PeakStart).AppendFormat(buf, time.RFC3339)
		buf = append(buf, `"}`...)
		packets = appendPublish(packets, t.peakAttrs, buf, true)
	}
	if hasRef {
		num(t.overrunToday, tot.OverrunDay, 3)
		num(t.overrunMonth, tot.OverrunMonth, 3)
		if hasPrice {
			num(t.costToday, tot.CostDay, 2)
			num(t.costMonth, tot.CostMonth, 2)
		}
	}
	text(t.hasReference, availability(hasRef))
	text(t.hasPrice, availability(hasPrice))
	num(t.reference, s.ReferenceKW, -1)
	num(t.price, s.Price, -1)
	return packets, buf
}

// connected subscribes to the reference power's commands and marks, after
// every (re)connection, what the broker may have lost for publishing
// again (part).
func (b *Bridge) connected(ctx context.Context) {
	p := b.o.TopicPrefix + "/+/"
	if err := b.conn.subscribe(ctx, p+discovery.SettingReferencePower+"/set", p+discovery.SettingOverrunPrice+"/set"); err != nil {
		b.log.Warn("cannot subscribe to the reference power settings; they cannot be changed from Home Assistant until the next connection", "err", err)
	}
	b.markStale()
}

// message takes a command of a reference power setting (part).
func (b *Bridge) message(topic string, payload []byte) {
	rest, ok := strings.CutPrefix(topic, b.o.TopicPrefix+"/")
	if !ok {
		return
	}
	rest, ok = strings.CutSuffix(rest, "/set")
	meter, setting, split := strings.Cut(rest, "/")
	if !ok || !split || setting != discovery.SettingReferencePower && setting != discovery.SettingOverrunPrice {
		return
	}
	s, ok := b.quarters.set(meter, setting, payload)
	if !ok {
		b.counts.badCommands.Add(1)
		if allowed, held := b.logs.allow("setting " + setting); allowed {
			b.log.Warn("ignored a setting that is not a number in range, or for a meter not read here", "topic", topic, "bytes", len(payload),
				"range", settingRange(setting), "similar_lines_held_back", held)
		}
		return
	}
	b.log.Info("reference power settings changed from Home Assistant", "meter", meter, "reference_power_kw", s.ReferenceKW, "overrun_price", s.Price)
	b.settingChanged.Store(true)
	// The new value shows at once, not with the next telegram; the
	// callback must not wait for the broker.
	go b.publishSettings(meter, s)
}

// settingRange says which values a setting takes.
func settingRange(setting string) string {
	if setting == discovery.SettingOverrunPrice {
		return fmt.Sprintf("0 to %g €/kWh", discovery.MaxPrice)
	}
	return fmt.Sprintf("0 to %g kW (0: none)", discovery.MaxReferenceKW)
}

// publishSettings publishes a meter's settings and whether they are set.
func (b *Bridge) publishSettings(meter string, s quarter.Settings) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t := newQuarterTopics(b.o.TopicPrefix, meter)
	b.send(ctx, t.reference, strconv.AppendFloat(nil, s.ReferenceKW, 'f', -1, 64), 1)
	b.send(ctx, t.price, strconv.AppendFloat(nil, s.Price, 'f', -1, 64), 1)
	b.send(ctx, t.hasReference, []byte(availability(s.ReferenceKW > 0)), 1)
	b.send(ctx, t.hasPrice, []byte(availability(s.Price > 0)), 1)
}
