package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/smartybridge/smartybridge/bridge"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/metrics"
	"github.com/smartybridge/smartybridge/p1/port"
)

// supportURL is where users find help; it goes into discovery's "origin".
const supportURL = "https://github.com/smartybridge/smartybridge"

// newLogger writes text logs to w at the configured level.
func newLogger(w io.Writer, level string) *slog.Logger {
	l, _ := parseLevel(level)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// bridgeOptions turns the configuration into the bridge's options.
func (c *Config) bridgeOptions(log *slog.Logger) (bridge.Options, error) {
	mq, err := c.mqttOptions()
	if err != nil {
		return bridge.Options{}, configError{err}
	}
	return bridge.Options{
		MQTT: mq, Keys: c.decryptOptions(),
		TopicPrefix: c.TopicPrefix, DiscoveryPrefix: c.DiscoveryPrefix, Discovery: discovery.Style(c.Discovery),
		MeterTimeout: time.Duration(c.MeterTimeout), Version: version, SupportURL: supportURL, Log: log, StateDir: c.StateDir,
		ReferencePower: c.ReferencePower, OverrunPrice: c.OverrunPrice, Name: instanceName(c.Mode),
	}, nil
}

// runBridge is the default command: read the meter's port, publish to MQTT.
// words, if set, rewrites what the log and the Problem fixes say (the
// add-on's option names for the variables).
func runBridge(ctx context.Context, env Env, stderr io.Writer, words *strings.Replacer) error {
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	if words != nil {
		log = slog.New(wordsHandler{log.Handler(), words})
	}
	opts, err := cfg.bridgeOptions(log)
	if err != nil {
		return err
	}
	if words != nil {
		opts.Words = words.Replace
	}
	if cfg.Mode != discovery.ModeDecrypt && env.Get("GOMAXPROCS") == "" {
		// One meter, one telegram every 10 s: a single P saves the runtime's
		// hand-offs around the blocking serial reads (tools/bridgebench:
		// 0.33 ms CPU per frame instead of 0.92 ms, same latency). Decrypt
		// mode serves many meters and keeps every core.
		runtime.GOMAXPROCS(1)
	}
	log.Info("smartybridge starting", "version", version, "mode", cfg.Mode, "device", cfg.Device,
		"broker", opts.MQTT.Brokers(), "client_id", opts.MQTT.ClientID, "discovery", cfg.Discovery)
	switch cfg.Mode {
	case discovery.ModeForward:
		return runForward(ctx, &cfg, opts, log)
	case discovery.ModeDecrypt:
		if !cfg.hasKey() {
			log.Warn("no SMARTY_KEY or SMARTY_KEYS: every forwarded frame will be counted and dropped")
		}
		b, err := bridge.New(opts)
		if err != nil {
			return err
		}
		if err := serveMetrics(ctx, &cfg, b.Metrics, log); err != nil {
			return err
		}
		return b.RunDecrypt(ctx, bridge.SplitOptions{ShareGroup: cfg.ShareGroup, StateDir: cfg.StateDir, SessionExpiry: time.Duration(cfg.SessionExpiry)})
	}
	if !cfg.hasKey() {
		log.Warn("no SMARTY_KEY: only unencrypted DSMR telegrams will decode; Smarty meters need the key from the grid operator")
	}
	src, err := port.Open(ctx, port.Options{Device: cfg.Device, Baud: cfg.Baud, Log: log})
	if err != nil {
		return configError{err}
	}
	defer func() { _ = src.Close() }() // read only
	b, err := bridge.New(opts)
	if err != nil {
		return err
	}
	if err := serveMetrics(ctx, &cfg, b.Metrics, log); err != nil {
		return err
	}
	return b.Run(ctx, bridge.Source{Reader: src, Live: src.Live(), OpenError: src.OpenError})
}

// serveMetrics starts the Prometheus endpoint when SMARTY_METRICS_LISTEN
// asks for it; it stops with ctx.
func serveMetrics(ctx context.Context, cfg *Config, snapshot func() metrics.Snapshot, log *slog.Logger) error {
	if cfg.MetricsListen == "" {
		return nil
	}
	done, err := metrics.Serve(ctx, cfg.MetricsListen, snapshot, log)
	if err != nil {
		return configError{err}
	}
	go func() {
		if err := <-done; err != nil {
			log.Warn("the metrics endpoint stopped", "err", err)
		}
	}()
	return nil
}

// runForward reads the port and forwards the still-encrypted frames.
func runForward(ctx context.Context, cfg *Config, opts bridge.Options, log *slog.Logger) error {
	if cfg.hasKey() {
		log.Info("forward mode needs no key; SMARTY_KEY is ignored and can stay on the decrypting side")
	}
	src, err := port.Open(ctx, port.Options{Device: cfg.Device, Baud: cfg.Baud, Log: log})
	if err != nil {
		return configError{err}
	}
	defer func() { _ = src.Close() }() // read only
	fo := bridge.ForwardOptions{Device: cfg.Device, StateDir: cfg.StateDir, QueueMax: cfg.QueueMax}
	if cfg.ConfirmKey != "" {
		fo.ConfirmKey, _ = bridge.ParseConfirmKey(cfg.ConfirmKey) // checked by Validate
	}
	f, err := bridge.NewForwarder(opts, fo)
	if err != nil {
		return err
	}
	if err := serveMetrics(ctx, cfg, f.Metrics, log); err != nil {
		return err
	}
	return f.Run(ctx, bridge.Source{Reader: src, Live: src.Live(), OpenError: src.OpenError})
}

// instanceName is how Home Assistant names this instance's own device: its
// job and its host, "Smarty bridge (raspberrypi)"; the client id stays
// where MQTT needs it.
func instanceName(mode discovery.Mode) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	job := map[discovery.Mode]string{discovery.ModeBridge: "bridge", discovery.ModeForward: "forwarder", discovery.ModeDecrypt: "decryptor"}[mode]
	return fmt.Sprintf("Smarty %s (%s)", job, host)
}
