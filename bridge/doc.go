// Package bridge carries meter telegrams to MQTT: it is the only package
// that talks to a broker. It also holds the Decoder that every mode shares
// to turn frames into telegrams.
package bridge
