package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// healthGrace is how long a lost broker connection still counts as
// healthy: autopaho reconnects by itself, and a restart would not help.
const healthGrace = 5 * time.Minute

// runHealth is `smartybridge health`: exit 0 while the running process is
// connected to the broker (or lost it only recently). It says nothing of
// the meter, so that an unplugged cable never restarts the container.
func runHealth(stdout io.Writer) error {
	path := envOr("SMARTY_HEALTH_FILE", "/tmp/smartybridge.health")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("health: %w (not started, or SMARTY_HEALTH_FILE unset)", err)
	}
	state, when, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	sec, err := strconv.ParseInt(when, 10, 64)
	if err != nil {
		return errors.New("health: unreadable state file")
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
