package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smartybridge/smartybridge/internal/testenv"
)

// TestPermissionDeniedNamesTheGroup runs the real binary as an
// unprivileged user (nobody) on a serial device it may not open: the log
// says why and names the dialout group, not "check the cable".
func TestPermissionDeniedNamesTheGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	pty := testenv.Socat(t)
	// nobody may reach the device's link and the binary, not the device.
	for _, d := range []string{filepath.Dir(pty.Device), filepath.Dir(filepath.Dir(pty.Device))} {
		os.Chmod(d, 0o755)
	}
	real, err := filepath.EvalSymlinks(pty.Device)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(real, 0o600) // root's only, as a tty outside dialout is
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	os.Chmod(filepath.Dir(dir), 0o755)
	bin := filepath.Join(dir, "smartybridge")
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd, _, stderr := command(map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": "mqtt://127.0.0.1:1", "SMARTY_STATE_DIR": dir})
	cmd.Path, cmd.Args[0] = bin, bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	stopProcess(t, cmd)
	log := stderr.String()
	if !strings.Contains(log, "permission denied") || !strings.Contains(log, "dialout") {
		t.Errorf("no permission hint:\n%s", log)
	}
}

// TestSilentMeterPort: the real binary on a pty that never sends a byte
// (the P1 port closed, the data-request line not driven, the wrong
// device) says so after 30 s, with the causes.
func TestSilentMeterPort(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 30 s")
	}
	broker := testenv.Mosquitto(t, "")
	pty := testenv.Socat(t)
	cmd, _, _ := command(map[string]string{"SMARTY_DEVICE": pty.Device, "SMARTY_MQTT_URL": broker.URL, "SMARTY_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	stderr := &testenv.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(stderr.String(), "not one byte came in 30s") {
		time.Sleep(500 * time.Millisecond)
	}
	stopProcess(t, cmd)
	log := stderr.String()
	if !strings.Contains(log, "not one byte came in 30s") || !strings.Contains(log, "open the meter's P1 port") {
		t.Errorf("no silence warning:\n%s", log)
	}
}
