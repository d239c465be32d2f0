// Package bridge carries meter telegrams to MQTT; it is the only package
// that talks to a broker (paho.golang autopaho, MQTT 5).
//
//	bridge mode   port ─► p1.Scanner ─► Decoder ─► states, discovery, availability
//	forward mode  port ─► p1.Scanner ─► spool ─► <prefix>/raw/<TITLE>        (Forwarder)
//	decrypt mode  <prefix>/raw/+ ─► replay check ─► Decoder ─► as bridge mode (Bridge.RunDecrypt)
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
