package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestReferencePowerEndToEnd runs the real binary over a pty with a meter
// whose clock runs far faster than the wall clock: six hours of the night
// summer time ends (2026-10-25, 02:40 CEST to 07:40 CET), a telegram every
// 30 s of the meter's time, written as fast as the line takes them. The
// quarter-hour entities follow the meter's clock: what they say at the end
// is what `quarters` computes from the same bytes, the water heater's
// 07:15 CET quarter overruns 7 kW, and the month's peak carries its
// winter-time offset. The reference power set through its command topic
// is kept across a restart, until the start-up value changes.
func TestReferencePowerEndToEnd(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	state := t.TempDir()
	sub := testenv.Subscribe(t, broker.URL, "smarty/#")
	env := map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": sim.DemoKeyHex,
		"SMARTY_STATE_DIR": state, "SMARTY_MQTT_CLIENT_ID": "quarters", "SMARTY_REFERENCE_POWER": "7", "SMARTY_OVERRUN_PRICE": "0.1139"}
	cmd, logs := startBinary(t, env)
	testenv.WaitFor(t, 10*time.Second, "connected", func() bool { return strings.Contains(logs.String(), "connected to MQTT broker") })

	start := time.Date(2026, 10, 25, 0, 40, 0, 0, time.UTC)
	m := sim.New(sim.Options{Start: start, Counter: 1})
	q := "smarty/" + m.ID() + "/quarter/"
	var capture bytes.Buffer
	at := start
	for ; at.Before(start.Add(6 * time.Hour)); at = at.Add(30 * time.Second) {
		f := m.Frame(nil, at)
		capture.Write(f)
		pty.Write(f)
		time.Sleep(time.Millisecond)
	}
	testenv.WaitFor(t, 30*time.Second, "the last telegram's quarter", func() bool {
		v, _ := sub.Get("smarty/" + m.ID() + "/0-0:1.0.0")
		return v == "2026-10-25T07:39:30+01:00"
	})

	// The same bytes through `quarters`.
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"quarters", "-reference-power", "7"}, processEnv().With(map[string]string{"SMARTY_KEY": sim.DemoKeyHex}),
		bytes.NewReader(capture.Bytes()), &out, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	var last struct {
		Start      string  `json:"start"`
		EnergyKWh  float64 `json:"energy_kwh"`
		OverrunKWh float64 `json:"overrun_kwh"`
	}
	overrun, n := 0.0, 0
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatal(err)
		}
		overrun += last.OverrunKWh
		n++
	}
	if last.Start != "2026-10-25T07:15:00+01:00" || last.OverrunKWh <= 0 {
		t.Fatalf("quarters ends with %+v, want the overrunning 07:15 CET quarter", last)
	}
	num := func(key string) float64 {
		v, ok := sub.Get(q + key)
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			t.Fatalf("%s%s = %q", q, key, v)
		}
		return f
	}
	for key, want := range map[string]float64{"last_energy": last.EnergyKWh, "last_overrun": last.OverrunKWh, "overrun_today": overrun,
		"cost_today": overrun * 0.1139, "last_average_power": last.EnergyKWh * 4} {
		if got := num(key); math.Abs(got-want) > 0.006 {
			t.Errorf("%s = %v, want %.4f (quarters, %d quarter-hours)", key, got, want, n)
		}
	}
	if v, _ := sub.Get(q + "peak_month/attributes"); v != `{"start":"2026-10-25T07:15:00+01:00"}` {
		t.Errorf("peak attributes %s, want the 07:15 CET quarter", v)
	}
	for topic, want := range map[string]string{q + "has_reference": "online", q + "has_price": "online",
		"smarty/" + m.ID() + "/reference_power": "7", "smarty/" + m.ID() + "/overrun_price": "0.1139"} {
		if v, _ := sub.Get(topic); v != want {
			t.Errorf("%s = %q, want %q", topic, v, want)
		}
	}

	// The household sets 12 kW in Home Assistant; a hostile or broken
	// client's nonsense is ignored.
	set := func(setting, v string) {
		if _, err := sub.Client.Publish(context.Background(), &paho.Publish{Topic: "smarty/" + m.ID() + "/" + setting + "/set", Payload: []byte(v), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	set("reference_power", "abc")
	set("reference_power", "-1")
	set("overrun_price", "1e9")
	set("reference_power", "12")
	sub.WaitValue("smarty/"+m.ID()+"/reference_power", "12", 10*time.Second)
	if n := strings.Count(logs.String(), "ignored a setting"); n < 1 {
		t.Errorf("nonsense settings not said:\n%s", logs.String())
	}
	if v, _ := sub.Get("smarty/" + m.ID() + "/overrun_price"); v != "0.1139" {
		t.Errorf("the price became %q", v)
	}
	stopProcess(t, cmd)
	if _, err := os.Stat(filepath.Join(state, "quarters.json")); err != nil {
		t.Fatalf("no saved quarters: %v", err)
	}

	// Kept across a restart with the same start-up value...
	next := func() {
		at = at.Add(30 * time.Second)
		pty.Write(m.Frame(nil, at))
	}
	before := sub.N("smarty/" + m.ID() + "/reference_power")
	cmd, logs = startBinary(t, env)
	testenv.WaitFor(t, 10*time.Second, "connected", func() bool { return strings.Contains(logs.String(), "connected to MQTT broker") })
	next()
	testenv.WaitFor(t, 10*time.Second, "the settings again", func() bool { return sub.N("smarty/"+m.ID()+"/reference_power") > before })
	if v, _ := sub.Get("smarty/" + m.ID() + "/reference_power"); v != "12" {
		t.Errorf("after a restart the reference power is %q, want 12 (set in Home Assistant)", v)
	}
	stopProcess(t, cmd)
	// ...until the start-up value changes.
	env["SMARTY_REFERENCE_POWER"] = "9"
	_, logs = startBinary(t, env)
	testenv.WaitFor(t, 10*time.Second, "connected", func() bool { return strings.Contains(logs.String(), "connected to MQTT broker") })
	next()
	sub.WaitValue("smarty/"+m.ID()+"/reference_power", "9", 10*time.Second)
}
