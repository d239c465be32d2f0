//go:build !nodemo

package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// startBroker starts the embedded MQTT broker.
func startBroker(addr string, log *slog.Logger) (stop func(), bound string, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", configError{fmt.Errorf("embedded broker: cannot listen on %s (%v); is another broker running? Stop it, set SMARTY_DEMO_LISTEN=127.0.0.1:1884, or use it with SMARTY_MQTT_URL=mqtt://127.0.0.1:1883", addr, err)}
	}
	bound = l.Addr().String()
	if err := l.Close(); err != nil {
		return nil, "", err
	}
	// The broker's own lifecycle lines only matter when debugging.
	blog := slog.New(slog.DiscardHandler)
	if log.Enabled(context.Background(), slog.LevelDebug) {
		blog = log.With("part", "broker")
	}
	server := mqtt.New(&mqtt.Options{Logger: blog})
	if err := server.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, "", err
	}
	if err := server.AddListener(listeners.NewTCP(listeners.Config{ID: "demo", Address: bound})); err != nil {
		return nil, "", err
	}
	errc := make(chan error, 1)
	go func() { errc <- server.Serve() }()
	select {
	case err := <-errc:
		if err != nil {
			return nil, "", err
		}
	case <-time.After(50 * time.Millisecond):
	}
	return func() {
		if err := server.Close(); err != nil {
			log.Debug("embedded broker stop", "err", err)
		}
	}, bound, nil
}
