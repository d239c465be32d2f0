package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// HomeAssistantSetup is the script that provisions the Home Assistant core
// the tests run, relative to the repository root.
const HomeAssistantSetup = "tools/homeassistant/setup.sh"

// HomeAssistantRoot is where setup.sh puts Home Assistant's root file
// system: $SMARTY_HA_CACHE/root, by default under /var/cache.
func HomeAssistantRoot() string {
	return filepath.Join(cacheDir("SMARTY_HA_CACHE", "homeassistant"), "root")
}

// cacheDir is where a setup script keeps what it provisions: $env, or
// /var/cache/smartybridge/name.
func cacheDir(env, name string) string {
	if d := os.Getenv(env); d != "" {
		return d
	}
	return filepath.Join("/var/cache/smartybridge", name)
}

// NeedHomeAssistant returns the provisioned root, or skips the test with a
// message naming the setup script; under CI=true a missing Home Assistant
// fails the test instead, so that CI cannot pass without running it.
func NeedHomeAssistant(t testing.TB) string {
	t.Helper()
	root := HomeAssistantRoot()
	why := ""
	switch {
	case testing.Short():
		why = "-short"
	case os.Geteuid() != 0:
		why = "not root (Home Assistant runs in a chroot); run the test as root"
	default:
		if _, err := os.Stat(filepath.Join(root, "opt/ha/bin/hass")); err != nil {
			why = "no Home Assistant in " + root + "; run sudo " + HomeAssistantSetup
		}
	}
	if why != "" {
		unprovisioned(t, "Home Assistant test", why)
	}
	return root
}

// HomeAssistant is a Home Assistant core process in the provisioned root,
// with its configuration in a temp dir of the test, listening on
// 127.0.0.1.
type HomeAssistant struct {
	t      testing.TB
	root   string
	Config string // the configuration directory on the host
	Port   int
	URL    string // http://127.0.0.1:PORT
	Token  string // a long-lived access token of the owner
	cmd    *exec.Cmd
	done   chan struct{}
	past   []byte // the logs of earlier runs: each start rotates the file

	mu   sync.Mutex
	ws   *websocket.Conn
	next int
}

// NewHomeAssistant writes configuration.yaml (the given YAML after the
// http section) and the files of extra (path → content) into a new config
// dir. Start runs it.
func NewHomeAssistant(t testing.TB, root, yaml string, extra map[string]string) *HomeAssistant {
	t.Helper()
	ha := &HomeAssistant{t: t, root: root, Config: t.TempDir(), Port: FreePort(t)}
	ha.URL = fmt.Sprintf("http://127.0.0.1:%d", ha.Port)
	files := map[string]string{
		"configuration.yaml": fmt.Sprintf("http:\n  server_host: 127.0.0.1\n  server_port: %d\n%s", ha.Port, yaml),
	}
	for k, v := range extra {
		files[k] = v
	}
	for name, content := range files {
		p := filepath.Join(ha.Config, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ha.Stop()
		if t.Failed() {
			t.Logf("Home Assistant's log, last lines:\n%s", ha.tail("home-assistant.log", 40))
			// The whole log outlives the temp dir, for reading after.
			keep := filepath.Join(os.TempDir(), fmt.Sprintf("smartybridge-ha-%d.log", time.Now().Unix()))
			if os.WriteFile(keep, ha.past, 0o644) == nil {
				t.Logf("Home Assistant's whole log (every run): %s", keep)
			}
		}
	})
	return ha
}

// Start runs Home Assistant and waits until its HTTP server answers. It
// runs chrooted in a private mount namespace, where the config dir, /proc
// and /dev are mounted; they go away with the process.
func (ha *HomeAssistant) Start() {
	ha.t.Helper()
	script := `set -e
mount --bind "$1" "$2/config"
mount -t proc proc "$2/proc"
mount --rbind /dev "$2/dev"
exec chroot "$2" /opt/ha/bin/hass -c /config --skip-pip`
	ha.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", ha.Config, ha.root)
	ha.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TZ=UTC"}
	out, err := os.OpenFile(filepath.Join(ha.Config, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		ha.t.Fatal(err)
	}
	defer func() { _ = out.Close() }()
	ha.cmd.Stdout, ha.cmd.Stderr = out, out
	if err := ha.cmd.Start(); err != nil {
		ha.t.Fatal(err)
	}
	ha.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(ha.cmd, ha.done)
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(ha.URL + "/api/onboarding")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case <-ha.done:
			ha.t.Fatalf("Home Assistant exited at start:\n%s", ha.tail("stdout.log", 40))
		default:
		}
		if time.Now().After(deadline) {
			ha.t.Fatalf("Home Assistant did not answer in 90 s:\n%s", ha.tail("stdout.log", 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ha.Token != "" {
		ha.WaitRunning()
	}
}

// Stop stops Home Assistant as a service manager would (SIGTERM) and waits.
func (ha *HomeAssistant) Stop() {
	ha.mu.Lock()
	if ha.ws != nil {
		_ = ha.ws.Close()
		ha.ws = nil
	}
	ha.mu.Unlock()
	if ha.cmd == nil || ha.cmd.Process == nil {
		return
	}
	_ = ha.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ha.done:
	case <-time.After(60 * time.Second):
		_ = ha.cmd.Process.Kill()
		<-ha.done
	}
	ha.cmd = nil
	b, _ := os.ReadFile(filepath.Join(ha.Config, "home-assistant.log"))
	ha.past = append(ha.past, b...)
}

func (ha *HomeAssistant) tail(name string, n int) string {
	b, _ := os.ReadFile(filepath.Join(ha.Config, name))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Onboard creates the owner through Home Assistant's onboarding API, logs
// in with the code it returns and makes a long-lived access token, which
// every later call uses.
func (ha *HomeAssistant) Onboard() { ha.t.Helper(); ha.onboard(false) }

// OnboardAll onboards as Onboard does, then completes the remaining steps
// (location, analytics, integrations), so that the frontend shows its
// pages rather than the onboarding. The location step sets up
// integrations that reach out to the internet and log their failures.
func (ha *HomeAssistant) OnboardAll() { ha.t.Helper(); ha.onboard(true) }

func (ha *HomeAssistant) onboard(all bool) {
	ha.t.Helper()
	clientID := ha.URL + "/"
	var user struct {
		AuthCode string `json:"auth_code"`
	}
	ha.post("/api/onboarding/users", map[string]any{
		"client_id": clientID, "name": "Test Owner", "username": "owner",
		"password": "a test password, not a secret", "language": "en",
	}, &user)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {user.AuthCode}, "client_id": {clientID}}
	resp, err := http.PostForm(ha.URL+"/auth/token", form)
	if err != nil {
		ha.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		ha.t.Fatalf("auth/token: %v (HTTP %d)", err, resp.StatusCode)
	}
	ha.Token = tok.AccessToken
	if all {
		ha.post("/api/onboarding/core_config", map[string]any{}, nil)
		ha.post("/api/onboarding/analytics", map[string]any{}, nil)
		ha.post("/api/onboarding/integration", map[string]any{"client_id": clientID, "redirect_uri": clientID + "?auth_callback=1"}, nil)
	}
	var long string
	ha.WS(map[string]any{"type": "auth/long_lived_access_token", "client_name": "smartybridge test", "lifespan": 30}, &long)
	ha.closeWS()
	ha.Token = long
	// Home Assistant 2026.11 takes the http: block of configuration.yaml
	// as a trial and goes back to its defaults (port 8123) after five
	// minutes unless it is promoted (components/http/config.py): a longer
	// test would lose its server.
	if err := ha.TryWS(map[string]any{"type": "http/config/promote"}, nil); err != nil {
		ha.t.Logf("http/config/promote: %v (no trial to promote)", err)
	}
	ha.WaitRunning()
}

// WaitRunning waits until Home Assistant has finished starting.
func (ha *HomeAssistant) WaitRunning() {
	ha.t.Helper()
	WaitFor(ha.t, 90*time.Second, "Home Assistant running", func() bool {
		var cfg struct{ State string }
		return ha.tryGet("/api/config", &cfg) == nil && cfg.State == "RUNNING"
	})
}

// AddMQTT creates the MQTT config entry through the config flow, as a user
// does in Settings → Devices & services.
func (ha *HomeAssistant) AddMQTT(port int) {
	ha.t.Helper()
	var flow struct {
		FlowID string `json:"flow_id"`
		Type   string `json:"type"`
		StepID string `json:"step_id"`
	}
	ha.post("/api/config/config_entries/flow", map[string]any{"handler": "mqtt", "show_advanced_options": false}, &flow)
	for range 3 {
		if flow.Type == "create_entry" {
			return
		}
		if flow.Type != "form" {
			ha.t.Fatalf("MQTT config flow: %+v", flow)
		}
		ha.post("/api/config/config_entries/flow/"+flow.FlowID, map[string]any{"broker": "127.0.0.1", "port": port, "other_settings": map[string]any{"set_client_cert": false, "set_ca_cert": "off"}}, &flow)
	}
	ha.t.Fatalf("MQTT config flow did not finish: %+v", flow)
}

func (ha *HomeAssistant) request(method, path string, body any, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, ha.URL+path, r)
	req.Header.Set("Content-Type", "application/json")
	if ha.Token != "" {
		req.Header.Set("Authorization", "Bearer "+ha.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (ha *HomeAssistant) post(path string, body, out any) {
	ha.t.Helper()
	if err := ha.request("POST", path, body, out); err != nil {
		ha.t.Fatal(err)
	}
}

func (ha *HomeAssistant) tryGet(path string, out any) error {
	return ha.request("GET", path, nil, out)
}

// Get calls the REST API.
func (ha *HomeAssistant) Get(path string, out any) {
	ha.t.Helper()
	if err := ha.tryGet(path, out); err != nil {
		ha.t.Fatal(err)
	}
}

// Service calls a service through the REST API.
func (ha *HomeAssistant) Service(domain, service string, data map[string]any) {
	ha.t.Helper()
	if data == nil {
		data = map[string]any{}
	}
	ha.post("/api/services/"+domain+"/"+service, data, nil)
}

// State is one entity's state as the REST API gives it.
type State struct {
	EntityID   string         `json:"entity_id"`
	State      string         `json:"state"`
	Attributes map[string]any `json:"attributes"`
}

// States returns every state by entity id.
func (ha *HomeAssistant) States() map[string]State {
	ha.t.Helper()
	var list []State
	ha.Get("/api/states", &list)
	m := make(map[string]State, len(list))
	for _, s := range list {
		m[s.EntityID] = s
	}
	return m
}

// WS sends one command over the WebSocket API (connecting and
// authenticating first) and decodes its result into out.
func (ha *HomeAssistant) WS(cmd map[string]any, out any) {
	ha.t.Helper()
	if err := ha.TryWS(cmd, out); err != nil {
		ha.t.Fatal(err)
	}
}

// TryWS is WS that returns the error.
func (ha *HomeAssistant) TryWS(cmd map[string]any, out any) error {
	ha.mu.Lock()
	defer ha.mu.Unlock()
	if ha.ws == nil {
		if err := ha.dialWS(); err != nil {
			return err
		}
	}
	ha.next++
	id := ha.next
	msg := map[string]any{"id": id}
	for k, v := range cmd {
		msg[k] = v
	}
	_ = ha.ws.NetConn().SetDeadline(time.Now().Add(60 * time.Second))
	if err := ha.ws.WriteJSON(msg); err != nil {
		_ = ha.ws.Close()
		ha.ws = nil
		return err
	}
	for {
		var res struct {
			ID      int             `json:"id"`
			Type    string          `json:"type"`
			Success bool            `json:"success"`
			Result  json.RawMessage `json:"result"`
			Error   json.RawMessage `json:"error"`
		}
		if err := ha.ws.ReadJSON(&res); err != nil {
			_ = ha.ws.Close()
			ha.ws = nil
			return err
		}
		if res.ID != id || res.Type != "result" {
			continue
		}
		if !res.Success {
			return fmt.Errorf("%v: %s", cmd["type"], res.Error)
		}
		if out == nil {
			return nil
		}
		return json.Unmarshal(res.Result, out)
	}
}

func (ha *HomeAssistant) dialWS() error {
	c, _, err := websocket.DefaultDialer.Dial(strings.Replace(ha.URL, "http", "ws", 1)+"/api/websocket", nil)
	if err != nil {
		return err
	}
	_ = c.NetConn().SetDeadline(time.Now().Add(30 * time.Second))
	var m struct{ Type string }
	if err := c.ReadJSON(&m); err != nil || m.Type != "auth_required" {
		_ = c.Close()
		return fmt.Errorf("websocket: %v %q", err, m.Type)
	}
	if err := c.WriteJSON(map[string]string{"type": "auth", "access_token": ha.Token}); err != nil {
		_ = c.Close()
		return err
	}
	if err := c.ReadJSON(&m); err != nil || m.Type != "auth_ok" {
		_ = c.Close()
		return fmt.Errorf("websocket auth: %v %q", err, m.Type)
	}
	ha.ws = c
	return nil
}

func (ha *HomeAssistant) closeWS() {
	ha.mu.Lock()
	defer ha.mu.Unlock()
	if ha.ws != nil {
		_ = ha.ws.Close()
		ha.ws = nil
	}
}

// logLine matches the first line of a Home Assistant log record.
var logLine = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\S* (\w+) \(([^)]*)\) \[([^\]]+)\] (.*)`)

// LogRecord is one record of home-assistant.log.
type LogRecord struct {
	Level, Logger, Message string
}

// Log returns the records at WARNING and above that Home Assistant logged
// in all its runs so far, each with its continuation lines (a traceback,
// say) in Message.
func (ha *HomeAssistant) Log() []LogRecord {
	ha.t.Helper()
	current, err := os.ReadFile(filepath.Join(ha.Config, "home-assistant.log"))
	if err != nil && ha.cmd != nil {
		ha.t.Fatal(err)
	}
	var out []LogRecord
	var cur *LogRecord
	sc := bufio.NewScanner(io.MultiReader(bytes.NewReader(ha.past), bytes.NewReader(current)))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		m := logLine.FindStringSubmatch(sc.Text())
		if m == nil {
			if cur != nil {
				cur.Message += "\n" + sc.Text()
			}
			continue
		}
		cur = nil
		if m[1] == "WARNING" || m[1] == "ERROR" || m[1] == "CRITICAL" {
			out = append(out, LogRecord{Level: m[1], Logger: m[3], Message: m[4]})
			cur = &out[len(out)-1]
		}
	}
	return out
}
