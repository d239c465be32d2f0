package discovery

import (
	"slices"
	"strings"
)

// BridgeDevice is a smartybridge instance as a Home Assistant device.
type BridgeDevice struct {
	ClientID string // the MQTT client id, which identifies the instance
	// Name is what Home Assistant shows ("Smarty bridge (raspberrypi)");
	// "" names it after the client id.
	Name string
	Mode Mode
	// StatusTopic carries "online"/"offline" (the last will);
	// DiagnosticsTopic the JSON of the diagnostic values; ProblemTopic the
	// Problem's explanation, fix and meter as JSON attributes.
	StatusTopic, DiagnosticsTopic, ProblemTopic string
}

// BridgeID is the device identifier of the instance with this client id
// ("smartybridge_<client id>", without saying smartybridge twice); meter
// devices name it in via_device.
func BridgeID(clientID string) string {
	id := safeID(clientID)
	for _, p := range []string{"smartybridge-", "smartybridge_"} {
		id = strings.TrimPrefix(id, p)
	}
	return "smartybridge_" + id
}

// BridgeNode is the node id of the bridge device's discovery topics: its
// client id, as topics allow it.
func BridgeNode(clientID string) string { return safeID(clientID) }

// safeID keeps what discovery ids allow: letters, digits, '_' and '-'.
func safeID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}

// bridgeEntity is one entity of the bridge device: its key in the
// diagnostics JSON and how Home Assistant shows it.
type bridgeEntity struct {
	key, name, platform, deviceClass, stateClass, unit, icon string
	modes                                                    []Mode // modes that have it; nil: all
	disabled                                                 bool   // created disabled
	shown                                                    bool   // on the device page, not under diagnostics
}

// reading are the modes that read telegrams.
var reading = []Mode{ModeBridge, ModeDecrypt}

var bridgeEntities = []bridgeEntity{
	// On the device page, first and in words: the Problem, a status whose
	// icon changes with it, the diagnosis and what to do.
	{key: "status", name: "Status", platform: "binary_sensor", deviceClass: "problem", shown: true},
	{key: "problem", name: "Problem", platform: "sensor", deviceClass: "enum", icon: "mdi:alert-circle-check-outline", shown: true},
	{key: "explanation", name: "Diagnosis", platform: "sensor", icon: "mdi:stethoscope", shown: true},
	{key: "fix", name: "What to do", platform: "sensor", icon: "mdi:wrench", shown: true},
	{key: "connection", name: "MQTT connection", platform: "binary_sensor", deviceClass: "connectivity"},
	{key: "telegrams", name: "Telegrams decoded", platform: "sensor", stateClass: "total_increasing", icon: "mdi:counter", modes: reading},
	{key: "frames_forwarded", name: "Frames forwarded", platform: "sensor", stateClass: "total_increasing", icon: "mdi:counter", modes: []Mode{ModeForward}},
	{key: "rejected_authentication", name: "Frames rejected: authentication", platform: "sensor", stateClass: "total_increasing", icon: "mdi:key-alert", modes: reading},
	{key: "rejected_no_key", name: "Frames rejected: no key", platform: "sensor", stateClass: "total_increasing", icon: "mdi:key-remove", modes: reading},
	{key: "rejected_crc", name: "Frames rejected: CRC", platform: "sensor", stateClass: "total_increasing", icon: "mdi:alert-decagram", modes: reading},
	{key: "rejected_malformed", name: "Frames rejected: malformed", platform: "sensor", stateClass: "total_increasing", icon: "mdi:alert-decagram", modes: reading},
	{key: "rejected_replayed", name: "Frames rejected: replayed", platform: "sensor", stateClass: "total_increasing", icon: "mdi:repeat-off", modes: reading},
	{key: "bytes_skipped", name: "Bytes skipped", platform: "sensor", deviceClass: "data_size", stateClass: "total_increasing", unit: "B", modes: []Mode{ModeBridge, ModeForward}},
	// Disabled: a new time with every telegram fills the logbook.
	{key: "last_telegram", name: "Last telegram", platform: "sensor", deviceClass: "timestamp", modes: reading, disabled: true},
	{key: "frames_queued", name: "Frames queued", platform: "sensor", stateClass: "measurement", icon: "mdi:tray-full", modes: []Mode{ModeForward}},
	{key: "frames_unconfirmed", name: "Frames unconfirmed", platform: "sensor", stateClass: "measurement", icon: "mdi:tray-alert", modes: []Mode{ModeForward}},
	{key: "meters_served", name: "Meters served", platform: "sensor", stateClass: "measurement", icon: "mdi:meter-electric", modes: []Mode{ModeDecrypt}},
	{key: "frames_per_minute", name: "Frames per minute", platform: "sensor", stateClass: "measurement", unit: "frames/min", icon: "mdi:speedometer", modes: []Mode{ModeDecrypt}},
}

// BridgeKeys are the keys of the diagnostics JSON that mode publishes
// (besides "problem").
func BridgeKeys(mode Mode) []string {
	var out []string
	for _, e := range bridgeEntities {
		if e.platform == "sensor" && e.key != "problem" && e.key != "explanation" && e.key != "fix" && (e.modes == nil || slices.Contains(e.modes, mode)) {
			out = append(out, e.key)
		}
	}
	return out
}

func bridgeDeviceInfo(b BridgeDevice, o Options) deviceJSON {
	name := b.Name
	if name == "" {
		name = b.ClientID
		if !strings.HasPrefix(name, "smartybridge") {
			name = "smartybridge " + name
		}
	}
	return deviceJSON{Identifiers: []string{BridgeID(b.ClientID)}, Name: name, Manufacturer: "smartybridge",
		Model: "smartybridge, " + string(b.Mode) + " mode", SWVersion: o.Version}
}

func bridgeComponents(b BridgeDevice) []componentJSON {
	id := BridgeID(b.ClientID)
	var out []componentJSON
	for _, e := range bridgeEntities {
		if e.modes != nil && !slices.Contains(e.modes, b.Mode) {
			continue
		}
		c := componentJSON{
			Platform: e.platform, UniqueID: id + "_" + e.key, Name: e.name,
			DefaultEntityID: e.platform + "." + slug(id+" "+e.key),
			DeviceClass:     e.deviceClass, StateClass: e.stateClass, UnitOfMeasurement: e.unit,
			EntityCategory: "diagnostic", Icon: e.icon,
		}
		if e.shown {
			c.EntityCategory = ""
		}
		if e.disabled {
			f := false
			c.EnabledByDefault = &f
		}
		switch e.key {
		case "connection":
			// From the last will: "off" when the instance is gone, never
			// unavailable.
			c.StateTopic, c.PayloadOn, c.PayloadOff = b.StatusTopic, "online", "offline"
		case "problem":
			c.StateTopic, c.ValueTemplate, c.Options = b.DiagnosticsTopic, problemTemplate(), problemOptions()
			c.JSONAttributesTopic = b.ProblemTopic
			c.Availability = []availabilityJSON{{Topic: b.StatusTopic}}
		case "status":
			c.StateTopic, c.ValueTemplate = b.DiagnosticsTopic, "{{ 'OFF' if value_json.problem in ['ok', 'no_meter'] else 'ON' }}"
			c.Availability = []availabilityJSON{{Topic: b.StatusTopic}}
		case "explanation":
			// A state holds 255 characters; the whole text stays in the
			// Problem's attributes.
			c.StateTopic, c.ValueTemplate = b.ProblemTopic, "{{ value_json.explanation[:255] }}"
			c.Availability = []availabilityJSON{{Topic: b.StatusTopic}}
		case "fix":
			c.StateTopic, c.ValueTemplate = b.ProblemTopic, "{{ (value_json.fix or 'Nothing to do.')[:255] }}"
			c.Availability = []availabilityJSON{{Topic: b.StatusTopic}}
		default:
			// "None" is Home Assistant's word for unknown (no telegram yet).
			c.StateTopic, c.ValueTemplate = b.DiagnosticsTopic, "{{ value_json."+e.key+" | default('None') }}"
			c.Availability = []availabilityJSON{{Topic: b.StatusTopic}}
		}
		out = append(out, c)
	}
	return out
}

// BridgeConfig builds the discovery of the bridge device: one message in
// device style, one per entity in entity style. Its topics are named after
// the client id alone (<prefix>/device/<client id>/config), so that a
// broker's ACL can grant each instance its own with a %c pattern.
func BridgeConfig(b BridgeDevice, style Style, o Options) []Message {
	id, node := BridgeID(b.ClientID), safeID(b.ClientID)
	dev, org := bridgeDeviceInfo(b, o), origin(o)
	switch style {
	case DeviceStyle:
		cfg := deviceConfigJSON{Device: dev, Origin: org, Components: map[string]componentJSON{}}
		for _, c := range bridgeComponents(b) {
			cfg.Components[strings.TrimPrefix(c.UniqueID, id+"_")] = c
		}
		return []Message{{Topic: o.DiscoveryPrefix + "/device/" + node + "/config", Payload: mustJSON(cfg)}}
	case EntityStyle:
		var out []Message
		for _, c := range bridgeComponents(b) {
			platform, key := c.Platform, strings.TrimPrefix(c.UniqueID, id+"_")
			c.Platform, c.Device, c.Origin = "", &dev, &org
			out = append(out, Message{Topic: o.DiscoveryPrefix + "/" + platform + "/" + node + "/" + key + "/config", Payload: mustJSON(c)})
		}
		return out
	}
	return nil
}

// problemOptions are the Problem states as the enum sensor's options: in
// words (Label).
func problemOptions() []string {
	out := make([]string, len(Problems))
	for i, p := range Problems {
		out[i] = p.Label()
	}
	return out
}

// problemTemplate shows the diagnostics' Problem slug in words.
func problemTemplate() string {
	var b strings.Builder
	b.WriteString("{{ {")
	for i, p := range Problems {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("'" + string(p) + "': '" + p.Label() + "'")
	}
	b.WriteString("}.get(value_json.problem, 'None') }}")
	return b.String()
}
