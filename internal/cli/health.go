package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// healthGrace is how long a lost broker connection still counts as
// healthy: autopaho reconnects by itself, and a restart would not help.
const healthGrace = 5 * time.Minute

// runHealth is `smartybridge health`: exit 0 while the running process is
// connected to the broker (or lost it only recently). It says nothing of
// the meter, so that an unplugged cable never restarts the container.
func runHealth(env Env, stdout io.Writer) error {
	path := env.Or("SMARTY_HEALTH_FILE", "/tmp/smartybridge.health")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("health: %w (not started, or SMARTY_HEALTH_FILE unset)", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return errors.New("health: unreadable state file")
	}
	state := f[0]
	sec, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return errors.New("health: unreadable state file")
	}
	if len(f) >= 3 {
		if pid, err := strconv.Atoi(f[2]); err == nil && !processAlive(pid) {
			return fmt.Errorf("health: the process that wrote %s (pid %d) is gone", path, pid)
		}
	}
	since := time.Since(time.Unix(sec, 0)).Round(time.Second)
	switch {
	case state == "up":
		fmt.Fprintf(stdout, "connected to the broker for %s\n", since)
		return nil
	case state == "down" && since < healthGrace:
		fmt.Fprintf(stdout, "broker lost %s ago; reconnecting\n", since)
		return nil
	}
	return fmt.Errorf("health: no broker connection for %s", since)
}

// processAlive reports whether a process with that id runs. On Unix,
// signal 0 asks without disturbing it (a process of another user counts);
// on Windows, finding it already opens it.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	if runtime.GOOS == "windows" {
		return true
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, os.ErrPermission)
}
