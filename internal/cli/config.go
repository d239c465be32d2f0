package cli

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/smartybridge/smartybridge/bridge"
	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/statefile"
	"github.com/smartybridge/smartybridge/p1/sim"
)

// envPrefix prefixes every configuration variable: SMARTY_KEY, SMARTY_MODE…
const envPrefix = "smarty"

// KeyConfig holds the decryption settings shared by every command.
type KeyConfig struct {
	Key       optionalKey `envconfig:"KEY" desc:"the meter's P1 decryption key from the grid operator: 32 hex digits"`
	Keys      keyMap      `envconfig:"KEYS" desc:"keys per meter for a decryptor serving several: TITLE:KEY,TITLE:KEY (TITLE = system title in 16 hex digits)"`
	KeysFile  string      `envconfig:"KEYS_FILE" desc:"file of TITLE:KEY lines (# comments allowed), for a decryptor serving many meters; adds to SMARTY_KEYS"`
	AuthKey   optionalKey `envconfig:"AUTH_KEY" desc:"GCM authentication key; Smarty meters use 00112233445566778899AABBCCDDEEFF"`
	VerifyTag yesNo       `envconfig:"VERIFY_TAG" default:"true" desc:"verify each frame's GCM tag; false only when the authentication key is unknown (frames must then pass the telegram CRC)"`
}

// decryptOptions turns the settings into decrypt.Options.
func (c KeyConfig) decryptOptions() decrypt.Options {
	o := decrypt.Options{Keys: c.Keys.keys, SkipTag: !bool(c.VerifyTag)}
	if c.Key.set {
		k := c.Key.key
		o.Key = &k
	}
	if c.AuthKey.set {
		o.AuthKey = c.AuthKey.key
	}
	return o
}

// offlineOptions are the keys of the offline commands (decode, quarters):
// without a key of its own, the simulated meter's frames open with the
// demo key (it is public), so that `smartybridge simulate | smartybridge
// decode` works as written. A meter's own key is never needed for it.
func (c KeyConfig) offlineOptions() decrypt.Options {
	o := c.decryptOptions()
	if _, own := o.Keys[sim.DemoTitle]; !own && o.Key == nil {
		keys := maps.Clone(o.Keys)
		if keys == nil {
			keys = map[decrypt.Title]decrypt.Key{}
		}
		keys[sim.DemoTitle] = sim.DemoKey
		o.Keys = keys
	}
	return o
}

// loadKeysFile adds the keys of SMARTY_KEYS_FILE to the key map.
func (c *KeyConfig) loadKeysFile() error {
	if c.KeysFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.KeysFile)
	if err != nil {
		return fmt.Errorf("SMARTY_KEYS_FILE: %w", err)
	}
	var file keyMap
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	if err := file.Decode(strings.Join(lines, ",")); err != nil {
		return fmt.Errorf("SMARTY_KEYS_FILE %s: %w", c.KeysFile, err)
	}
	if c.Keys.keys == nil {
		c.Keys.keys = map[decrypt.Title]decrypt.Key{}
	}
	for t, k := range file.keys {
		c.Keys.keys[t] = k
	}
	return nil
}

// hasKey reports whether any decryption key is configured.
func (c KeyConfig) hasKey() bool { return c.Key.set || len(c.Keys.keys) > 0 }

// optionalKey is a key that may be left empty. It never prints itself.
type optionalKey struct {
	key decrypt.Key
	set bool
}

// Decode implements envconfig.Decoder.
func (k *optionalKey) Decode(s string) error {
	if strings.TrimSpace(s) == "" {
		*k = optionalKey{}
		return nil
	}
	v, err := decrypt.ParseKey(s)
	if err != nil {
		return err
	}
	*k = optionalKey{key: v, set: true}
	return nil
}

func (k optionalKey) String() string {
	if k.set {
		return "[redacted]"
	}
	return ""
}

// keyMap is SMARTY_KEYS: keys per system title. It never prints the keys.
type keyMap struct {
	keys map[decrypt.Title]decrypt.Key
}

// Decode implements envconfig.Decoder for "TITLE:KEY,TITLE:KEY".
func (m *keyMap) Decode(s string) error {
	m.keys = map[decrypt.Title]decrypt.Key{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		title, key, ok := strings.Cut(item, ":")
		if !ok {
			return fmt.Errorf("entry %d: want TITLE:KEY", len(m.keys)+1)
		}
		t, err := decrypt.ParseTitle(strings.TrimSpace(title))
		if err != nil {
			return err
		}
		k, err := decrypt.ParseKey(key)
		if err != nil {
			return fmt.Errorf("key for %s: %w", t, err)
		}
		m.keys[t] = k
	}
	return nil
}

func (m keyMap) String() string {
	titles := make([]string, 0, len(m.keys))
	for t := range m.keys {
		titles = append(titles, t.String()+":[redacted]")
	}
	sort.Strings(titles)
	return strings.Join(titles, ",")
}

// Config is what the bridge reads from the environment (SMARTY_*).
type Config struct {
	Mode   discovery.Mode `envconfig:"MODE" default:"bridge" desc:"bridge: read the meter, decrypt, publish to Home Assistant; forward: publish the encrypted frames only (no key needed); decrypt: take forwarded frames from the broker and publish like bridge"`
	Device string         `envconfig:"DEVICE" default:"/dev/ttyUSB0" desc:"the meter's port: a serial device such as /dev/ttyUSB0, tcp://host:port for ser2net or a network P1 dongle, or a capture file"`
	Baud   int            `envconfig:"BAUD" default:"115200" desc:"serial speed; Smarty meters send at 115200 8N1"`
	KeyConfig
	MQTTURL         string   `envconfig:"MQTT_URL" default:"mqtt://localhost:1883" desc:"broker URL: mqtt://host[:port] (port 1883 by default), or mqtts://host[:port] for TLS (8883); a login may go in it as mqtt://user:password@host; the nodes of a broker cluster separated by commas (mqtt://a:1883,mqtt://b:1883), tried in turn"`
	MQTTCAFile      string   `envconfig:"MQTT_CA_FILE" desc:"PEM file of the CA that signed the broker's certificate (mqtts://); empty: the system's CAs"`
	MQTTUsername    string   `envconfig:"MQTT_USERNAME" desc:"broker login"`
	MQTTPassword    secret   `envconfig:"MQTT_PASSWORD" desc:"broker password"`
	MQTTClientID    string   `envconfig:"MQTT_CLIENT_ID" desc:"MQTT client id, unique per instance; default smartybridge-<mode>-<hostname>-<random suffix kept in the state directory>"`
	TopicPrefix     string   `envconfig:"TOPIC_PREFIX" default:"smarty" desc:"states go to <prefix>/<meter>/<OBIS>"`
	DiscoveryPrefix string   `envconfig:"DISCOVERY_PREFIX" default:"homeassistant" desc:"Home Assistant's MQTT discovery prefix"`
	Discovery       string   `envconfig:"DISCOVERY" default:"device" desc:"device: one discovery message per meter (Home Assistant 2024.11+); entity: one per sensor (older); off: none"`
	MeterTimeout    duration `envconfig:"METER_TIMEOUT" default:"60s" desc:"mark the meter unavailable when no valid telegram came for this long (60s, 5m, or seconds)"`
	ReferencePower  float64  `envconfig:"REFERENCE_POWER" default:"0" desc:"your reference power in kW, as on the grid bill (3, 7, 12…): energy above it within a quarter-hour costs more; 0: not set. Home Assistant can change it per meter"`
	OverrunPrice    float64  `envconfig:"OVERRUN_PRICE" default:"0" desc:"the price in €/kWh of energy above the reference power (from your supplier's bill); 0: not set, no cost sensors"`
	LogLevel        string   `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	StateDir        string   `envconfig:"STATE_DIR" desc:"where the frame counters (replay protection), the forwarder's queue and the client id's suffix live; default /data in the add-on, $STATE_DIRECTORY under systemd, else ~/.local/state/smartybridge (Linux), ~/Library/Application Support/smartybridge (macOS), %LOCALAPPDATA%\\smartybridge (Windows)"`
	ShareGroup      string   `envconfig:"SHARE_GROUP" desc:"decrypt mode: MQTT 5 shared-subscription group, so that several decryptors split the meters"`
	QueueMax        int      `envconfig:"QUEUE_MAX" default:"10000" desc:"forward mode: frames kept on disk while no decryptor confirms them (10000 is about 28 hours of one meter)"`
	MetricsListen   string   `envconfig:"METRICS_LISTEN" desc:"serve Prometheus metrics at http://<host:port>/metrics, such as 127.0.0.1:9108 (0.0.0.0:9108 for other machines); empty: off"`
	HealthFile      string   `envconfig:"HEALTH_FILE" desc:"file recording the broker connection (up/down), read by 'smartybridge health' in a container health check"`
	SessionExpiry   duration `envconfig:"SESSION_EXPIRY" default:"24h" desc:"decrypt mode: how long the broker keeps the decryptor's session and queued frames while it is away"`
	ConfirmKey      string   `envconfig:"CONFIRM_KEY" desc:"forward mode: the decryptors' public confirmation key (64 hex digits; a decryptor logs it as confirm_key, 'smartybridge confirm-key' prints it); only confirmations signed with it remove frames. Empty: trust the first key that confirms a frame of the meter"`
}

// secret is a string that never prints itself.
type secret string

func (s secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue redacts the secret in logs.
func (s secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// loadConfig reads and checks the settings.
func loadConfig(env Env) (Config, error) {
	var c Config
	if err := env.Process(&c); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, configError{err}
	}
	if err := c.loadKeysFile(); err != nil {
		return c, configError{err}
	}
	c.StateDir = c.resolveStateDir(env)
	return c, nil
}

// Validate checks values and the rules between them.
func (c *Config) Validate() error {
	if _, ok := discovery.ParseMode(string(c.Mode)); !ok {
		return fmt.Errorf("SMARTY_MODE=%q: want bridge, forward or decrypt", c.Mode)
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil || port == "" {
			return fmt.Errorf("SMARTY_METRICS_LISTEN=%q: want host:port, such as 127.0.0.1:9108", c.MetricsListen)
		}
	}
	if c.ShareGroup != "" && (c.Mode != discovery.ModeDecrypt || strings.ContainsAny(c.ShareGroup, "/+#")) {
		return fmt.Errorf("SMARTY_SHARE_GROUP=%q: a name without '/', '+' or '#', for SMARTY_MODE=decrypt only", c.ShareGroup)
	}
	if c.ConfirmKey != "" {
		if c.Mode != discovery.ModeForward {
			return fmt.Errorf("SMARTY_CONFIRM_KEY is for SMARTY_MODE=forward only")
		}
		if _, err := bridge.ParseConfirmKey(c.ConfirmKey); err != nil {
			return fmt.Errorf("SMARTY_CONFIRM_KEY: %w", err)
		}
	}
	if c.QueueMax < 1 {
		return fmt.Errorf("SMARTY_QUEUE_MAX=%d: want at least 1", c.QueueMax)
	}
	if time.Duration(c.SessionExpiry) < time.Minute {
		return fmt.Errorf("SMARTY_SESSION_EXPIRY=%s: want at least 1m", c.SessionExpiry)
	}
	if _, err := c.brokerURLs(); err != nil {
		return err
	}
	if c.MQTTCAFile != "" {
		if _, err := os.Stat(c.MQTTCAFile); err != nil {
			return fmt.Errorf("SMARTY_MQTT_CA_FILE: %w", err)
		}
	}
	switch discovery.Style(c.Discovery) {
	case discovery.DeviceStyle, discovery.EntityStyle, discovery.Off:
	default:
		return fmt.Errorf("SMARTY_DISCOVERY=%q: want device, entity or off", c.Discovery)
	}
	for name, p := range map[string]string{"SMARTY_TOPIC_PREFIX": c.TopicPrefix, "SMARTY_DISCOVERY_PREFIX": c.DiscoveryPrefix} {
		if p == "" || strings.ContainsAny(p, "+#") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
			return fmt.Errorf("%s=%q: want a topic without wildcards or leading/trailing '/'", name, p)
		}
	}
	if c.Baud <= 0 {
		return fmt.Errorf("SMARTY_BAUD=%d: want a positive speed such as 115200", c.Baud)
	}
	if c.ReferencePower < 0 || c.ReferencePower > discovery.MaxReferenceKW || math.IsNaN(c.ReferencePower) {
		return fmt.Errorf("SMARTY_REFERENCE_POWER=%g: want your reference power in kW, from 0 (none) to %g, such as 7", c.ReferencePower, discovery.MaxReferenceKW)
	}
	if c.OverrunPrice < 0 || c.OverrunPrice > discovery.MaxPrice || math.IsNaN(c.OverrunPrice) {
		return fmt.Errorf("SMARTY_OVERRUN_PRICE=%g: want a price in €/kWh from 0 (none) to %g, such as 0.1139", c.OverrunPrice, discovery.MaxPrice)
	}
	if time.Duration(c.MeterTimeout) < time.Second {
		return fmt.Errorf("SMARTY_METER_TIMEOUT=%s: want at least 1s (the meter sends every 10 s)", c.MeterTimeout)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	return nil
}

// brokerURL parses SMARTY_MQTT_URL; it must name a host and a port. Its
// errors show the URL without a password (url.Parse's own errors quote
// it whole, so they are not passed on).
// shownURL is a broker URL as messages may show it: a login is hidden
// whatever the shape of the URL (mqtt//u:pw@host, u:pw@host:1883…), so
// that a typo in the scheme cannot put the password in a log.
func shownURL(s string) string {
	s = strings.TrimSpace(s)
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return s
	}
	// What stands before the login: a scheme and its separators, if any.
	lead := 0
	for lead < at && (s[lead] >= 'a' && s[lead] <= 'z' || s[lead] >= 'A' && s[lead] <= 'Z') {
		lead++
	}
	for lead < at && (s[lead] == ':' || s[lead] == '/') {
		lead++
	}
	return s[:lead] + "xxxxx@" + s[at+1:]
}

// maxBrokers bounds the nodes SMARTY_MQTT_URL may list.
const maxBrokers = 32

// brokerURLs parses SMARTY_MQTT_URL: one broker, or the nodes of a cluster
// separated by commas, each with the same login if any.
func (c *Config) brokerURLs() ([]*url.URL, error) {
	if n := strings.Count(c.MQTTURL, ",") + 1; n > maxBrokers {
		return nil, fmt.Errorf("SMARTY_MQTT_URL lists %d brokers; at most %d (the nodes of one cluster)", n, maxBrokers)
	}
	var urls []*url.URL
	for s := range strings.SplitSeq(c.MQTTURL, ",") {
		if strings.TrimSpace(s) == "" {
			return nil, fmt.Errorf("SMARTY_MQTT_URL=%q: an empty broker in the list; separate the brokers of a cluster by single commas", shownURL(c.MQTTURL))
		}
		u, err := brokerURL(s)
		if err != nil {
			return nil, err
		}
		for _, prev := range urls {
			if prev.Host == u.Host {
				return nil, fmt.Errorf("SMARTY_MQTT_URL: %s is in the list twice", u.Host)
			}
			if u.User != nil && prev.User != nil && u.User.String() != prev.User.String() {
				return nil, errors.New("SMARTY_MQTT_URL: the brokers of the list name different logins; a cluster has one: put it in SMARTY_MQTT_USERNAME and SMARTY_MQTT_PASSWORD")
			}
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// tlsScheme reports whether a broker URL's scheme asks for TLS.
func tlsScheme(scheme string) bool { return scheme == "mqtts" || scheme == "ssl" || scheme == "tls" }

// brokerURL parses one broker's URL of SMARTY_MQTT_URL.
func brokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("SMARTY_MQTT_URL is not a URL: want mqtt://host:1883 or mqtts://host:8883 (a login goes in SMARTY_MQTT_USERNAME and SMARTY_MQTT_PASSWORD, or as mqtt://user:password@host:1883)")
	}
	shown := shownURL(s)
	port := ""
	switch {
	case u.Scheme == "mqtt" || u.Scheme == "tcp":
		port = "1883"
	case tlsScheme(u.Scheme):
		port = "8883"
	default:
		return nil, fmt.Errorf("SMARTY_MQTT_URL=%q: want mqtt://host[:port] (1883 by default) or mqtts://host[:port] (TLS, 8883 by default)", shown)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("SMARTY_MQTT_URL=%q: name the broker's host, as in mqtt://homeassistant.local:1883", shown)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return nil, fmt.Errorf("SMARTY_MQTT_URL=%q: MQTT has no path or query; want mqtt://host:port (topics are set by SMARTY_TOPIC_PREFIX)", shown)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	u.Path = ""
	return u, nil
}

// mqttOptions turns the settings into the bridge's broker options.
func (c *Config) mqttOptions() (bridge.MQTTOptions, error) {
	urls, err := c.brokerURLs()
	if err != nil {
		return bridge.MQTTOptions{}, err
	}
	o := bridge.MQTTOptions{Username: c.MQTTUsername, Password: string(c.MQTTPassword), ClientID: c.MQTTClientID, HealthFile: c.HealthFile}
	// The login of the first URL that has one (brokerURLs checked that
	// the others agree).
	if i := slices.IndexFunc(urls, func(u *url.URL) bool { return u.User != nil }); i >= 0 {
		u := urls[i]
		// A login in the URL is used, and then kept out of the URL that
		// connection errors quote.
		if o.Username != "" && o.Username != u.User.Username() {
			return o, errors.New("SMARTY_MQTT_URL names a user and SMARTY_MQTT_USERNAME another one: set the login once")
		}
		o.Username = u.User.Username()
		if pw, ok := u.User.Password(); ok {
			o.Password = pw
		}
	}
	for i, u := range urls {
		bare := *u
		bare.User = nil
		if i == 0 {
			o.URL = &bare
		} else {
			o.MoreURLs = append(o.MoreURLs, &bare)
		}
	}
	if o.ClientID == "" {
		o.ClientID = defaultClientID(string(c.Mode), c.StateDir, c.Device)
	}
	if slices.ContainsFunc(urls, func(u *url.URL) bool { return tlsScheme(u.Scheme) }) {
		// The name checked is each broker's own (bridge.dialKeep).
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.MQTTCAFile != "" {
			pem, err := os.ReadFile(c.MQTTCAFile)
			if err != nil {
				return o, fmt.Errorf("SMARTY_MQTT_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return o, fmt.Errorf("SMARTY_MQTT_CA_FILE %s: no PEM certificate in it", c.MQTTCAFile)
			}
			o.TLS.RootCAs = pool
		}
	}
	return o, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("SMARTY_LOG_LEVEL=%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// configErrorOf makes an error of Env.Process a configuration error (exit
// 2) that names the variable without quoting a secret value.
func configErrorOf(err error) error {
	var pe *envconfig.ParseError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe):
		return configError{describeParseError(pe)}
	}
	return configError{err}
}

// secretVariables hold keys or passwords (a broker URL may carry one):
// their values are never shown.
var secretVariables = map[string]bool{
	"SMARTY_KEY": true, "SMARTY_KEYS": true, "SMARTY_AUTH_KEY": true, "SMARTY_MQTT_PASSWORD": true, "SMARTY_MQTT_URL": true,
}

func describeParseError(pe *envconfig.ParseError) error {
	name := pe.KeyName
	var want wantError
	switch {
	case secretVariables[name]:
		// Our decoders' errors describe the value by length and
		// characters, never by quoting it.
		return fmt.Errorf("%s: %v (the value itself is not shown)", name, pe.Err)
	case errors.As(pe.Err, &want):
		return fmt.Errorf("%s=%q: %v", name, pe.Value, want)
	}
	wants := "a valid value"
	switch pe.TypeName {
	case "int":
		wants = "a whole number"
	case "float64":
		wants = "a number such as 7 or 0.1139 (a point, not a comma)"
	}
	return fmt.Errorf("%s=%q: want %s", name, pe.Value, wants)
}

// stateDir is SMARTY_STATE_DIR or its default: the add-on's /data, the
// directory systemd made (StateDirectory=, in $STATE_DIRECTORY), else the
// platform's place for such files: $XDG_STATE_HOME or ~/.local/state on
// Linux, ~/Library/Application Support on macOS, %LOCALAPPDATA% on
// Windows.
func (c *Config) resolveStateDir(env Env) string {
	if c.StateDir != "" {
		return c.StateDir
	}
	if fi, err := os.Stat("/data"); err == nil && fi.IsDir() && runtime.GOOS == "linux" {
		return "/data"
	}
	if d := env.Get("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0]
	}
	return platformStateDir(runtime.GOOS, env.Get, os.UserHomeDir)
}

// platformStateDir is the per-user state directory of goos.
func platformStateDir(goos string, getenv func(string) string, home func() (string, error)) string {
	switch goos {
	case "windows":
		if d := getenv("LOCALAPPDATA"); d != "" {
			return filepath.Join(d, "smartybridge")
		}
	case "darwin":
		if h, err := home(); err == nil {
			return filepath.Join(h, "Library", "Application Support", "smartybridge")
		}
	default:
		if d := getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
			return filepath.Join(d, "smartybridge")
		}
		if h, err := home(); err == nil {
			return filepath.Join(h, ".local", "state", "smartybridge")
		}
	}
	return filepath.Join(os.TempDir(), "smartybridge")
}

// machineIDFiles hold the machine's id (systemd, D-Bus); a variable for
// tests.
var machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// machineSuffix is six hex digits derived one-way from the machine's id
// and the meter's port (two bridges on one machine read two ports), ""
// when the machine has no id (a container without one, Windows).
func machineSuffix(device string) string {
	for _, f := range machineIDFiles {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
			h := sha256.New()
			h.Write([]byte("smartybridge client id "))
			h.Write(bytes.TrimSpace(b))
			h.Write([]byte{0})
			h.Write([]byte(device))
			return hex.EncodeToString(h.Sum(nil)[:3])
		}
	}
	return ""
}

// defaultClientID names this instance on the broker so that no two
// collide: forwarder and decryptor on one host differ by mode, two hosts
// named alike (every Raspberry Pi is "raspberrypi") by a suffix: the one
// kept in the state directory, else one derived from the machine's id, so
// that another state directory on the same machine and port (a run with
// sudo, then systemd) is the same instance and adds no second device to
// Home Assistant, while a second bridge on another port is another; a
// random one only on a machine without an id.
func defaultClientID(mode, stateDir, device string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "host"
	}
	file := filepath.Join(stateDir, "client-id-suffix")
	suffix := ""
	// A damaged file (a power cut, a hand edit) gets a new suffix: the
	// instance is then a new client to the broker, nothing worse.
	if b, err := os.ReadFile(file); err == nil && isSuffix(strings.TrimSpace(string(b))) {
		suffix = strings.TrimSpace(string(b))
	} else {
		if suffix = machineSuffix(device); suffix == "" {
			var r [3]byte
			rand.Read(r[:])
			suffix = hex.EncodeToString(r[:])
		}
		if os.MkdirAll(stateDir, 0o700) == nil {
			// Else drawn anew next run: a new client to the broker, and
			// the old one's retained status stays "offline".
			_ = statefile.Write(file, []byte(suffix+"\n"), 0o600)
		}
	}
	return "smartybridge-" + mode + "-" + bridge.TopicSafe(host) + "-" + suffix
}

// isSuffix reports whether s is a client id suffix: six hex digits.
func isSuffix(s string) bool {
	if len(s) != 6 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
