package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// Another state directory on the same machine (a run with sudo, then
// under systemd) is the same instance to the broker and to Home
// Assistant: the client id's suffix comes from the machine's id. Without
// one it is random, and kept in the state directory.
func TestClientIDSameMachine(t *testing.T) {
	id := filepath.Join(t.TempDir(), "machine-id")
	if err := os.WriteFile(id, []byte("0123456789abcdef0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := machineIDFiles
	t.Cleanup(func() { machineIDFiles = saved })
	machineIDFiles = []string{id}
	a, b := defaultClientID("bridge", t.TempDir(), "/dev/ttyUSB0"), defaultClientID("bridge", t.TempDir(), "/dev/ttyUSB0")
	if a != b {
		t.Errorf("two state directories, two client ids: %s, %s", a, b)
	}
	if f := defaultClientID("forward", t.TempDir(), "/dev/ttyUSB0"); f == a || f[len(f)-6:] != a[len(a)-6:] {
		t.Errorf("forwarder %s, bridge %s: want the mode apart and the same suffix", f, a)
	}
	// A second bridge on the same machine, on another port (a second meter), is another instance.
	if o := defaultClientID("bridge", t.TempDir(), "/dev/ttyUSB1"); o == a {
		t.Errorf("two ports, one client id: %s", o)
	}
	machineIDFiles = []string{filepath.Join(t.TempDir(), "none")}
	dir := t.TempDir()
	c, d := defaultClientID("bridge", dir, "/dev/ttyUSB0"), defaultClientID("bridge", t.TempDir(), "/dev/ttyUSB0")
	if c == d || defaultClientID("bridge", dir, "/dev/ttyUSB0") != c {
		t.Errorf("without a machine id: %s, %s; want random, kept per state directory", c, d)
	}
}
