package cli

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// dockerCopySources returns the sources of a Dockerfile's COPY lines that
// come from the build context (not --from another stage).
func dockerCopySources(t *testing.T, df string) []string {
	var out []string
	for _, line := range strings.Split(df, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "COPY" {
			continue
		}
		args := f[1:]
		fromStage := false
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			fromStage = fromStage || strings.HasPrefix(args[0], "--from")
			args = args[1:]
		}
		if !fromStage {
			out = append(out, args[:len(args)-1]...)
		}
	}
	return out
}

// TestContainerImage checks what can be checked of the images without a
// Docker engine: pinned bases, a build context that holds what COPY
// takes, a non-root user, the health check and the entry point.
func TestContainerImage(t *testing.T) {
	for _, tt := range []struct {
		file, entry string
		nonRoot     bool
	}{
		{"Dockerfile", `ENTRYPOINT ["/smartybridge"]`, true},
		{"addon/Dockerfile", `ENTRYPOINT ["/usr/bin/smartybridge", "addon"]`, false},
	} {
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		df := string(b)
		for _, m := range regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1) {
			if image := m[1]; image != "scratch" && !regexp.MustCompile(`:[^:]*\d[^:]*$`).MatchString(image) {
				t.Errorf("%s: FROM %s is not pinned", tt.file, image)
			}
		}
		// The build context is the repository root for both.
		for _, src := range dockerCopySources(t, df) {
			if _, err := os.Stat(src); err != nil {
				t.Errorf("%s copies %s, which the build context lacks", tt.file, src)
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "HEALTHCHECK", tt.entry} {
			if !strings.Contains(df, want) {
				t.Errorf("%s lacks %s", tt.file, want)
			}
		}
		if tt.nonRoot {
			user := regexp.MustCompile(`(?m)^USER\s+(\d+)(:\d+)?$`).FindStringSubmatch(df)
			if user == nil || user[1] == "0" {
				t.Errorf("%s does not run as a numeric non-root user", tt.file)
			}
			if !strings.Contains(df, "ca-certificates.crt") {
				t.Errorf("%s has no CA certificates for mqtts://", tt.file)
			}
		}
	}
}

// TestCompose checks the compose example against the image and the
// program: the released image, the state volume where the image keeps
// state, a device, an environment file.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image    string   `yaml:"image"`
			EnvFile  string   `yaml:"env_file"`
			Devices  []string `yaml:"devices"`
			GroupAdd []string `yaml:"group_add"`
			Volumes  []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	s, ok := c.Services["smartybridge"]
	if !ok {
		t.Fatal("no smartybridge service")
	}
	if s.Image != "ghcr.io/smartybridge/smartybridge:"+version {
		t.Errorf("image %s, want the release %s", s.Image, version)
	}
	if len(s.Devices) == 0 || s.EnvFile == "" || len(s.GroupAdd) == 0 {
		t.Errorf("service lacks a device, an env file or the serial group: %+v", s)
	}
	df, _ := os.ReadFile("Dockerfile")
	state := regexp.MustCompile(`SMARTY_STATE_DIR=(\S+)`).FindSubmatch(df)
	if state == nil || len(s.Volumes) == 0 || !strings.HasSuffix(s.Volumes[0], ":"+string(state[1])) {
		t.Errorf("volumes %v do not hold the image's state directory %s", s.Volumes, state)
	}
}

// TestSystemdUnit checks the unit's promises (systemd-analyze verify, run
// by .ci/run, checks its syntax) and that the environment file example
// sets only variables the program knows.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("packaging/systemd/smartybridge.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"DynamicUser=yes", "SupplementaryGroups=dialout", "StateDirectory=smartybridge", "Restart=on-failure",
		"ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
		"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "DeviceAllow=char-ttyUSB rw", "EnvironmentFile=/etc/smartybridge/smartybridge.env"} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("unit lacks %s", want)
		}
	}
	known := configVariables()
	env, err := os.Open(filepath.Join("packaging", "systemd", "smartybridge.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	sc := bufio.NewScanner(env)
	n := 0
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "# ")
		name, _, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(name, "SMARTY_") {
			continue
		}
		n++
		if !known[name] {
			t.Errorf("smartybridge.env sets %s, which smartybridge does not read", name)
		}
	}
	if n < 3 {
		t.Errorf("smartybridge.env sets %d variables", n)
	}
}
