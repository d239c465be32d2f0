package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/smartybridge/smartybridge/bridge"
	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/quarter"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// DemoConfig holds the settings of the demo and simulate commands.
type DemoConfig struct {
	Interval duration `envconfig:"DEMO_INTERVAL" default:"3s" desc:"demo and simulate: time between simulated frames"`
	Listen   string   `envconfig:"DEMO_LISTEN" default:"127.0.0.1:1883" desc:"demo: address of the embedded broker (0.0.0.0:1883 to let Home Assistant on another machine connect)"`
	Count    int      `envconfig:"SIM_COUNT" default:"0" desc:"simulate: stop after this many frames (0: never)"`
}

// runDemo runs the whole bridge with a simulated meter and, unless
// SMARTY_MQTT_URL is set, an embedded broker: no hardware, no service.
func runDemo(ctx context.Context, env Env, stdout, stderr io.Writer) error {
	defaults := map[string]string{}
	_, ownBroker := env.Lookup("SMARTY_MQTT_URL")
	ownBroker = !ownBroker
	if ownBroker {
		defaults["SMARTY_MQTT_URL"] = "mqtt://127.0.0.1:1883"
	}
	if _, set := env.Lookup("SMARTY_KEY"); !set {
		defaults["SMARTY_KEY"] = sim.DemoKeyHex
	}
	if _, set := env.Lookup("SMARTY_MQTT_CLIENT_ID"); !set {
		defaults["SMARTY_MQTT_CLIENT_ID"] = "smartybridge-demo"
	}
	// The simulated household overruns 7 kW twice a day (p1/sim).
	if _, set := env.Lookup("SMARTY_REFERENCE_POWER"); !set {
		defaults["SMARTY_REFERENCE_POWER"] = "7"
	}
	env = env.With(defaults)
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	var dc DemoConfig
	if err := env.Process(&dc); err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	brokerURL := cfg.MQTTURL
	if ownBroker {
		stop, addr, err := startBroker(dc.Listen, log)
		if err != nil {
			return err
		}
		defer stop()
		brokerURL = "mqtt://" + addr
		cfg.MQTTURL = brokerURL
	}
	opts, err := cfg.bridgeOptions(log.With("part", "bridge"))
	if err != nil {
		return err
	}
	// The running quarter-hour against the reference power, as Home
	// Assistant shows it (the bridge keeps its own; this is the demo's).
	var q quarter.Tracker
	settings := quarter.Settings{ReferenceKW: cfg.ReferencePower}
	opts.OnTelegram = func(meter string, tg *p1.Telegram) {
		line := summary(meter, tg)
		if r, ok := quarter.ReadingOf(tg, time.Now()); ok {
			q.Add(r, settings)
			l, _ := q.Meter.Live()
			line += fmt.Sprintf("  quarter-hour %.3f kWh, forecast %.2f kW", l.Energy, l.Projected)
			if settings.ReferenceKW > 0 {
				line += fmt.Sprintf(" of %g kW, %.2f kW still allowed", settings.ReferenceKW, l.Allowed(settings.ReferenceKW))
			}
		}
		fmt.Fprintln(stdout, line)
	}
	opts.StateDir = "" // the simulated meter is new every run: keep its counters in memory
	// Against a broker of the user's, the demo's fake meter and device
	// go away with it.
	opts.Ephemeral = !ownBroker
	b, err := bridge.New(opts)
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "smartybridge demo: a simulated Smarty meter sends an encrypted frame every %s\n", dc.Interval)
	fmt.Fprintf(stdout, "  broker: %s%s\n", shownURL(brokerURL), map[bool]string{true: " (embedded)", false: ""}[ownBroker])
	fmt.Fprintf(stdout, "  watch:  mosquitto_sub -h %s -p %s -t '%s/#' -t '%s/#' -v\n", opts.MQTT.URL.Hostname(), opts.MQTT.URL.Port(), cfg.TopicPrefix, cfg.DiscoveryPrefix)
	fmt.Fprintf(stdout, "  Home Assistant: add the MQTT integration with this broker; the meter appears as a device.\n")
	fmt.Fprintf(stdout, "  Ctrl-C stops.\n")

	pr, pw := io.Pipe()
	meter := sim.New(sim.Options{Start: time.Now(), Counter: sim.ClockCounter(time.Now())})
	go func() {
		pw.CloseWithError(simulate(ctx, pw, meter, time.Duration(dc.Interval), 0))
	}()
	err = b.Run(ctx, bridge.Source{Reader: pr})
	_ = pr.Close() // stops the simulator; its error is ours
	return err
}

// summary is the demo's line for one telegram.
func summary(meter string, tg *p1.Telegram) string {
	val := func(code string) string {
		want, _ := p1.ParseOBIS(code)
		for i := range tg.Objects {
			if tg.Objects[i].OBIS == want {
				return string(bridge.AppendState(nil, &tg.Objects[i]))
			}
		}
		return "-"
	}
	return fmt.Sprintf("%s %s  import %s kWh  export %s kWh  power +%s/-%s kW  gas %s m³",
		time.Now().Format("15:04:05"), meter, val("1-0:1.8.0"), val("1-0:2.8.0"), val("1-0:1.7.0"), val("1-0:2.7.0"), val("0-1:24.2.1"))
}

// simulate writes the meter's frames to w every interval until ctx ends or
// count frames were written (0: no limit).
func simulate(ctx context.Context, w io.Writer, m *sim.Meter, interval time.Duration, count int) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var buf []byte
	for n := 0; count == 0 || n < count; n++ {
		buf = m.Frame(buf[:0], time.Now())
		if _, err := w.Write(buf); err != nil {
			return err
		}
		if count > 0 && n+1 == count {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	return nil
}

// runSimulate writes the simulated stream to stdout or the given path (a
// file, or a serial device to test a setup).
func runSimulate(ctx context.Context, args []string, env Env, stdout io.Writer) (err error) {
	var dc DemoConfig
	if err := env.Process(&dc); err != nil {
		return err
	}
	var keys KeyConfig
	if err := env.Process(&keys); err != nil {
		return err
	}
	o := sim.Options{Start: time.Now(), Counter: sim.ClockCounter(time.Now())}
	if keys.Key.set {
		o.Key = keys.Key.key
	}
	if keys.AuthKey.set {
		o.AuthKey = keys.AuthKey.key
	}
	w := stdout
	if len(args) > 1 {
		return configError{errors.New("simulate takes at most one path")}
	}
	if len(args) == 1 && len(args[0]) > 1 && args[0][0] == '-' {
		return configError{fmt.Errorf("simulate takes no flags, not %q: only a PATH to write to (smartybridge simulate -h)", args[0])}
	}
	if len(args) == 1 {
		f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return configError{err}
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}()
		w = f
	}
	m := sim.New(o)
	if o.Key == (decrypt.Key{}) {
		fmt.Fprintf(os.Stderr, "smartybridge simulate: meter %s, system title %s, key %s (the public demo key)\n", m.ID(), m.Title(), sim.DemoKeyHex)
	}
	return simulate(ctx, w, m, time.Duration(dc.Interval), dc.Count)
}
