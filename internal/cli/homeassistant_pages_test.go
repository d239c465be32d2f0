//go:build linux

package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// TestHomeAssistantPages puts a meter into a real Home Assistant with its
// frontend and takes screenshots, in headless Chromium, of what a
// household sees: the meter's device page at 18:36, six minutes into a
// quarter-hour in which the car charges at 11 kW against a reference power
// of 7 kW. A person looks at them: it runs only when SMARTY_SCREENSHOTS
// names a directory (apt-get install chromium).
func TestHomeAssistantPages(t *testing.T) {
	dir := os.Getenv("SMARTY_SCREENSHOTS")
	if dir == "" {
		t.Skip("set SMARTY_SCREENSHOTS=DIR to take screenshots of Home Assistant's pages")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("no chromium: apt-get install chromium")
	}
	root := testenv.NeedHomeAssistant(t)
	broker := testenv.Mosquitto(t, "")
	ha := testenv.NewHomeAssistant(t, root, haConfig+"frontend:\nconfig:\n", map[string]string{"www/.keep": ""})
	ha.Start()
	ha.OnboardAll()
	ha.AddMQTT(broker.Port)
	pty := testenv.Socat(t)
	startBinary(t, map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": sim.DemoKeyHex,
		"SMARTY_MQTT_CLIENT_ID": "smartybridge-home", "SMARTY_REFERENCE_POWER": "7", "SMARTY_OVERRUN_PRICE": "0.1139",
		"SMARTY_STATE_DIR": t.TempDir()})

	// Two hours of the meter's day up to 18:36, fast, then on in real time.
	lux := time.FixedZone("CET", 3600)
	now := time.Date(2026, 12, 7, 16, 36, 0, 0, lux)
	m := sim.New(sim.Options{Start: now, Counter: 1})
	for at := now; at.Before(now.Add(2 * time.Hour)); at = at.Add(10 * time.Second) {
		pty.Write(m.Frame(nil, at))
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		at := now.Add(2 * time.Hour)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			pty.Write(m.Frame(nil, at))
			at = at.Add(time.Second)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	expected := "binary_sensor.smarty_" + "sag1100000000001" + "_overrun_expected"
	testenv.WaitFor(t, 60*time.Second, "an overrun expected in Home Assistant", func() bool { return ha.States()[expected].State == "on" })
	devs := devicesOf(haDevices(ha), m.ID())
	if len(devs) != 1 {
		t.Fatalf("%d devices", len(devs))
	}

	// The frontend keeps its tokens in localStorage: a page on Home
	// Assistant's own origin (/local/) puts the test's token there and
	// goes on to the device page.
	tokens, _ := json.Marshal(map[string]any{"access_token": ha.Token, "token_type": "Bearer", "expires_in": 86400, "hassUrl": ha.URL,
		"clientId": ha.URL + "/", "expires": time.Now().Add(24 * time.Hour).UnixMilli(), "refresh_token": ""})
	shoot := func(name, path string, height int) {
		page := fmt.Sprintf(`<script>localStorage.setItem("hassTokens", %q); location.replace(%q)</script>`, tokens, path)
		if err := os.WriteFile(filepath.Join(ha.Config, "www", name+".html"), []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, name+".png")
		cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
			fmt.Sprintf("--window-size=1280,%d", height), "--virtual-time-budget=25000", "--screenshot="+out, ha.URL+"/local/"+name+".html")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, b)
		}
		t.Logf("%s: %s", name, out)
	}
	shoot("meter-device", "/config/devices/device/"+devs[0].ID, 2600)
	bridges := devicesOf(haDevices(ha), discovery.BridgeID("smartybridge-home"))
	if len(bridges) != 1 {
		t.Fatalf("%d bridge devices", len(bridges))
	}
	shoot("bridge-device", "/config/devices/device/"+bridges[0].ID, 1600)
}
