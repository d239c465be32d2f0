package bridge

import (
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/internal/telegrams"
	"github.com/smartybridge/smartybridge/internal/testenv"
)

// TestBrokerACL runs mosquitto with the ACL shipped in
// packaging/mosquitto/smartybridge.acl and a login per part: the split
// pipeline works, Home Assistant's login reads the states, and neither it
// nor a login without rights can publish frames or confirmations.
func TestBrokerACL(t *testing.T) {
	passwd, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mosquitto_passwd not installed (it comes with mosquitto)")
		}
		t.Skip("mosquitto_passwd not installed")
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "passwd")
	os.WriteFile(pwFile, nil, 0o600)
	for _, user := range []string{"forwarder", "decryptor", "homeassistant", "intruder"} {
		if out, err := exec.Command(passwd, "-b", pwFile, user, user+"-pw").CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd: %v %s", err, out)
		}
	}
	acl, err := filepath.Abs("../packaging/mosquitto/smartybridge.acl")
	if err != nil {
		t.Fatal(err)
	}
	broker := testenv.Mosquitto(t, "allow_anonymous false\npassword_file "+pwFile+"\nacl_file "+acl)
	login := func(o Options, user string) Options {
		o.MQTT.Username, o.MQTT.Password = user, user+"-pw"
		return o
	}
	logs := &logBuffer{}
	dec, _ := runDecryptor(t, login(opts(t, broker.URL, "dec", logs, sysKeys(t)), "decryptor"), SplitOptions{StateDir: t.TempDir()})
	src := &slowReader{}
	fwd, _ := runForwarder(t, login(opts(t, broker.URL, "fwd", logs, decrypt.Options{}), "forwarder"), ForwardOptions{}, src)
	ha := loginSubscriber(t, broker.URL, "homeassistant", "smarty/#")
	ha.WaitValue("smarty/status/dec", "online", 10*time.Second)
	ha.WaitValue("smarty/status/fwd", "online", 10*time.Second)
	time.Sleep(300 * time.Millisecond)

	src.feed(sealed(t, 1))
	ha.WaitValue("smarty/SAG1030700012701/1-0:1.8.0", "273.764", 10*time.Second)
	testenv.WaitFor(t, 10*time.Second, "confirmed", func() bool { return fwd.Queued() == 0 })

	// What Home Assistant's login and one without rights may not do.
	forged := sealed(t, 999)
	forged[300] ^= 1
	for _, user := range []string{"homeassistant", "intruder"} {
		c := loginSubscriber(t, broker.URL, user)
		for _, p := range []*paho.Publish{
			{Topic: "smarty/raw/" + sysTitle.String(), Payload: forged, QoS: 1},
			{Topic: "smarty/confirm/" + sysTitle.String(), Payload: []byte(`{"counter":4294967295}`), QoS: 1, Retain: true},
			{Topic: "smarty/SAG1030700012701/1-0:1.8.0", Payload: []byte("999999.999"), QoS: 1, Retain: true},
		} {
			resp, err := c.Client.Publish(context.Background(), p)
			if err == nil && (resp == nil || resp.ReasonCode < 0x80) {
				t.Errorf("%s may publish on %s", user, p.Topic)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	if dec.Stats().Rejected[telegrams.Authentication] != 0 || fwd.Forged() != 0 {
		t.Errorf("refused messages reached smartybridge: %d authentication failures, %d forged confirmations", dec.Stats().Rejected[telegrams.Authentication], fwd.Forged())
	}
	if v, _ := ha.Get("smarty/SAG1030700012701/1-0:1.8.0"); v != "273.764" {
		t.Errorf("state overwritten: %s", v)
	}
	// The pipeline still works.
	src.feed(sealed(t, 2))
	testenv.WaitFor(t, 10*time.Second, "second frame", func() bool { return dec.Stats().Telegrams == 2 && fwd.Queued() == 0 })
	if strings.Contains(logs.String(), "not authorized") {
		t.Errorf("smartybridge itself hit the ACL:\n%s", logs)
	}
}

// loginSubscriber is testenv.Subscribe with a login.
func loginSubscriber(t *testing.T, brokerURL, user string, topics ...string) *testenv.Subscriber {
	t.Helper()
	u, _ := url.Parse(brokerURL)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.SubscribeConn(t, c, &paho.Connect{ClientID: "acl-" + user, CleanStart: true, KeepAlive: 30,
		Username: user, UsernameFlag: true, Password: []byte(user + "-pw"), PasswordFlag: true}, topics...)
}
