//go:build nodemo

package cli

import (
	"errors"
	"log/slog"
)

// startBroker is left out of builds for small machines (-tags nodemo: the
// Home Assistant add-on), where the embedded broker's code and its
// package's start-up cost about a megabyte of resident memory that the
// bridge never uses.
func startBroker(string, *slog.Logger) (func(), string, error) {
	return nil, "", configError{errors.New("this build leaves the demo's embedded broker out (built with -tags nodemo, as the Home Assistant add-on is, to save memory): give the demo a broker with SMARTY_MQTT_URL=mqtt://HOST:1883")}
}
