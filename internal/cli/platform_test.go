package cli

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestPlatformStateDir(t *testing.T) {
	home := func() (string, error) { return "/home/u", nil }
	noHome := func() (string, error) { return "", errors.New("no home") }
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tt := range []struct {
		goos string
		env  map[string]string
		home func() (string, error)
		want string
	}{
		{"linux", nil, home, "/home/u/.local/state/smartybridge"},
		{"linux", map[string]string{"XDG_STATE_HOME": "/var/st"}, home, "/var/st/smartybridge"},
		{"linux", map[string]string{"XDG_STATE_HOME": "relative"}, home, "/home/u/.local/state/smartybridge"},
		{"darwin", nil, home, "/home/u/Library/Application Support/smartybridge"},
		{"windows", map[string]string{"LOCALAPPDATA": `C:\Users\u\AppData\Local`}, home, filepath.Join(`C:\Users\u\AppData\Local`, "smartybridge")},
	} {
		if got := platformStateDir(tt.goos, env(tt.env), tt.home); got != tt.want {
			t.Errorf("%s %v: %s, want %s", tt.goos, tt.env, got, tt.want)
		}
	}
	if got := platformStateDir("linux", env(nil), noHome); filepath.Base(got) != "smartybridge" {
		t.Errorf("without a home: %s", got)
	}
}
