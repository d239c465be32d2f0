package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/smartybridge/smartybridge/discovery"
)

// The Home Assistant add-on starts `smartybridge addon`: it turns the
// add-on's options (/data/options.json) and the Supervisor's MQTT service
// into the same SMARTY_* environment the binary always reads, then runs the
// bridge. Keeping this in Go rather than in a shell script makes it
// testable (addon_test.go runs it against a fake Supervisor).

// addonOptions are the options of addon/config.yaml.
type addonOptions struct {
	Mode            string  `json:"mode"`
	Device          string  `json:"device"`
	TCPAddress      string  `json:"tcp_address"`
	Baud            int     `json:"baud"`
	Key             string  `json:"key"`
	Keys            string  `json:"keys"`
	KeysFile        string  `json:"keys_file"`
	AuthKey         string  `json:"auth_key"`
	VerifyTag       *bool   `json:"verify_tag"`
	ShareGroup      string  `json:"share_group"`
	MQTTHost        string  `json:"mqtt_host"`
	MQTTPort        int     `json:"mqtt_port"`
	MQTTTLS         bool    `json:"mqtt_tls"`
	MQTTCAFile      string  `json:"mqtt_ca_file"`
	MQTTUsername    string  `json:"mqtt_username"`
	MQTTPassword    string  `json:"mqtt_password"`
	MQTTClientID    string  `json:"mqtt_client_id"`
	TopicPrefix     string  `json:"topic_prefix"`
	DiscoveryPrefix string  `json:"discovery_prefix"`
	Discovery       string  `json:"discovery"`
	MeterTimeout    int     `json:"meter_timeout"`
	QueueMax        int     `json:"queue_max"`
	SessionExpiry   int     `json:"session_expiry"`
	ConfirmKey      string  `json:"confirm_key"`
	LogLevel        string  `json:"log_level"`
	ReferencePower  float64 `json:"reference_power"`
	OverrunPrice    float64 `json:"overrun_price"`
}

// addonVariables maps each option to the variable it sets; the test of
// config.yaml holds the add-on to this table.
var addonVariables = map[string]string{
	"mode": "SMARTY_MODE", "device": "SMARTY_DEVICE", "tcp_address": "SMARTY_DEVICE", "baud": "SMARTY_BAUD",
	"key": "SMARTY_KEY", "keys": "SMARTY_KEYS", "keys_file": "SMARTY_KEYS_FILE", "auth_key": "SMARTY_AUTH_KEY",
	"verify_tag": "SMARTY_VERIFY_TAG", "share_group": "SMARTY_SHARE_GROUP",
	"mqtt_host": "SMARTY_MQTT_URL", "mqtt_port": "SMARTY_MQTT_URL", "mqtt_tls": "SMARTY_MQTT_URL", "mqtt_ca_file": "SMARTY_MQTT_CA_FILE",
	"mqtt_username": "SMARTY_MQTT_USERNAME", "mqtt_password": "SMARTY_MQTT_PASSWORD", "mqtt_client_id": "SMARTY_MQTT_CLIENT_ID",
	"topic_prefix": "SMARTY_TOPIC_PREFIX", "discovery_prefix": "SMARTY_DISCOVERY_PREFIX", "discovery": "SMARTY_DISCOVERY",
	"meter_timeout": "SMARTY_METER_TIMEOUT", "queue_max": "SMARTY_QUEUE_MAX", "session_expiry": "SMARTY_SESSION_EXPIRY",
	"log_level": "SMARTY_LOG_LEVEL", "confirm_key": "SMARTY_CONFIRM_KEY",
	"reference_power": "SMARTY_REFERENCE_POWER", "overrun_price": "SMARTY_OVERRUN_PRICE",
}

// addonInternal are the variables the add-on sets itself, with no option.
var addonInternal = map[string]string{
	"SMARTY_STATE_DIR":   "/data",
	"SMARTY_HEALTH_FILE": "/tmp/smartybridge.health",
	// The add-on publishes no port; the Problem sensor and the counters
	// are in Home Assistant itself.
	"SMARTY_METRICS_LISTEN": "",
}

// mqttService is the Supervisor's answer for /services/mqtt.
type mqttService struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	SSL      bool   `json:"ssl"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// fetchMQTTService asks the Supervisor for the MQTT broker (the Mosquitto
// add-on, or another that provides the service).
func fetchMQTTService(ctx context.Context, base, token string) (*mqttService, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/services/mqtt", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read only: nothing to lose
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("supervisor answered %s", resp.Status)
	}
	var r struct {
		Result string      `json:"result"`
		Data   mqttService `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("supervisor answer: %w", err)
	}
	if r.Result != "ok" || r.Data.Host == "" {
		return nil, errors.New("no MQTT service")
	}
	return &r.Data, nil
}

// addonEnv computes the environment from the options and, unless the
// options name a broker, the Supervisor's MQTT service.
func addonEnv(o addonOptions, svc *mqttService) (map[string]string, error) {
	env := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			env[k] = v
		}
	}
	for k, v := range addonInternal {
		env[k] = v
	}
	set("SMARTY_MODE", o.Mode)
	switch {
	case o.TCPAddress != "":
		addr := strings.TrimPrefix(o.TCPAddress, "tcp://")
		env["SMARTY_DEVICE"] = "tcp://" + addr
	case o.Device != "":
		env["SMARTY_DEVICE"] = o.Device
	case o.Mode != string(discovery.ModeDecrypt):
		return nil, errors.New("no meter port: choose the serial device in the add-on's configuration, or give tcp_address")
	}
	if o.Baud > 0 {
		env["SMARTY_BAUD"] = strconv.Itoa(o.Baud)
	}
	set("SMARTY_KEY", o.Key)
	set("SMARTY_KEYS", o.Keys)
	set("SMARTY_KEYS_FILE", o.KeysFile)
	set("SMARTY_AUTH_KEY", o.AuthKey)
	if o.VerifyTag != nil {
		env["SMARTY_VERIFY_TAG"] = strconv.FormatBool(*o.VerifyTag)
	}
	set("SMARTY_SHARE_GROUP", o.ShareGroup)

	host, port, tls, user, pass := o.MQTTHost, o.MQTTPort, o.MQTTTLS, o.MQTTUsername, o.MQTTPassword
	if host == "" {
		if svc == nil {
			return nil, errors.New("no MQTT broker: install and start the Mosquitto broker add-on, or set mqtt_host in the configuration")
		}
		host, tls = svc.Host, svc.SSL
		if port == 0 {
			port = svc.Port
		}
		if user == "" {
			user, pass = svc.Username, svc.Password
		}
	}
	if port == 0 {
		port = map[bool]int{true: 8883, false: 1883}[tls]
	}
	scheme := "mqtt"
	if tls {
		scheme = "mqtts"
	}
	// The nodes of a broker cluster: hosts separated by commas, each with
	// the common port unless it names its own.
	var brokers []string
	for h := range strings.SplitSeq(host, ",") {
		h = strings.TrimSpace(h)
		if _, _, err := net.SplitHostPort(h); err == nil {
			brokers = append(brokers, scheme+"://"+h)
		} else {
			brokers = append(brokers, fmt.Sprintf("%s://%s:%d", scheme, h, port))
		}
	}
	env["SMARTY_MQTT_URL"] = strings.Join(brokers, ",")
	set("SMARTY_MQTT_CA_FILE", o.MQTTCAFile)
	set("SMARTY_MQTT_USERNAME", user)
	set("SMARTY_MQTT_PASSWORD", pass)
	// Without a client id the binary makes one from the mode, the host
	// name and a suffix kept in /data, so that two add-ons never collide.
	set("SMARTY_MQTT_CLIENT_ID", o.MQTTClientID)
	set("SMARTY_CONFIRM_KEY", o.ConfirmKey)
	set("SMARTY_TOPIC_PREFIX", o.TopicPrefix)
	set("SMARTY_DISCOVERY_PREFIX", o.DiscoveryPrefix)
	set("SMARTY_DISCOVERY", o.Discovery)
	if o.MeterTimeout > 0 {
		env["SMARTY_METER_TIMEOUT"] = strconv.Itoa(o.MeterTimeout) + "s"
	}
	if o.QueueMax > 0 {
		env["SMARTY_QUEUE_MAX"] = strconv.Itoa(o.QueueMax)
	}
	if o.SessionExpiry > 0 {
		env["SMARTY_SESSION_EXPIRY"] = strconv.Itoa(o.SessionExpiry) + "h"
	}
	set("SMARTY_LOG_LEVEL", o.LogLevel)
	if o.ReferencePower > 0 {
		env["SMARTY_REFERENCE_POWER"] = strconv.FormatFloat(o.ReferencePower, 'f', -1, 64)
	}
	if o.OverrunPrice > 0 {
		env["SMARTY_OVERRUN_PRICE"] = strconv.FormatFloat(o.OverrunPrice, 'f', -1, 64)
	}
	return env, nil
}

// runAddon is `smartybridge addon`, the add-on's entry point.
func runAddon(ctx context.Context, env Env, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	vars, err := loadAddonEnv(ctx, env, log)
	if err != nil {
		return err
	}
	words := addonVocabulary()
	err = runBridge(ctx, env.With(vars), stderr, words)
	if ce, ok := errors.AsType[configError](err); ok {
		return configError{errors.New(words.Replace(ce.Error()))}
	}
	return err
}

// loadAddonEnv reads the options and asks the Supervisor for the broker.
func loadAddonEnv(ctx context.Context, env Env, log *slog.Logger) (map[string]string, error) {
	path := env.Or("SMARTY_ADDON_OPTIONS", "/data/options.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configError{fmt.Errorf("add-on options: %w", err)}
	}
	var o addonOptions
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, configError{fmt.Errorf("add-on options %s: %w", path, err)}
	}
	var svc *mqttService
	if o.MQTTHost == "" {
		svc, err = fetchMQTTService(ctx, env.Or("SUPERVISOR_URL", "http://supervisor"), env.Get("SUPERVISOR_TOKEN"))
		if err != nil {
			log.Warn("no MQTT service from the Supervisor", "err", err)
		}
	}
	vars, err := addonEnv(o, svc)
	if err != nil {
		return nil, configError{err}
	}
	for k := range addonInternal {
		if v := env.Get(k); v != "" {
			vars[k] = v // set from outside (tests, a custom container)
		}
	}
	// Which options are set, never their values: they hold the key and
	// the broker password.
	var raw map[string]any
	_ = json.Unmarshal(b, &raw) // it parsed above
	names := make([]string, 0, len(raw))
	for k, v := range raw {
		if name, ok := addonOptionNames[k]; ok && v != nil && v != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	log.Info("add-on configuration read", "mode", vars["SMARTY_MODE"], "broker", vars["SMARTY_MQTT_URL"], "options", strings.Join(names, ", "))
	return vars, nil
}
