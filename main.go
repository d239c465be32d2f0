// Command smartybridge carries the readings of a Luxembourg Smarty smart
// meter (Sagemcom T210-D) from its P1 port to Home Assistant over MQTT.
//
// Usage:
//
//	smartybridge               run the bridge (SMARTY_MODE)
//	smartybridge demo          the whole bridge with a simulated meter and an embedded broker
//	smartybridge simulate [P]  write a simulated meter's frames to stdout or P
//	smartybridge decode [F…]   decode P1 captures to JSON lines
//	smartybridge -h            list the SMARTY_* variables
//
// Configuration comes from SMARTY_* environment variables; -h lists them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is the release; the add-on's config.yaml carries the same.
var version = "0.1.0"

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // the command ran but achieved nothing (no telegram decoded)
	exitConfig = 2 // bad configuration or arguments
)

// configError marks an error in the configuration or arguments: exit 2.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// errNothingDecoded ends a run that saw frames but decoded none: exit 1.
var errNothingDecoded = errors.New("no telegram decoded")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

func exitStatus(err error, stderr io.Writer) int {
	var ce configError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "smartybridge: %v\n", err)
		return exitConfig
	case errors.Is(err, errNothingDecoded):
		return exitFailed
	default:
		fmt.Fprintf(stderr, "smartybridge: %v\n", err)
		return exitFailed
	}
}

// run dispatches the command line; it returns when ctx is cancelled or the
// command is done.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "-h", "-help", "--help", "help":
		return usage(stdout)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "smartybridge", version)
		return nil
	case "decode":
		return runDecode(ctx, args, stdin, stdout, stderr)
	case "demo":
		return runDemo(ctx, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args, stdout)
	case "", "run":
		return runBridge(ctx, stderr)
	case "addon":
		return runAddon(ctx, stderr)
	case "health":
		return runHealth(stdout)
	}
	return configError{fmt.Errorf("unknown command %q; try smartybridge -h", cmd)}
}
