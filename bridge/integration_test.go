package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/discovery"
	"github.com/smartybridge/smartybridge/internal/crc16"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
	"github.com/smartybridge/smartybridge/p1"
	"github.com/smartybridge/smartybridge/p1/port"
)

var update = flag.Bool("update", false, "rewrite golden files")

// logBuffer collects log lines for assertions.
type logBuffer = testenv.Buffer

type harness struct {
	b      *Bridge
	cancel context.CancelFunc
	done   chan error
}

func testOptions(brokerURL string, logs *logBuffer, keys decrypt.Options) Options {
	u, _ := url.Parse(brokerURL)
	return Options{
		MQTT: MQTTOptions{URL: u, ClientID: "test"}, Keys: keys,
		TopicPrefix: "smarty", DiscoveryPrefix: "homeassistant", Discovery: discovery.DeviceStyle,
		MeterTimeout: 2 * time.Second, NoFrameWarning: time.Second, Version: "0.0.0-test", SupportURL: "https://example.invalid/smartybridge",
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// start runs a bridge reading src until the test ends.
func start(t *testing.T, o Options, src interface {
	Read([]byte) (int, error)
}) *harness {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{b: b, cancel: cancel, done: make(chan error, 1)}
	// A port says it is live; a pipe or a capture is not.
	lp, live := src.(interface{ Live() bool })
	go func() { h.done <- b.Run(ctx, Source{Reader: src, Live: live && lp.Live()}) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bridge did not stop")
	}
}

func openPTY(t *testing.T, ctx context.Context, device string, logs *logBuffer) *port.Reader {
	r, err := port.Open(ctx, port.Options{Device: device, ReadTimeout: 200 * time.Millisecond, Log: slog.New(slog.NewTextHandler(logs, nil)),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// nextFrame is smarty-2026's telegram sealed as the meter's n-th frame
// after smarty-2026.frame: same title and key, a counter n higher (bridges
// drop a frame whose counter does not grow).
func nextFrame(t *testing.T, n uint32) []byte {
	t.Helper()
	return decrypt.Seal(nil, *key(t, testKey), decrypt.DefaultAuthKey, decrypt.Title{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}, 0x10000001+n, readFile(t, "smarty-2026.telegram"))
}

// expectedStates is what the state topics must carry for smarty-2026.
func expectedStates(t *testing.T) map[string]string {
	t.Helper()
	tg, err := p1.Parse(readFile(t, "smarty-2026.telegram"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := range tg.Objects {
		o := &tg.Objects[i]
		want["smarty/SAG1030700012701/"+o.OBIS.String()] = string(AppendState(nil, o))
	}
	return want
}

// meterTopics counts the topics of the meter's telegram states under
// prefix: those of the reference power (quarter/…, its settings) aside.
func meterTopics(sub *testenv.Subscriber, prefix string) int {
	n := 0
	for topic := range sub.Topics(prefix) {
		if !strings.Contains(topic, "/quarter/") && !strings.HasSuffix(topic, "/"+discovery.SettingReferencePower) &&
			!strings.HasSuffix(topic, "/"+discovery.SettingOverrunPrice) {
			n++
		}
	}
	return n
}

// expectedTopics counts the topics under smarty/<meter>/ for smarty-2026:
// every state, the availability, and each message's attributes.
func expectedTopics(t *testing.T) int {
	t.Helper()
	n := len(expectedStates(t)) + 1
	tg, err := p1.Parse(readFile(t, "smarty-2026.telegram"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range tg.Objects {
		if o := &tg.Objects[i]; discovery.LongText(o.OBIS) || discovery.MoreValues(o) {
			n++ // its attributes
		}
	}
	return n
}

func TestBridgeEndToEnd(t *testing.T) {
	// Registered first, so it runs after every other cleanup.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	sub := testenv.Subscribe(t, broker.URL, "smarty/#", "homeassistant/#")
	logs := &logBuffer{}
	ctx, cancelPort := context.WithCancel(context.Background())
	defer cancelPort()
	h := start(t, testOptions(broker.URL, logs, decrypt.Options{Key: key(t, testKey)}), openPTY(t, ctx, pty.Device, logs))
	frame := readFile(t, "smarty-2026.frame")

	sub.WaitValue("smarty/status/test", "online", 10*time.Second)
	pty.Write(frame)

	// Every state topic carries its value.
	want := expectedStates(t)
	testenv.WaitFor(t, 5*time.Second, "all states", func() bool { return len(sub.Topics("smarty/SAG1030700012701/")) >= len(want)+1 })
	// The current limit's two values, which the state alone would drop.
	sub.WaitValue("smarty/SAG1030700012701/1-1:31.4.0/attributes", `{"values":["040 A","-040 A"]}`, 5*time.Second)
	for topic, v := range want {
		if got, _ := sub.Get(topic); got != v {
			t.Errorf("%s = %q, want %q", topic, got, v)
		}
	}
	for topic, v := range map[string]string{
		"smarty/SAG1030700012701/1-0:1.8.0":   "273.764",
		"smarty/SAG1030700012701/0-0:1.0.0":   "2026-04-03T17:54:31+02:00",
		"smarty/SAG1030700012701/0-0:42.0.0":  "SAG1030700012701",
		"smarty/SAG1030700012701/0-1:24.2.1":  "14239.771",
		"smarty/SAG1030700012701/1-1:31.4.0":  "40",
		"smarty/SAG1030700012701/0-0:96.13.0": " ", // empty, but a retained state survives
	} {
		if got, _ := sub.Get(topic); got != v {
			t.Errorf("%s = %q, want %q", topic, got, v)
		}
	}
	sub.WaitValue("smarty/SAG1030700012701/availability", "online", 2*time.Second)

	// The retained discovery config matches the golden file.
	cfgTopic := "homeassistant/device/SAG1030700012701/config"
	testenv.WaitFor(t, 5*time.Second, "discovery", func() bool { _, ok := sub.Get(cfgTopic); return ok })
	cfg, _ := sub.Get(cfgTopic)
	var indented bytes.Buffer
	if err := json.Indent(&indented, []byte(cfg), "", " "); err != nil {
		t.Fatal(err)
	}
	golden := "../testdata/golden/bridge-discovery.json"
	if *update {
		os.WriteFile(golden, indented.Bytes(), 0o644)
	}
	if g, _ := os.ReadFile(golden); !bytes.Equal(g, indented.Bytes()) {
		t.Errorf("discovery differs from %s (-update rewrites it):\n%s", golden, indented.String())
	}

	// Home Assistant restarts: discovery again.
	n := sub.N(cfgTopic)
	pub := testenv.Subscribe(t, broker.URL)
	pub.Client.Publish(context.Background(), &paho.Publish{Topic: "homeassistant/status", Payload: []byte("online"), QoS: 1})
	testenv.WaitFor(t, 5*time.Second, "re-announce", func() bool { return sub.N(cfgTopic) > n })

	// The meter falls silent: it goes offline, and online with the next frame.
	sub.WaitValue("smarty/SAG1030700012701/availability", "offline", 5*time.Second)
	pty.Write(nextFrame(t, 1))
	sub.WaitValue("smarty/SAG1030700012701/availability", "online", 5*time.Second)

	// The broker restarts (persistence keeps nothing of ours that matters):
	// the bridge reconnects and publishes again.
	broker.Stop()
	time.Sleep(500 * time.Millisecond)
	broker.Start()
	sub2 := testenv.Subscribe(t, broker.URL, "smarty/#", "homeassistant/#")
	sub2.WaitValue("smarty/status/test", "online", 40*time.Second)
	pty.Write(nextFrame(t, 2))
	sub2.WaitValue("smarty/SAG1030700012701/1-0:2.8.0", "112743.030", 5*time.Second)

	// The cable is pulled and plugged back.
	pty.Stop()
	time.Sleep(time.Second)
	pty.Start()
	testenv.WaitFor(t, 10*time.Second, "port reopened", func() bool { return strings.Contains(logs.String(), "meter port reopened") })
	before := sub2.N("smarty/SAG1030700012701/1-0:1.8.0")
	pty.Write(nextFrame(t, 3))
	testenv.WaitFor(t, 5*time.Second, "state after replug", func() bool { return sub2.N("smarty/SAG1030700012701/1-0:1.8.0") > before })

	// A clean stop says offline.
	h.stop(t)
	sub2.WaitValue("smarty/status/test", "offline", 5*time.Second)
	if s := h.b.Stats(); s.Telegrams < 3 || s.Rejected[telegrams.Authentication] != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWrongKeyPublishesNothing(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "#")
	logs := &logBuffer{}
	f := readFile(t, "smarty-2018-real.frame")
	r := &slowReader{chunks: [][]byte{f, f, f}}
	h := start(t, testOptions(broker.URL, logs, decrypt.Options{Key: key(t, testKey)}), r)
	sub.WaitValue("smarty/status/test", "online", 10*time.Second)
	testenv.WaitFor(t, 5*time.Second, "warning", func() bool { return strings.Contains(logs.String(), "authentication failed on 1 frames in a row") })
	// Bytes keep arriving, nothing decodes: one warning with the likely cause.
	testenv.WaitFor(t, 5*time.Second, "no-telegram warning", func() bool {
		return strings.Contains(logs.String(), "no valid telegram for a while") && strings.Contains(logs.String(), "fail authentication: check SMARTY_KEY")
	})
	// The bridge's own device says so in Home Assistant.
	testenv.WaitFor(t, 5*time.Second, "problem wrong_key", func() bool {
		v, _ := sub.Get("smarty/bridge/test/diagnostics")
		return strings.Contains(v, `"problem":"wrong_key"`)
	})
	h.stop(t)
	if n := strings.Count(logs.String(), "no valid telegram for a while"); n != 1 {
		t.Errorf("no-telegram warning %d times, want once", n)
	}
	for topic := range sub.Topics("") {
		// Only the bridge itself: its status and its own device.
		if topic != "smarty/status/test" && !strings.HasPrefix(topic, "smarty/bridge/test/") && topic != "homeassistant/device/test/config" {
			t.Errorf("published %s with a wrong key", topic)
		}
	}
	if !strings.Contains(logs.String(), "SMARTY_KEY is not this meter's key") {
		t.Errorf("no actionable message:\n%s", logs)
	}
	if s := h.b.Stats(); s.Rejected[telegrams.Authentication] != 3 || s.Telegrams != 0 {
		t.Errorf("stats %+v", s)
	}
}

// slowReader hands out its chunks one per Read, then reports silence.
type slowReader struct {
	mu     sync.Mutex
	chunks [][]byte
}

func (r *slowReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.chunks) == 0 {
		time.Sleep(50 * time.Millisecond)
		return 0, p1.ErrSilence
	}
	n := copy(p, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

func TestTCPSourceAndKeyNeverLeaks(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "#")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	frame := readFile(t, "smarty-2018-real.frame")
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(frame)
		time.Sleep(5 * time.Second)
	}()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := port.Open(ctx, port.Options{Device: "tcp://" + l.Addr().String(), ReadTimeout: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	// A wrong auth key too, so that the failure paths log as well.
	o := testOptions(broker.URL, logs, decrypt.Options{Key: key(t, realKey), Keys: map[decrypt.Title]decrypt.Key{{'X'}: *key(t, testKey)}})
	h := start(t, o, src)
	sub.WaitValue("smarty/SAG1030700114004/1-0:1.8.0", "6.695", 10*time.Second)
	h.stop(t)
	var all strings.Builder
	all.WriteString(logs.String())
	for topic, payload := range sub.Topics("") {
		all.WriteString(topic + " " + payload + "\n")
	}
	for _, k := range []string{realKey, testKey, strings.ToLower(realKey), "D4 91 47"} {
		if strings.Contains(all.String(), k) {
			t.Errorf("key %s appears in logs or topics", k)
		}
	}
	if !strings.Contains(logs.String(), "meter port opened") {
		t.Errorf("no log of the TCP port")
	}
}

// plainTelegram builds a DSMR telegram of meter SAG…0001 with the given
// object lines and a valid CRC.
func plainTelegram(lines ...string) []byte {
	b := []byte("/Lux5\\253663629_D\r\n\r\n0-0:42.0.0(53414731303330373030303030303031)\r\n")
	for _, l := range lines {
		b = append(b, l+"\r\n"...)
	}
	b = append(b, '!')
	b = append(b, fmt.Sprintf("%04X\r\n", crc16.Checksum(b))...)
	return b
}

// TestDiscoveryGrowsAndTotalsNeverFall: a new OBIS code extends the
// meter's discovery; a total lower than the last one is not published.
func TestDiscoveryGrowsAndTotalsNeverFall(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/#", "homeassistant/#")
	logs := &logBuffer{}
	r := &slowReader{}
	h := start(t, testOptions(broker.URL, logs, decrypt.Options{}), r)
	sub.WaitValue("smarty/status/test", "online", 10*time.Second)
	feed := func(tg []byte) {
		r.mu.Lock()
		r.chunks = append(r.chunks, tg)
		r.mu.Unlock()
	}
	cfgTopic := "homeassistant/device/SAG1030700000001/config"
	feed(plainTelegram("1-0:1.8.0(000100.000*kWh)"))
	sub.WaitValue("smarty/SAG1030700000001/1-0:1.8.0", "100.000", 5*time.Second)
	testenv.WaitFor(t, 5*time.Second, "discovery", func() bool { v, _ := sub.Get(cfgTopic); return strings.Contains(v, "1-0_1_8_0") })
	if v, _ := sub.Get(cfgTopic); strings.Contains(v, "1-0_2_8_0") {
		t.Fatal("export announced before the meter sent it")
	}
	feed(plainTelegram("1-0:1.8.0(000101.000*kWh)", "1-0:2.8.0(000005.000*kWh)"))
	testenv.WaitFor(t, 5*time.Second, "discovery with the new code", func() bool { v, _ := sub.Get(cfgTopic); return strings.Contains(v, "1-0_2_8_0") })
	feed(plainTelegram("1-0:1.8.0(000099.000*kWh)", "1-0:2.8.0(000006.000*kWh)"))
	sub.WaitValue("smarty/SAG1030700000001/1-0:2.8.0", "6.000", 5*time.Second)
	if v, _ := sub.Get("smarty/SAG1030700000001/1-0:1.8.0"); v != "101.000" {
		t.Errorf("import total = %s after a lower reading; want it held at 101.000", v)
	}
	h.stop(t)
	if s := h.b.Stats(); s.Decreasing != 1 {
		t.Errorf("decreasing = %d, want 1", s.Decreasing)
	}
	if !strings.Contains(logs.String(), "a total went down; not publishing it") {
		t.Error("the lower total was not logged")
	}
}

// TestBrokerWithoutMQTT5: a broker that answers MQTT 5 with a 3.1.1
// refusal gets a log line that names the likely cause.
func TestBrokerWithoutMQTT5(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			c.Read(buf)
			c.Write([]byte{0x20, 0x02, 0x00, 0x01}) // 3.1.1: unacceptable protocol version
			c.Close()
		}
	}()
	logs := &logBuffer{}
	h := start(t, testOptions("mqtt://"+l.Addr().String(), logs, decrypt.Options{}), &slowReader{})
	testenv.WaitFor(t, 10*time.Second, "MQTT 5 hint", func() bool { return strings.Contains(logs.String(), "may not support MQTT 5") })
	t.Log(logs.String())
	h.stop(t)
	if !strings.Contains(logs.String(), "cannot connect to MQTT broker") {
		t.Errorf("no connection warning:\n%s", logs)
	}
}

// TestOldMeterOverMQTT: a DSMR 2.2 telegram (dsmr_parser's TELEGRAM_V2_2
// form, no CRC) gives its gas reading from the continuation line in m³;
// an empty M-Bus slot (700101010000W) is neither announced nor published.
func TestOldMeterOverMQTT(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	sub := testenv.Subscribe(t, broker.URL, "smarty/#", "homeassistant/#")
	tg := "/ISk5\\2MT382-1004\r\n\r\n0-0:96.1.1(4B384547303034303436333935353037)\r\n1-0:1.8.1(00001.001*kWh)\r\n" +
		"0-1:24.1.0(3)\r\n0-1:24.3.0(161107190000)(00)(60)(1)(0-1:24.2.1)(m3)\r\n(00001.001)\r\n" +
		"0-2:24.1.0(003)\r\n0-2:24.2.1(700101010000W)(00000000)\r\n!\r\n"
	h := start(t, testOptions(broker.URL, &logBuffer{}, decrypt.Options{}), &slowReader{chunks: [][]byte{[]byte(tg)}})
	const meter = "K8EG004046395507"
	sub.WaitValue("smarty/"+meter+"/0-1:24.3.0", "1.001", 10*time.Second)
	testenv.WaitFor(t, 5*time.Second, "discovery", func() bool {
		v, _ := sub.Get("homeassistant/device/" + meter + "/config")
		return strings.Contains(v, "0-1_24_3_0")
	})
	cfg, _ := sub.Get("homeassistant/device/" + meter + "/config")
	var dev struct {
		Components map[string]map[string]any `json:"components"`
	}
	if err := json.Unmarshal([]byte(cfg), &dev); err != nil {
		t.Fatal(err)
	}
	gas := 0
	for id, c := range dev.Components {
		if strings.Contains(id, "24_3_0") {
			gas++
			if c["device_class"] != "gas" || c["unit_of_measurement"] != "m³" || c["state_class"] != "total_increasing" {
				t.Errorf("gas component %v", c)
			}
		}
		if strings.Contains(id, "0-2_24_2_1") {
			t.Errorf("empty slot announced: %v", c)
		}
	}
	if gas != 1 {
		t.Errorf("%d gas components in %s", gas, cfg)
	}
	h.stop(t)
	if _, ok := sub.Get("smarty/" + meter + "/0-2:24.2.1"); ok {
		t.Errorf("empty M-Bus slot published")
	}
}

// TestBytesButNoFrame: noise on the line (the wrong speed, a cable that
// does not invert) gets one warning naming those causes, and a counter.
func TestBytesButNoFrame(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	logs := &logBuffer{}
	noise := bytes.Repeat([]byte{0x55, 0xAA, 0x0F, 0xF0}, 512)
	h := start(t, testOptions(broker.URL, logs, decrypt.Options{Key: key(t, testKey)}), &slowReader{chunks: [][]byte{noise, noise, noise}})
	testenv.WaitFor(t, 10*time.Second, "the warning", func() bool { return strings.Contains(logs.String(), "no valid telegram for a while") })
	h.stop(t)
	if !strings.Contains(logs.String(), "inverts the signal") || h.b.Stats().Quiet != 1 {
		t.Errorf("quiet %d, log:\n%s", h.b.Stats().Quiet, logs)
	}
}
