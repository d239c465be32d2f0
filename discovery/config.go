package discovery

import (
	"encoding/json"
	"strings"

	"github.com/smartybridge/smartybridge/p1"
)

// Style selects how discovery is published.
type Style string

// The discovery styles of SMARTY_DISCOVERY.
const (
	DeviceStyle Style = "device" // one config per meter (Home Assistant ≥ 2024.11)
	EntityStyle Style = "entity" // one config per sensor (older Home Assistant)
	Off         Style = "off"    // publish no discovery
)

// Options say where things live.
type Options struct {
	TopicPrefix     string   // state topics: <prefix>/<meter>/<OBIS>
	DiscoveryPrefix string   // Home Assistant's discovery prefix
	Availability    []string // topics carrying "online"/"offline"; all must be online
	Version         string   // the bridge's version, for "origin"
	SupportURL      string
	// ViaDevice is the identifier of the bridge device that meter devices
	// link to (BridgeID); empty: none.
	ViaDevice string
}

// Device is a meter as a Home Assistant device.
type Device struct {
	ID     string // meter id: "SAG…" from 0-0:42.0.0, else another stable id
	Header string // identification line, which names maker and model
}

// Message is one discovery message: retained, at Topic.
type Message struct {
	Topic   string
	Payload []byte
}

// StateTopic is where the state of code is published for meter.
func StateTopic(prefix, meter string, code p1.OBIS) string {
	return prefix + "/" + meter + "/" + code.String()
}

// MaxState is the longest state Home Assistant keeps, in characters.
const MaxState = 255

// LongText reports whether code is a message (0-0:96.13.x), whose text may
// be longer than MaxState: its whole text goes to AttributesTopic.
func LongText(code p1.OBIS) bool { return code.C == 96 && code.D == 13 }

// MoreValues reports whether o carries values beyond its reading that
// would otherwise be lost (the current limit's two, 1-1:31.4.0(040*A)
// (-040*A)): they go to AttributesTopic as {"values": […]}. Only
// electricity objects (A = 1): an M-Bus line's values are a capture time
// and its reading.
func MoreValues(o *p1.Object) bool { return len(o.Values) > 1 && o.OBIS.A == 1 }

// AttributesTopic is where the whole text of a message is published, as
// the JSON attributes {"text": …} of its sensor.
func AttributesTopic(prefix, meter string, code p1.OBIS) string {
	return StateTopic(prefix, meter, code) + "/attributes"
}

// AvailabilityTopic is where a meter's own availability is published.
func AvailabilityTopic(prefix, meter string) string {
	return prefix + "/" + meter + "/availability"
}

type deviceJSON struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name,omitempty"`
	Manufacturer string   `json:"manufacturer,omitempty"`
	Model        string   `json:"model,omitempty"`
	SerialNumber string   `json:"serial_number,omitempty"`
	SWVersion    string   `json:"sw_version,omitempty"`
	ViaDevice    string   `json:"via_device,omitempty"`
}

type originJSON struct {
	Name       string `json:"name"`
	SWVersion  string `json:"sw_version,omitempty"`
	SupportURL string `json:"support_url,omitempty"`
}

type availabilityJSON struct {
	Topic string `json:"topic"`
}

type componentJSON struct {
	Platform        string `json:"platform,omitempty"`
	UniqueID        string `json:"unique_id"`
	DefaultEntityID string `json:"default_entity_id"`
	Name            string `json:"name"`
	StateTopic      string `json:"state_topic"`
	// Texts: trimmed (an empty text is published as one space); messages
	// carry their whole text as the attribute "text".
	ValueTemplate string `json:"value_template,omitempty"`
	// A binary sensor's payloads (the bridge's MQTT connection).
	PayloadOn           string   `json:"payload_on,omitempty"`
	PayloadOff          string   `json:"payload_off,omitempty"`
	JSONAttributesTopic string   `json:"json_attributes_topic,omitempty"`
	DeviceClass         string   `json:"device_class,omitempty"`
	UnitOfMeasurement   string   `json:"unit_of_measurement,omitempty"`
	StateClass          string   `json:"state_class,omitempty"`
	Options             []string `json:"options,omitempty"` // an enum's states
	Precision           *int     `json:"suggested_display_precision,omitempty"`
	EnabledByDefault    *bool    `json:"enabled_by_default,omitempty"`
	EntityCategory      string   `json:"entity_category,omitempty"`
	Icon                string   `json:"icon,omitempty"`
	// A number entity's (the reference power's settings).
	CommandTopic string   `json:"command_topic,omitempty"`
	Min          *float64 `json:"min,omitempty"`
	Max          *float64 `json:"max,omitempty"`
	Step         *float64 `json:"step,omitempty"`
	Mode         string   `json:"mode,omitempty"`

	// Entity-style configs carry the device and availability themselves.
	Device           *deviceJSON        `json:"device,omitempty"`
	Origin           *originJSON        `json:"origin,omitempty"`
	Availability     []availabilityJSON `json:"availability,omitempty"`
	AvailabilityMode string             `json:"availability_mode,omitempty"`
}

type deviceConfigJSON struct {
	Device deviceJSON `json:"device"`
	Origin originJSON `json:"origin"`
	// None for the bridge's own device: its components have their own.
	Availability     []availabilityJSON       `json:"availability,omitempty"`
	AvailabilityMode string                   `json:"availability_mode,omitempty"`
	Components       map[string]componentJSON `json:"components"`
}

// DeviceConfig builds the device-based discovery message for a meter.
func DeviceConfig(d Device, sensors []Sensor, o Options) Message {
	cfg := deviceConfigJSON{
		Device:           deviceInfo(d, o),
		Origin:           origin(o),
		Availability:     availability(o),
		AvailabilityMode: "all",
		Components:       make(map[string]componentJSON, len(sensors)),
	}
	for _, s := range sensors {
		c := component(d, s, o)
		c.Platform = "sensor"
		cfg.Components[objectID(s.OBIS)] = c
	}
	if hasQuarter(sensors) {
		ids, cs := quarterComponents(d, o)
		for i, c := range cs {
			cfg.Components[ids[i]] = c
		}
	}
	return Message{Topic: o.DiscoveryPrefix + "/device/" + d.ID + "/config", Payload: mustJSON(cfg)}
}

// EntityConfigs builds one discovery message per sensor, for Home
// Assistant before 2024.11.
func EntityConfigs(d Device, sensors []Sensor, o Options) []Message {
	dev, org, av := deviceInfo(d, o), origin(o), availability(o)
	out := make([]Message, 0, len(sensors))
	for _, s := range sensors {
		c := component(d, s, o)
		c.Device, c.Origin, c.Availability, c.AvailabilityMode = &dev, &org, av, "all"
		out = append(out, Message{
			Topic:   o.DiscoveryPrefix + "/sensor/" + d.ID + "/" + objectID(s.OBIS) + "/config",
			Payload: mustJSON(c),
		})
	}
	if hasQuarter(sensors) {
		ids, cs := quarterComponents(d, o)
		for i, c := range cs {
			platform := c.Platform
			c.Platform = ""
			c.Device, c.Origin = &dev, &org
			if c.Availability == nil {
				c.Availability, c.AvailabilityMode = av, "all"
			}
			out = append(out, Message{Topic: o.DiscoveryPrefix + "/" + platform + "/" + d.ID + "/" + ids[i] + "/config", Payload: mustJSON(c)})
		}
	}
	return out
}

func component(d Device, s Sensor, o Options) componentJSON {
	c := componentJSON{
		UniqueID:          d.ID + "_" + s.OBIS.String(),
		DefaultEntityID:   "sensor." + slug("smarty "+d.ID+" "+s.Name),
		Name:              s.Name,
		StateTopic:        StateTopic(o.TopicPrefix, d.ID, s.OBIS),
		DeviceClass:       s.DeviceClass,
		UnitOfMeasurement: s.Unit,
		StateClass:        s.StateClass,
		Icon:              s.Icon,
	}
	if s.DeviceClass == "" && s.StateClass == "" && s.Unit == "" {
		c.ValueTemplate = "{{ value | trim }}"
	}
	if t := s.shown.template(); t != "" {
		c.ValueTemplate, c.Options = t, s.shown.states()
	}
	if LongText(s.OBIS) || s.moreValues {
		c.JSONAttributesTopic = AttributesTopic(o.TopicPrefix, d.ID, s.OBIS)
	}
	if s.Precision >= 0 && s.DeviceClass != "" {
		p := s.Precision
		c.Precision = &p
	}
	if s.Visibility == Hidden || s.Visibility == HiddenDiagnostic {
		f := false
		c.EnabledByDefault = &f
	}
	if s.Visibility == Diagnostic || s.Visibility == HiddenDiagnostic {
		c.EntityCategory = "diagnostic"
	}
	return c
}

// manufacturers maps the three-letter maker code of the identification
// line (upper-cased); an unknown code is shown as it is.
var manufacturers = map[string]string{
	"LUX": "Sagemcom", "EST": "Sagemcom", "SAG": "Sagemcom", "ISK": "Iskra", "KFM": "Kaifa", "XMX": "Xemex",
	"FLU": "Fluvius", "KAM": "Kamstrup", "KMP": "Kamstrup", "LGB": "Landis+Gyr", "LGF": "Landis+Gyr", "ELS": "Elster",
}

func deviceInfo(d Device, o Options) deviceJSON {
	dev := deviceJSON{Identifiers: []string{d.ID}, Name: "Smart meter " + d.ID, SerialNumber: d.ID, ViaDevice: o.ViaDevice}
	if len(d.Header) >= 3 {
		code := strings.ToUpper(d.Header[:3])
		dev.Manufacturer = manufacturers[code]
		if dev.Manufacturer == "" {
			dev.Manufacturer = code
		}
	}
	switch {
	case strings.HasPrefix(d.Header, "Lux"):
		dev.Model = "T210-D"
	case strings.HasPrefix(d.Header, "EST"):
		dev.Model = "T210-D-r"
	case len(d.Header) > 5:
		// "ISk5\2MT382-1000": the model follows the baud-rate digit.
		dev.Model = strings.TrimPrefix(d.Header[4:], "\\2")
	}
	return dev
}

func origin(o Options) originJSON {
	return originJSON{Name: "smartybridge", SWVersion: o.Version, SupportURL: o.SupportURL}
}

func availability(o Options) []availabilityJSON {
	av := make([]availabilityJSON, len(o.Availability))
	for i, t := range o.Availability {
		av[i] = availabilityJSON{Topic: t}
	}
	return av
}

// objectID names a sensor within its device: "1-0:1.8.0" becomes
// "1-0_1_8_0" (discovery ids allow letters, digits, '_' and '-').
func objectID(code p1.OBIS) string {
	return strings.NewReplacer(":", "_", ".", "_").Replace(code.String())
}

// slug makes an entity id part: lower case, words joined by '_'.
func slug(s string) string {
	var b strings.Builder
	lastUnderscore := true
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			lastUnderscore = false
		} else if !lastUnderscore {
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // unreachable: plain structs of strings and numbers
	}
	return b
}
