package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

// Known secrets of the scan. The keys differ in every 12-digit run, so a
// run found in the output names the key it came from.
const (
	scanKey1    = "0123456789ABCDEF0123456789ABCDEF"
	scanKey2    = "FEDCBA9876543210FEDCBA9876543210"
	scanAuthKey = "A1B2C3D4E5F60718293A4B5C6D7E8F90"
	scanPass    = "hunter2-Secret"
)

// leaks reports the secrets whose 12-character runs (any case), or the
// password, stand in out.
func leaks(out string) []string {
	var found []string
	up := strings.ToUpper(out)
	for _, k := range []string{scanKey1, scanKey2, scanAuthKey} {
		for i := 0; i+12 <= len(k); i++ {
			if strings.Contains(up, k[i:i+12]) {
				found = append(found, k[i:i+12])
				break
			}
		}
	}
	if strings.Contains(out, scanPass) {
		found = append(found, "the password")
	}
	return found
}

// TestSecretsNeverPrinted runs every configuration, decode and connection
// path that handles a key or a password with known secrets, at debug
// level where there is a log, and scans everything the program wrote.
func TestSecretsNeverPrinted(t *testing.T) {
	typo := scanKey1[:31] + "Z"
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"key with a typo", map[string]string{"SMARTY_KEY": typo}, nil},
		{"key too short", map[string]string{"SMARTY_KEY": scanKey1[:30]}, nil},
		{"keys, one bad entry", map[string]string{"SMARTY_KEYS": "534147677001BD54:" + scanKey2 + ",53595354454D4944:" + typo}, nil},
		{"keys, key and title swapped", map[string]string{"SMARTY_KEYS": scanKey1 + ":534147677001BD54"}, nil},
		{"auth key with a typo", map[string]string{"SMARTY_KEY": scanKey1, "SMARTY_AUTH_KEY": scanAuthKey[:31] + "?"}, nil},
		{"password in a bad URL", map[string]string{"SMARTY_MQTT_URL": "mqtt://smarty:" + scanPass + "@broker/smarty"}, nil},
		{"password in an unparsable URL", map[string]string{"SMARTY_MQTT_URL": "mqtt://smarty:" + scanPass + "@broker:18x3"}, nil},
		{"password, scheme without //", map[string]string{"SMARTY_MQTT_URL": "mqtt//u:" + scanPass + "@host"}, nil},
		{"password, scheme with one /", map[string]string{"SMARTY_MQTT_URL": "mqtt:/u:" + scanPass + "@host"}, nil},
		{"password, scheme and colon", map[string]string{"SMARTY_MQTT_URL": "mqtt:u:" + scanPass + "@host"}, nil},
		{"password, tls scheme without //", map[string]string{"SMARTY_MQTT_URL": "mqtts//u:" + scanPass + "@host"}, nil},
		{"password, no scheme", map[string]string{"SMARTY_MQTT_URL": "u:" + scanPass + "@host:1883"}, nil},
		{"password, unbracketed IPv6", map[string]string{"SMARTY_MQTT_URL": "mqtt://u:" + scanPass + "@[::1"}, nil},
		{"password and keys with another error", map[string]string{"SMARTY_KEY": scanKey1, "SMARTY_MQTT_PASSWORD": scanPass, "SMARTY_BAUD": "fast"}, nil},
		{"decode, wrong key", map[string]string{"SMARTY_KEY": scanKey1}, []string{"decode", "testdata/smarty-2018-real.frame"}},
		{"decode, bad key", map[string]string{"SMARTY_KEY": typo}, []string{"decode", "testdata/smarty-2018-real.frame"}},
		{"confirm-key", map[string]string{"SMARTY_KEY": scanKey1}, []string{"confirm-key"}},
		{"confirm-key, bad keys", map[string]string{"SMARTY_KEYS": scanKey1 + ":x"}, []string{"confirm-key"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd, out, errb := command(tt.env, tt.args...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			timer := time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() })
			cmd.Wait()
			if !timer.Stop() {
				t.Errorf("still running after 10 s: this configuration was accepted")
			}
			if l := leaks(out.String() + errb.String()); len(l) > 0 {
				t.Errorf("printed %v:\n%s%s", l, out, errb)
			}
			if errb.Len() == 0 && out.Len() == 0 {
				t.Errorf("said nothing")
			}
		})
	}
}

// TestSecretsNeverPrintedWhileRunning: a bridge that cannot reach its
// broker (a port where nothing listens, and a broker that refuses the
// login), with the password in the URL or in its variable, logging at
// debug level; and the add-on's start-up with a bad key.
func TestSecretsNeverPrintedWhileRunning(t *testing.T) {
	pty := testenv.Socat(t)
	broker := testenv.Mosquitto(t, "allow_anonymous false\npassword_file "+emptyPasswordFile(t))
	for _, tt := range []struct {
		name string
		env  map[string]string
	}{
		{"refused port, password in the URL", map[string]string{"SMARTY_MQTT_URL": "mqtt://smarty:" + scanPass + "@127.0.0.1:1"}},
		{"refused login, password in the URL", map[string]string{"SMARTY_MQTT_URL": fmt.Sprintf("mqtt://smarty:%s@127.0.0.1:%d", scanPass, broker.Port)}},
		{"refused login, password variable", map[string]string{"SMARTY_MQTT_URL": broker.URL, "SMARTY_MQTT_USERNAME": "smarty", "SMARTY_MQTT_PASSWORD": scanPass}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_KEY": scanKey1, "SMARTY_AUTH_KEY": scanAuthKey, "SMARTY_LOG_LEVEL": "debug"}
			for k, v := range tt.env {
				env[k] = v
			}
			cmd, out, errb := command(env)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second)
			stopProcess(t, cmd)
			log := out.String() + errb.String()
			if !strings.Contains(log, "cannot connect to MQTT broker") {
				t.Errorf("no connection error logged:\n%s", log)
			}
			if l := leaks(log); len(l) > 0 {
				t.Errorf("printed %v:\n%s", l, log)
			}
		})
	}
	t.Run("add-on with a bad key", func(t *testing.T) {
		dir := t.TempDir()
		opts := filepath.Join(dir, "options.json")
		os.WriteFile(opts, []byte(`{"mode":"bridge","device":"`+pty.Device+`","key":"`+scanKey1[:31]+`x","mqtt_host":"127.0.0.1","mqtt_port":1,"mqtt_password":"`+scanPass+`","mqtt_username":"u","baud":115200,"topic_prefix":"smarty","discovery_prefix":"homeassistant","discovery":"device","meter_timeout":60,"log_level":"debug"}`), 0o600)
		cmd, out, errb := command(map[string]string{"SMARTY_ADDON_OPTIONS": opts, "SMARTY_STATE_DIR": dir}, "addon")
		cmd.Run()
		log := out.String() + errb.String()
		if !strings.Contains(log, "“Decryption key”") { // the add-on's option, as its configuration page names it
			t.Errorf("the bad key was not reported:\n%s", log)
		}
		if l := leaks(log); len(l) > 0 {
			t.Errorf("printed %v:\n%s", l, log)
		}
	})
}

func emptyPasswordFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(p, nil, 0o644)
	return p
}

// TestDemoHidesTheLogin: the demo's banner names the broker without its
// password.
func TestDemoHidesTheLogin(t *testing.T) {
	cmd, out, errb := command(map[string]string{"SMARTY_MQTT_URL": "mqtt://u:" + scanPass + "@127.0.0.1:1", "SMARTY_DEMO_INTERVAL": "100ms"}, "demo")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "broker:") })
	stopProcess(t, cmd)
	if l := leaks(out.String() + errb.String()); len(l) > 0 {
		t.Errorf("printed %v:\n%s%s", l, out, errb)
	}
	if !strings.Contains(out.String(), "mqtt://xxxxx@127.0.0.1:1") {
		t.Errorf("banner: %s", out)
	}
}
