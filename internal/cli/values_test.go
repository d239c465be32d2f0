package cli

import (
	"strings"
	"testing"
	"time"
)

func TestValuesAsPeopleTypeThem(t *testing.T) {
	for in, want := range map[string]any{
		"true": true, "YES": true, " on ": true, "1": true, "false": false, "No": false, "off": false, "0": false, "maybe": nil, "": nil,
	} {
		var f yesNo
		err := f.Decode(in)
		if want == nil {
			if err == nil {
				t.Errorf("yesNo %q accepted", in)
			}
			continue
		}
		if err != nil || bool(f) != want {
			t.Errorf("yesNo %q = %v, %v", in, f, err)
		}
	}
	for in, want := range map[string]time.Duration{
		"60": time.Minute, "1.5": 1500 * time.Millisecond, "60s": time.Minute, "5m": 5 * time.Minute, "1h30m": 90 * time.Minute, " 24h ": 24 * time.Hour,
		"soon": -1, "-5s": -1, "-3": -1, "": -1,
	} {
		var d duration
		err := d.Decode(in)
		if want < 0 {
			if err == nil {
				t.Errorf("duration %q accepted as %s", in, d)
			}
			continue
		}
		if err != nil || time.Duration(d) != want {
			t.Errorf("duration %q = %s, %v", in, d, err)
		}
	}
}

func TestBrokerURLs(t *testing.T) {
	for _, tt := range []struct {
		in, host, user, pass, err string
	}{
		{in: "mqtt://127.0.0.1", host: "127.0.0.1:1883"},
		{in: "mqtts://broker.example", host: "broker.example:8883"},
		{in: " mqtt://h:1884 ", host: "h:1884"},
		{in: "tcp://h", host: "h:1883"},
		{in: "mqtt://h/", host: "h:1883"},
		{in: "mqtt://smarty:pw@h", host: "h:1883", user: "smarty", pass: "pw"},
		{in: "mqtt://h/smarty", err: "no path"},
		{in: "mqtt://h?x=1", err: "no path"},
		{in: "http://h", err: "want mqtt://"},
		{in: "mqtt://", err: "host"},
		{in: "h:1883", err: "want mqtt://"},
	} {
		c := Config{MQTTURL: tt.in}
		o, err := c.mqttOptions()
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || o.URL.Host != tt.host || o.Username != tt.user || o.Password != tt.pass || o.URL.User != nil {
			t.Errorf("%q: %v %v user %q", tt.in, o.URL, err, o.Username)
		}
	}
	c := Config{MQTTURL: "mqtt://a:pw@h", MQTTUsername: "b"}
	if _, err := c.mqttOptions(); err == nil {
		t.Error("two different logins accepted")
	}
}

// TestSeveralBrokers: the nodes of a broker cluster, separated by commas,
// each checked like one broker; a login given once counts for all and is
// kept out of every URL.
func TestSeveralBrokers(t *testing.T) {
	c := Config{MQTTURL: "mqtt://u:secretpw@n1, mqtt://u:secretpw@n2:1884,mqtts://n3"}
	o, err := c.mqttOptions()
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{o.URL.Host}
	for _, u := range o.MoreURLs {
		hosts = append(hosts, u.Host)
		if u.User != nil {
			t.Errorf("%s keeps its login", u.Host)
		}
	}
	if strings.Join(hosts, " ") != "n1:1883 n2:1884 n3:8883" || o.Username != "u" || o.Password != "secretpw" || o.URL.User != nil {
		t.Errorf("brokers %v, login %q", hosts, o.Username)
	}
	if o.TLS == nil || o.TLS.ServerName != "" {
		t.Errorf("a TLS node needs a TLS config checked against each broker's own name: %+v", o.TLS)
	}
	for in, want := range map[string]string{
		"mqtt://n1,,mqtt://n2":                       "empty broker",
		"mqtt://n1,":                                 "empty broker",
		"mqtt://n1,mqtt://n1:1883":                   "twice",
		"mqtt://a:secretpw@n1,mqtt://b:x@n2":         "different logins",
		"mqtt://n1,http://a:secretpw@n2":             "want mqtt://",
		strings.Repeat("mqtt://n,", 40) + "mqtt://n": "at most 32",
		"mqtt://n1,mqtt://a:secretpw@n2/x":           "no path",
	} {
		_, err := (&Config{MQTTURL: in}).mqttOptions()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secretpw") {
			t.Errorf("%q: the error shows the password: %v", in, err)
		}
	}
}
