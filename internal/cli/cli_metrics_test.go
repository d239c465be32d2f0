package cli

import (
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

// scrape fetches /metrics and parses it with Prometheus's own parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("not the Prometheus text format: %v", err)
	}
	return fams
}

// value returns the value of the series of name whose labels include
// labels ("k=v" pairs); NaN if there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return math.NaN()
	}
next:
	for _, m := range f.Metric {
		for _, want := range labels {
			k, v, _ := strings.Cut(want, "=")
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return math.NaN()
}

// TestMetricsEndpoint scrapes the real binary during a run: counters match
// what was sent, types are right, the runtime's metrics are there.
func TestMetricsEndpoint(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	_, stderr := startBinary(t, map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": testKey,
		"SMARTY_MQTT_CLIENT_ID": "metrics", "SMARTY_METRICS_LISTEN": addr})
	testenv.WaitFor(t, 10*time.Second, "metrics endpoint", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	telegram, _ := os.ReadFile("testdata/smarty-2026.telegram")
	key, _ := decrypt.ParseKey(testKey)
	wrong, _ := decrypt.ParseKey("0123456789ABCDEF0123456789ABCDEF")
	title := decrypt.Title{'S', 'Y', 'S', 'T', 'E', 'M', 'I', 'D'}
	noise := []byte(strings.Repeat("noise on the line ", 10)) // 180 bytes, no frame start
	var sent int
	write := func(b []byte) {
		pty.Write(b)
		sent += len(b)
		time.Sleep(150 * time.Millisecond)
	}
	write(noise)
	for c := uint32(1); c <= 3; c++ {
		write(decrypt.Seal(nil, key, decrypt.DefaultAuthKey, title, c, telegram))
	}
	write(decrypt.Seal(nil, key, decrypt.DefaultAuthKey, title, 3, telegram)) // a replay
	// Frames that fail authentication are rejected, not skipped: bytes
	// skipped are the bytes that formed no frame, here the noise.
	for c := uint32(4); c <= 5; c++ {
		write(decrypt.Seal(nil, wrong, decrypt.DefaultAuthKey, title, c, telegram))
	}
	before := time.Now()
	testenv.WaitFor(t, 10*time.Second, "every frame counted", func() bool {
		f := scrape(t, addr)
		return value(f, "smartybridge_telegrams_total", "meter=SAG1030700012701") == 3 &&
			value(f, "smartybridge_frames_rejected_total", "reason=authentication") == 2 &&
			value(f, "smartybridge_frames_rejected_total", "reason=replayed") >= 1
	})
	if v := value(scrape(t, addr), "smartybridge_frames_rejected_total", "reason=replayed"); v != 1 {
		t.Errorf("frames_rejected_total{reason=replayed} = %v, want 1 (one replayed frame)", v)
	}
	f := scrape(t, addr)
	for name, want := range map[string]float64{
		"smartybridge_bytes_read_total":       float64(sent),
		"smartybridge_bytes_skipped_total":    float64(len(noise)),
		"smartybridge_mqtt_connected":         1,
		"smartybridge_telegrams_lost_total":   0,
		"smartybridge_telegrams_resent_total": 0,
	} {
		if got := value(f, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if v := value(f, "smartybridge_build_info", "version="+version); v != 1 {
		t.Errorf("build_info{version=%q} = %v", version, v)
	}
	if v := value(f, "smartybridge_states_published_total"); !(v >= 3*40) {
		t.Errorf("states_published_total = %v, want the states of 3 telegrams", v)
	}
	last := value(f, "smartybridge_last_telegram_timestamp_seconds", "meter=SAG1030700012701")
	if d := before.Sub(time.Unix(int64(last), 0)); d < -time.Second || d > 5*time.Second {
		t.Errorf("last_telegram_timestamp_seconds %v is %v before the check", last, d)
	}
	for name, typ := range map[string]dto.MetricType{
		"smartybridge_telegrams_total": dto.MetricType_COUNTER, "smartybridge_frames_rejected_total": dto.MetricType_COUNTER,
		"smartybridge_mqtt_connected": dto.MetricType_GAUGE, "go_goroutines": dto.MetricType_GAUGE,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
	} {
		if f[name] == nil || f[name].GetType() != typ {
			t.Errorf("%s: %v, want type %v", name, f[name].GetType(), typ)
		}
	}
	if strings.Contains(stderr.String(), testKey) {
		t.Error("the key is in the log")
	}
}

// TestMetricsForwardMode: the forwarder's queue is exposed.
func TestMetricsForwardMode(t *testing.T) {
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	startBinary(t, map[string]string{"SMARTY_MODE": "forward", "SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL,
		"SMARTY_MQTT_CLIENT_ID": "metrics-fwd", "SMARTY_METRICS_LISTEN": addr})
	frame, _ := os.ReadFile("testdata/smarty-2026.frame")
	time.Sleep(500 * time.Millisecond)
	pty.Write(frame)
	testenv.WaitFor(t, 10*time.Second, "a frame queued (no decryptor)", func() bool {
		f := scrape(t, addr)
		return value(f, "smartybridge_forward_queue_frames") == 1 && value(f, "smartybridge_frames_forwarded_total") >= 1
	})
}

// TestMetricsListenRejected: a wrong address stops the start with exit 2.
func TestMetricsListenRejected(t *testing.T) {
	cmd, _, stderr := command(map[string]string{"SMARTY_DEVICE": "/dev/null", "SMARTY_METRICS_LISTEN": "9108"})
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(stderr.String(), "SMARTY_METRICS_LISTEN") {
		t.Errorf("exit %d (%v):\n%s", code, err, stderr)
	}
}
