package cli

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

// TestAddonVocabulary: the option names the add-on's log and Problem fixes
// use are those of its configuration page, and in the add-on neither says
// a SMARTY_* variable: here a serial port that does not exist (no_port)
// and a key of the wrong length, in the log, the Problem's fix and the
// error the add-on stops with.
func TestAddonVocabulary(t *testing.T) {
	b, err := os.ReadFile("addon/translations/en.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var en struct {
		Configuration map[string]struct{ Name string } `yaml:"configuration"`
	}
	if err := yaml.Unmarshal(b, &en); err != nil {
		t.Fatal(err)
	}
	for option, name := range addonOptionNames {
		if en.Configuration[option].Name != name {
			t.Errorf("option %s: %q here, %q on the configuration page", option, name, en.Configuration[option].Name)
		}
	}
	for option := range addonVariables {
		if _, ok := addonOptionNames[option]; !ok {
			t.Errorf("option %s has no name", option)
		}
	}
	words := addonVocabulary()
	if got := words.Replace("set SMARTY_KEYS or SMARTY_KEY; SMARTY_BAUD=115200"); got != "set the option “Keys of several meters” or the option “Decryption key”; the option “Serial speed” set to 115200" {
		t.Errorf("rewritten: %s", got)
	}

	broker := testenv.Mosquitto(t, "")
	calls := 0
	s := fakeSupervisor(t, mqttService{Host: "127.0.0.1", Port: broker.Port}, &calls)
	dir := t.TempDir()
	sub := testenv.Subscribe(t, broker.URL, "smarty/bridge/#")
	os.WriteFile(dir+"/options.json", []byte(`{"mode":"bridge","device":"`+dir+`/ttyNone","key":"`+testKey+`","baud":115200,"topic_prefix":"smarty","discovery_prefix":"homeassistant","discovery":"device","meter_timeout":5,"log_level":"info","mqtt_client_id":"vocab"}`), 0o600)
	cmd, _, stderr := command(map[string]string{"SMARTY_ADDON_OPTIONS": dir + "/options.json", "SUPERVISOR_URL": s.URL,
		"SUPERVISOR_TOKEN": "test-token", "SMARTY_STATE_DIR": dir}, "addon")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var attrs struct{ Explanation, Fix string }
	testenv.WaitFor(t, 20*time.Second, "no_port", func() bool {
		v, _ := sub.Get("smarty/bridge/vocab/problem")
		return json.Unmarshal([]byte(v), &attrs) == nil && strings.Contains(attrs.Explanation, "cannot be opened")
	})
	stopProcess(t, cmd)
	variable := regexp.MustCompile(`SMARTY_[A-Z_]+`)
	if !strings.Contains(attrs.Fix, "“Serial port”") || variable.MatchString(attrs.Fix) {
		t.Errorf("the Problem's fix: %q, want the option Serial port", attrs.Fix)
	}
	if v := variable.FindAllString(stderr.String(), -1); len(v) > 0 || !strings.Contains(stderr.String(), "“Serial port”") {
		t.Errorf("the add-on's log names %v:\n%s", v, stderr)
	}

	os.WriteFile(dir+"/options.json", []byte(`{"mode":"bridge","device":"`+dir+`/ttyNone","key":"0123","baud":115200,"topic_prefix":"smarty","discovery_prefix":"homeassistant","discovery":"device","meter_timeout":5,"log_level":"info"}`), 0o600)
	cmd, out, errb := command(map[string]string{"SMARTY_ADDON_OPTIONS": dir + "/options.json", "SUPERVISOR_URL": s.URL,
		"SUPERVISOR_TOKEN": "test-token", "SMARTY_STATE_DIR": dir}, "addon")
	_ = cmd.Run()
	if all := out.String() + errb.String(); variable.MatchString(all) || !strings.Contains(all, "“Decryption key”") {
		t.Errorf("a bad key in the add-on says:\n%s", all)
	}
}
