// Package discovery describes a meter's objects as Home Assistant sensors:
// the OBIS catalog (name, device class, unit, state class, visibility) and
// the MQTT discovery payloads built from it. It knows nothing of MQTT
// connections; it only returns topics and bytes.
//
// Device-based discovery (Home Assistant 2024.11 and later), one retained
// message per meter:
//
//	<discovery_prefix>/device/<meter>/config
//	{"device":{…},"origin":{…},"availability":[…],"components":{"<object>":{"platform":"sensor",…},…}}
//
// Entity-based discovery, for older Home Assistant, one message per sensor:
//
//	<discovery_prefix>/sensor/<meter>/<object>/config
//
// Device classes, units and state classes follow Home Assistant's tables
// (DEVICE_CLASS_UNITS, DEVICE_CLASS_STATE_CLASSES); units are HA's exact
// strings, so "m3" from the telegram becomes "m³".
package discovery
