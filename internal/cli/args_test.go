package cli

import (
	"bytes"
	"strings"
	"testing"
)

// Arguments a command does not take are configuration errors (exit 2)
// that say what it takes; `help CMD` is that command's help.
func TestArgumentsAreChecked(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "-x"}, "demo takes no arguments"},
		{[]string{"run", "extra"}, "run takes no arguments"},
		{[]string{"version", "foo"}, "version takes no arguments"},
		{[]string{"health", "x"}, "health takes no arguments"},
		{[]string{"decode", "testdata/smarty-2026.frame", "-raw", "x"}, "flags go before the files"},
		{[]string{"quarters", "day.bin", "-reference-power", "7"}, "flags go before the files"},
		{[]string{"simulate", "-x"}, "simulate takes no flags"},
		{[]string{"help", "nope"}, "no such command"},
	} {
		var out, errb bytes.Buffer
		err := run(t.Context(), tt.args, processEnv(), strings.NewReader(""), &out, &errb)
		if status := exitStatus(err, &errb); status != exitConfig || !strings.Contains(errb.String(), tt.want) {
			t.Errorf("%v: status %d, %q; want 2 and %q", tt.args, status, errb.String(), tt.want)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"help", "decode"}, processEnv(), nil, &out, &out); err != nil || out.String() != commandHelp["decode"] {
		t.Errorf("help decode: %v %q", err, out.String())
	}
}

// `smartybridge simulate | smartybridge decode`, as the README has it,
// decodes without a key: the simulated meter's key is the public demo key.
func TestSimulateIntoDecode(t *testing.T) {
	var frames, errb bytes.Buffer
	env := processEnv().With(map[string]string{"SMARTY_SIM_COUNT": "3", "SMARTY_DEMO_INTERVAL": "1ms"})
	if err := run(t.Context(), []string{"simulate"}, env, nil, &frames, &errb); err != nil {
		t.Fatal(err, errb.String())
	}
	var out bytes.Buffer
	errb.Reset()
	if err := run(t.Context(), []string{"decode"}, processEnv(), &frames, &out, &errb); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 3 || !strings.Contains(errb.String(), "decoded 3 telegrams") {
		t.Errorf("%d lines; %s", n, errb.String())
	}
}
