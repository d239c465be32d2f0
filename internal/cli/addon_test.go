package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

func loadAddonConfig(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("addon/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// supervisorType is the Supervisor's option type grammar.
var supervisorType = regexp.MustCompile(`^(bool|email|url|port|device|device\(subsystem=[a-z0-9_]+\)|str|str\(\d*,\d*\)|password|int(\(-?\d*,-?\d*\))?|float(\(-?[\d.]*,-?[\d.]*\))?|match\(.+\)|list\([^|()]+(\|[^|()]+)*\))\??$`)

// configVariables lists every SMARTY_* variable of the bridge's
// configuration (the demo's are not the add-on's business).
func configVariables() map[string]bool {
	vars := map[string]bool{}
	for _, v := range envVariables(reflect.TypeOf(Config{})) {
		vars[v.name] = true
	}
	return vars
}

func TestAddonConfig(t *testing.T) {
	cfg := loadAddonConfig(t)
	var linter struct {
		Properties map[string]map[string]any `json:"properties"`
		Required   []string                  `json:"required"`
	}
	b, _ := os.ReadFile("testdata/ha/addon-config-schema.json")
	if err := json.Unmarshal(b, &linter); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(linter.Required, "url", "options", "schema", "services", "image") {
		if _, ok := cfg[k]; !ok {
			t.Errorf("config.yaml lacks %s", k)
		}
	}
	for k, v := range cfg {
		prop, known := linter.Properties[k]
		if !known {
			t.Errorf("config.yaml key %s is unknown to the add-on linter", k)
			continue
		}
		if def, ok := prop["default"]; ok && fmt.Sprint(def) == fmt.Sprint(v) {
			t.Errorf("config.yaml key %s equals its default %v: the linter rejects it", k, def)
		}
	}
	if _, ok := cfg["watchdog"]; ok {
		t.Error("no watchdog: the HEALTHCHECK covers process and broker")
	}
	if v := cfg["version"]; v != version {
		t.Errorf("config.yaml version %v, binary %s", v, version)
	}
	if arch := fmt.Sprint(cfg["arch"]); arch != "[aarch64 amd64]" {
		t.Errorf("arch %s", arch)
	}
	if !slices.Contains(cfg["services"].([]any), any("mqtt:need")) {
		t.Error("services lacks mqtt:need")
	}

	schema := cfg["schema"].(map[string]any)
	options := cfg["options"].(map[string]any)
	known := configVariables()
	for name, typ := range schema {
		if !supervisorType.MatchString(fmt.Sprint(typ)) {
			t.Errorf("schema %s: %q is not a Supervisor type", name, typ)
		}
		v, ok := addonVariables[name]
		if !ok || !known[v] {
			t.Errorf("option %s maps to no variable the binary knows (%q)", name, v)
		}
		if !strings.HasSuffix(fmt.Sprint(typ), "?") {
			if _, ok := options[name]; !ok {
				t.Errorf("required option %s has no value in options", name)
			}
		}
	}
	for name, val := range options {
		typ, ok := schema[name]
		if !ok {
			t.Errorf("option %s has no schema", name)
			continue
		}
		if m := regexp.MustCompile(`^list\((.*)\)\??$`).FindStringSubmatch(fmt.Sprint(typ)); m != nil && !slices.Contains(strings.Split(m[1], "|"), fmt.Sprint(val)) {
			t.Errorf("option %s = %v is not in %s", name, val, typ)
		}
	}
	mapped := map[string]bool{}
	for _, v := range addonVariables {
		mapped[v] = true
	}
	for v := range known {
		if _, internal := addonInternal[v]; !mapped[v] && !internal {
			t.Errorf("%s has no add-on option", v)
		}
	}
}

func TestAddonFiles(t *testing.T) {
	for _, f := range []string{"repository.yaml", "addon/Dockerfile", "addon/DOCS.md", "addon/README.md", "addon/CHANGELOG.md",
		"addon/translations/en.yaml", "addon/apparmor.txt", "addon/icon.png", "addon/logo.png"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	// English, French, German and Luxembourgish (Luxembourg's households
	// read all four): every option named and described, and nothing else.
	schema := loadAddonConfig(t)["schema"].(map[string]any)
	for _, lang := range []string{"en", "fr", "de", "lb"} {
		b, err := os.ReadFile("addon/translations/" + lang + ".yaml")
		if err != nil {
			t.Error(err)
			continue
		}
		var tr struct {
			Configuration map[string]struct{ Name, Description string } `yaml:"configuration"`
		}
		if err := yaml.Unmarshal(b, &tr); err != nil {
			t.Fatalf("%s: %v", lang, err)
		}
		for name := range schema {
			if c := tr.Configuration[name]; c.Name == "" || c.Description == "" {
				t.Errorf("translations/%s.yaml: no name or description for %s", lang, name)
			}
		}
		for name := range tr.Configuration {
			if _, ok := schema[name]; !ok {
				t.Errorf("translations/%s.yaml: %s is not an option", lang, name)
			}
		}
	}
	apparmor, _ := os.ReadFile("addon/apparmor.txt")
	if !strings.Contains(string(apparmor), "profile smartybridge ") || !strings.Contains(string(apparmor), "/dev/ttyUSB* rw") {
		t.Error("apparmor.txt: profile must be named after the slug and allow the serial devices")
	}
}

// TestDockerfile stands in for hadolint (not packaged here): pinned bases,
// a static binary, a health check, and the add-on entry point.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("addon/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) != 2 {
		t.Fatalf("want a build stage and a run stage, got %d FROM lines", len(froms))
	}
	for _, m := range froms {
		image := m[1]
		tag := image[strings.LastIndexByte(image, ':')+1:]
		if !strings.Contains(image, ":") || tag == "latest" || !regexp.MustCompile(`\d`).MatchString(tag) || strings.Contains(image, "$") {
			t.Errorf("FROM %s is not pinned to a version", image)
		}
	}
	if !strings.HasPrefix(froms[1][1], "ghcr.io/home-assistant/base:") {
		t.Errorf("run stage %s: want ghcr.io/home-assistant/base", froms[1][1])
	}
	for _, want := range []string{"CGO_ENABLED=0", "GOARCH=$TARGETARCH", "-tags nodemo", "HEALTHCHECK", `"/usr/bin/smartybridge", "health"`, `ENTRYPOINT ["/usr/bin/smartybridge", "addon"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	if strings.Contains(df, "BUILD_FROM") {
		t.Error("Dockerfile uses BUILD_FROM, which the Supervisor no longer passes")
	}
}

// fakeSupervisor answers /services/mqtt like the Supervisor does.
func fakeSupervisor(t *testing.T, svc mqttService, calls *int) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*calls++
		if r.URL.Path != "/services/mqtt" || r.Header.Get("Authorization") != "Bearer test-token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"result": "ok", "data": svc})
	}))
	t.Cleanup(s.Close)
	return s
}

func TestAddonStartupMapping(t *testing.T) {
	svc := mqttService{Host: "core-mosquitto", Port: 1883, Username: "addons", Password: "broker-secret"}
	base, _ := os.ReadFile("testdata/addon/options.json")
	with := func(extra string) string {
		return strings.TrimSuffix(strings.TrimSpace(string(base)), "}") + extra + "}"
	}
	tests := []struct {
		name      string
		options   string
		want      map[string]string
		calls     int
		wantError string
	}{
		{"broker from the Supervisor", string(base), map[string]string{
			"SMARTY_MQTT_URL": "mqtt://core-mosquitto:1883", "SMARTY_MQTT_USERNAME": "addons", "SMARTY_MQTT_PASSWORD": "broker-secret",
			"SMARTY_KEY": "D491470F47126332B07D1923B3504188", "SMARTY_DEVICE": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1ABC-if00-port0",
			"SMARTY_STATE_DIR": "/data", "SMARTY_MODE": "bridge", "SMARTY_METER_TIMEOUT": "60s",
		}, 1, ""},
		{"override wins", with(`,"mqtt_host":"broker.lan","mqtt_port":8883,"mqtt_tls":true,"mqtt_username":"me","mqtt_password":"mine"`), map[string]string{
			"SMARTY_MQTT_URL": "mqtts://broker.lan:8883", "SMARTY_MQTT_USERNAME": "me", "SMARTY_MQTT_PASSWORD": "mine",
		}, 0, ""},
		{"a broker cluster", with(`,"mqtt_host":"n1.lan, n2.lan,10.0.0.3:1884","mqtt_username":"op","mqtt_password":"pw"`), map[string]string{
			"SMARTY_MQTT_URL": "mqtt://n1.lan:1883,mqtt://n2.lan:1883,mqtt://10.0.0.3:1884",
		}, 0, ""},
		{"network dongle", with(`,"tcp_address":"192.0.2.7:2000"`), map[string]string{"SMARTY_DEVICE": "tcp://192.0.2.7:2000"}, 1, ""},
		{"reference power", with(`,"reference_power":7,"overrun_price":0.1139`), map[string]string{
			"SMARTY_REFERENCE_POWER": "7", "SMARTY_OVERRUN_PRICE": "0.1139"}, 1, ""},
		{"decrypt mode, share group", with(`,"mode":"decrypt","device":"","share_group":"lux","session_expiry":48`), map[string]string{
			"SMARTY_MODE": "decrypt", "SMARTY_SHARE_GROUP": "lux", "SMARTY_SESSION_EXPIRY": "48h"}, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			s := fakeSupervisor(t, svc, &calls)
			opts := t.TempDir() + "/options.json"
			// A later key wins in encoding/json: the cases override fields.
			os.WriteFile(opts, []byte(tt.options), 0o600)
			outside := processEnv().With(map[string]string{"SMARTY_ADDON_OPTIONS": opts, "SUPERVISOR_URL": s.URL, "SUPERVISOR_TOKEN": "test-token"})
			var logs bytes.Buffer
			env, err := loadAddonEnv(context.Background(), outside, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if env[k] != v {
					t.Errorf("%s = %q, want %q", k, env[k], v)
				}
			}
			if calls != tt.calls {
				t.Errorf("%d Supervisor calls, want %d", calls, tt.calls)
			}
			for _, secret := range []string{"D491470F47126332B07D1923B3504188", "broker-secret", "mine"} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("log shows a secret: %s", logs.String())
				}
			}
			// The binary accepts what the add-on sets.
			if _, err := loadConfig(outside.With(env)); err != nil {
				t.Errorf("the binary rejects the add-on's environment: %v", err)
			}
		})
	}
	t.Run("no broker anywhere", func(t *testing.T) {
		opts := t.TempDir() + "/options.json"
		os.WriteFile(opts, base, 0o600)
		outside := processEnv().With(map[string]string{"SMARTY_ADDON_OPTIONS": opts, "SUPERVISOR_URL": "http://127.0.0.1:1"})
		_, err := loadAddonEnv(context.Background(), outside, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "Mosquitto broker add-on") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestAddonEndToEnd runs `smartybridge addon` as the container would, with
// a fake Supervisor that points at a real broker, and stops it with SIGTERM.
func TestAddonEndToEnd(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	calls := 0
	s := fakeSupervisor(t, mqttService{Host: "127.0.0.1", Port: broker.Port}, &calls)
	dir := t.TempDir()
	os.WriteFile(dir+"/options.json", []byte(`{"mode":"bridge","device":"`+pty.Device+`","key":"`+testKey+`","baud":115200,"topic_prefix":"smarty","discovery_prefix":"homeassistant","discovery":"device","meter_timeout":60,"log_level":"info"}`), 0o600)
	health := dir + "/health"
	sub := testenv.Subscribe(t, broker.URL, "smarty/#")
	cmd, _, stderr := command(map[string]string{"SMARTY_ADDON_OPTIONS": dir + "/options.json", "SUPERVISOR_URL": s.URL,
		"SUPERVISOR_TOKEN": "test-token", "SMARTY_HEALTH_FILE": health, "SMARTY_STATE_DIR": dir}, "addon")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The client id is made up: smartybridge-<mode>-<host>-<suffix>.
	var status string
	testenv.WaitFor(t, 10*time.Second, "status online", func() bool {
		for topic, v := range sub.Topics("smarty/status/smartybridge-bridge-") {
			if v == "online" {
				status = topic
			}
		}
		return status != ""
	})
	suffix, err := os.ReadFile(dir + "/client-id-suffix")
	if err != nil || !strings.HasSuffix(status, "-"+strings.TrimSpace(string(suffix))) {
		t.Errorf("status topic %s does not end in the suffix kept in the state directory (%q, %v)", status, suffix, err)
	}
	frame, _ := os.ReadFile("testdata/smarty-2026.frame")
	pty.Write(frame)
	sub.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 5*time.Second)
	stopProcess(t, cmd) // SIGTERM, then a clean exit 0
	sub.WaitValue(status, "offline", 5*time.Second)
	if b, _ := os.ReadFile(health); !strings.HasPrefix(string(b), "up ") {
		t.Errorf("health file %q, want up", b)
	}
	if calls != 1 {
		t.Errorf("%d Supervisor calls", calls)
	}
	if strings.Contains(stderr.String(), testKey) {
		t.Error("the key is in the add-on's log")
	}
}

func TestHealth(t *testing.T) {
	f := t.TempDir() + "/health"
	env := processEnv().With(map[string]string{"SMARTY_HEALTH_FILE": f})
	var out bytes.Buffer
	if runHealth(env, &out) == nil {
		t.Error("healthy without a state file")
	}
	os.WriteFile(f, fmt.Appendf(nil, "up %d\n", time.Now().Unix()), 0o644)
	if err := runHealth(env, &out); err != nil {
		t.Errorf("connected: %v", err)
	}
	os.WriteFile(f, fmt.Appendf(nil, "down %d\n", time.Now().Add(-time.Minute).Unix()), 0o644)
	if err := runHealth(env, &out); err != nil {
		t.Errorf("lost a minute ago, within grace: %v", err)
	}
	os.WriteFile(f, fmt.Appendf(nil, "down %d\n", time.Now().Add(-10*time.Minute).Unix()), 0o644)
	if runHealth(env, &out) == nil {
		t.Error("healthy ten minutes after losing the broker")
	}
	// The file of a process that is gone says nothing.
	dead := exec.Command("true")
	dead.Run()
	os.WriteFile(f, fmt.Appendf(nil, "up %d %d\n", time.Now().Unix(), dead.Process.Pid), 0o644)
	if err := runHealth(env, &out); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("healthy after the process died: %v", err)
	}
	os.WriteFile(f, fmt.Appendf(nil, "up %d %d\n", time.Now().Unix(), os.Getpid()), 0o644)
	if err := runHealth(env, &out); err != nil {
		t.Errorf("running process: %v", err)
	}
}
