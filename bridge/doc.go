// Package bridge carries meter telegrams to MQTT; it is the only package
// that talks to a broker (paho.golang autopaho, MQTT 5).
//
//	bridge mode   port ─► telegrams.Reader ─► replay check ─► states, discovery, availability (Bridge.Run)
//	forward mode  port ─► telegrams.Reader (frames only) ─► spool ─► <prefix>/raw/<TITLE>  (Forwarder)
//	decrypt mode  <prefix>/raw/+ ─► replay check ─► Decoder ─► as bridge mode   (Bridge.RunDecrypt)
//
// Every mode is a part of one node (node.go): the node owns the broker
// connection and its life, the instance's status topic and Last Will,
// Home Assistant's status, the discovery-style switcher (switch.go), the
// reporter of the instance's own device (report.go) and the clean
// "offline" at the end; the part subscribes to what it needs, takes its
// messages and says what it says at a stop.
//
// Topics (DESIGN.md §4):
//
//	<discovery>/device/<meter>/config    retained Home Assistant discovery
//	<prefix>/<meter>/<OBIS>              retained state, plain value
//	<prefix>/<meter>/availability        online / offline (meter silent)
//	<prefix>/status/<client-id>          online / offline (Last Will)
//	<prefix>/raw/<TITLE>                 forwarded frame, QoS 1
//	<prefix>/confirm/<TITLE>             retained signed confirmation of settled frames
//
// A telegram's state messages leave in one write (batch.go), closed by a
// PINGREQ whose answer confirms them (pinger.go); what the broker did not
// confirm is held and sent again (hold.go). A decryptor's confirmations
// have one writer per meter (settle.go). Decoding errors become counters
// and one actionable log line, never a crash.
package bridge
