package cli

import (
	"strings"
	"testing"
	"time"
)

// Values set over the environment reach every kind of setting, embedded
// ones included, and win over the process environment; a bad one is a
// configuration error that names the variable and never shows a secret.
func TestEnvSetsOverTheEnvironment(t *testing.T) {
	var c Config
	env := processEnv().With(map[string]string{
		"SMARTY_MODE": "forward", "SMARTY_BAUD": "9600", "SMARTY_KEY": testKey, "SMARTY_METER_TIMEOUT": "90s",
		"SMARTY_MQTT_PASSWORD": "pw", "SMARTY_VERIFY_TAG": "false",
	})
	if err := env.Process(&c); err != nil {
		t.Fatal(err)
	}
	if c.Mode != "forward" || c.Baud != 9600 || !c.Key.set || time.Duration(c.MeterTimeout) != 90*time.Second ||
		c.MQTTPassword != "pw" || bool(c.VerifyTag) || c.TopicPrefix != "smarty" {
		t.Errorf("settings not taken: %+v", c)
	}
	for name, value := range map[string]string{"SMARTY_BAUD": "fast", "SMARTY_KEY": "D491470F47126332B07D1923B35041" + "8Z"} {
		err := processEnv().With(map[string]string{name: value}).Process(&Config{})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: %v, want an error naming the variable", name, value, err)
		}
		if name == "SMARTY_KEY" && err != nil && strings.Contains(err.Error(), value[:20]) {
			t.Errorf("the error shows the key: %v", err)
		}
		if _, ok := err.(configError); !ok {
			t.Errorf("%s: %T, want a configuration error (exit 2)", name, err)
		}
	}
}
