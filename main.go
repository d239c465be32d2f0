// Command smartybridge carries the readings of a Luxembourg Smarty smart
// meter (Sagemcom T210-D) from its P1 port to Home Assistant over MQTT.
//
// Usage:
//
//	smartybridge               run the bridge (SMARTY_MODE)
//	smartybridge demo          the whole bridge with a simulated meter and an embedded broker
//	smartybridge simulate [P]  write a simulated meter's frames to stdout or P
//	smartybridge decode [F…]   decode P1 captures to JSON lines
//	smartybridge confirm-key   print the public key that signs split-mode confirmations
//	smartybridge -h            list the SMARTY_* variables
//
// Configuration comes from SMARTY_* environment variables; -h lists them.
// The commands live in internal/cli; this file only wires the process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/smartybridge/smartybridge/internal/cli"
)

// version is the release; the add-on's config.yaml carries the same.
// tools/release.sh stamps it, and commit, from the tag.
var (
	version = "0.1.0"
	commit  = ""
)

func main() {
	// SIGHUP too (a closed terminal or SSH session, or a "reload"): a
	// clean stop, "offline" and the counters saved, never the runtime's
	// default of dying with status 129. New settings need a restart.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	status := cli.Main(ctx, cli.Build{Version: version, Commit: commit}, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(status)
}
