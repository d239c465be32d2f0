package discovery

import "github.com/smartybridge/smartybridge/p1"

// The reference power's entities (internal/quarter), on every meter device
// that reports its import total 1-0:1.8.0. Their states live under
// <prefix>/<meter>/quarter/…; the household sets its reference power and
// overrun price through two number entities whose commands go to
// <prefix>/<meter>/reference_power/set and …/overrun_price/set.

// QuarterTopic is the state topic of a quarter entity of meter.
func QuarterTopic(prefix, meter, key string) string {
	return prefix + "/" + meter + "/quarter/" + key
}

// SettingTopic is the state topic of a setting (reference_power or
// overrun_price) of meter; its commands come to SettingTopic + "/set".
func SettingTopic(prefix, meter, setting string) string {
	return prefix + "/" + meter + "/" + setting
}

// The settings a household sets from Home Assistant.
const (
	SettingReferencePower = "reference_power" // kW
	SettingOverrunPrice   = "overrun_price"   // €/kWh
)

// Availability topics of the quarter entities that need a setting: they
// carry "online" while it is set, so that an overrun without a reference
// power shows as unavailable, not as 0.
const (
	QuarterHasReference = "has_reference"
	QuarterHasPrice     = "has_price"
)

// The range of the settings, as the number entities offer it and as the
// bridge accepts commands.
const (
	MaxReferenceKW = 100.0
	MaxPrice       = 10.0
)

var obisImport = p1.OBIS{A: 1, B: 0, C: 1, D: 8, E: 0}

// quarterEntity is one entity of the reference power.
type quarterEntity struct {
	key, platform, name, deviceClass, unit, stateClass, icon string
	needs                                                    []string // availability topics of the settings it needs
	attributes                                               bool     // has …/attributes
	setting                                                  bool     // a number entity
	min, max, step                                           float64
}

var quarterEntities = []quarterEntity{
	{key: "energy", platform: "sensor", name: "Quarter-hour energy", deviceClass: "energy", unit: "kWh", stateClass: "total_increasing", icon: "mdi:timer-sand"},
	{key: "average_power", platform: "sensor", name: "Quarter-hour forecast", deviceClass: "power", unit: "kW", stateClass: "measurement"},
	{key: "allowed_power", platform: "sensor", name: "Power still allowed", deviceClass: "power", unit: "kW", stateClass: "measurement",
		icon: "mdi:gauge", needs: []string{QuarterHasReference}},
	{key: "overrun_expected", platform: "binary_sensor", name: "Overrun expected", deviceClass: "problem",
		needs: []string{QuarterHasReference}},
	{key: "last_energy", platform: "sensor", name: "Last quarter-hour energy", deviceClass: "energy", unit: "kWh"},
	{key: "last_average_power", platform: "sensor", name: "Last quarter-hour power", deviceClass: "power", unit: "kW", stateClass: "measurement"},
	{key: "last_overrun", platform: "sensor", name: "Last quarter-hour overrun", deviceClass: "energy", unit: "kWh", needs: []string{QuarterHasReference}},
	{key: "peak_month", platform: "sensor", name: "Month's peak quarter-hour", deviceClass: "power", unit: "kW", stateClass: "measurement",
		attributes: true},
	{key: "overrun_today", platform: "sensor", name: "Overrun today", deviceClass: "energy", unit: "kWh", stateClass: "total_increasing",
		needs: []string{QuarterHasReference}},
	{key: "overrun_month", platform: "sensor", name: "Overrun this month", deviceClass: "energy", unit: "kWh", stateClass: "total_increasing",
		needs: []string{QuarterHasReference}},
	{key: "cost_today", platform: "sensor", name: "Overrun cost today", deviceClass: "monetary", unit: "EUR",
		needs: []string{QuarterHasReference, QuarterHasPrice}},
	{key: "cost_month", platform: "sensor", name: "Overrun cost this month", deviceClass: "monetary", unit: "EUR",
		needs: []string{QuarterHasReference, QuarterHasPrice}},
	{key: SettingReferencePower, platform: "number", name: "Reference power", deviceClass: "power", unit: "kW", icon: "mdi:transmission-tower",
		setting: true, min: 0, max: MaxReferenceKW, step: 0.1},
	{key: SettingOverrunPrice, platform: "number", name: "Overrun price", unit: "€/kWh", icon: "mdi:cash",
		setting: true, min: 0, max: MaxPrice, step: 0.001}, // Home Assistant's smallest step
}

// hasQuarter reports whether a meter's sensors allow the computation.
func hasQuarter(sensors []Sensor) bool {
	for _, s := range sensors {
		if s.OBIS == obisImport {
			return true
		}
	}
	return false
}

// quarterComponents are the reference power's components of a meter.
func quarterComponents(d Device, o Options) (ids []string, cs []componentJSON) {
	for _, e := range quarterEntities {
		c := componentJSON{
			Platform:          e.platform,
			UniqueID:          d.ID + "_quarter_" + e.key,
			DefaultEntityID:   e.platform + "." + slug("smarty "+d.ID+" "+e.name),
			Name:              e.name,
			StateTopic:        QuarterTopic(o.TopicPrefix, d.ID, e.key),
			DeviceClass:       e.deviceClass,
			UnitOfMeasurement: e.unit,
			StateClass:        e.stateClass,
			Icon:              e.icon,
		}
		if e.attributes {
			c.JSONAttributesTopic = c.StateTopic + "/attributes"
		}
		if e.setting {
			c.StateTopic = SettingTopic(o.TopicPrefix, d.ID, e.key)
			c.CommandTopic = c.StateTopic + "/set"
			mn, mx, st := e.min, e.max, e.step
			c.Min, c.Max, c.Step, c.Mode, c.EntityCategory = &mn, &mx, &st, "box", "config"
		}
		if len(e.needs) > 0 {
			c.Availability = availability(o)
			for _, n := range e.needs {
				c.Availability = append(c.Availability, availabilityJSON{Topic: QuarterTopic(o.TopicPrefix, d.ID, n)})
			}
			c.AvailabilityMode = "all"
		}
		ids = append(ids, "quarter_"+e.key)
		cs = append(cs, c)
	}
	return ids, cs
}
