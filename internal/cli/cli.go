// Package cli holds smartybridge's commands: run (bridge, forward and
// decrypt mode), demo, simulate, decode, confirm-key, health, addon and
// version. main.go only wires the process to Main.
//
// Settings come from an Env: the process environment, read through
// envconfig, and values a command sets for the command it starts (the
// add-on's options, the demo's defaults), which take precedence. Nothing is
// ever written to the process environment.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"sort"

	"github.com/smartybridge/smartybridge/bridge"
)

// version and commit name the build; Main sets them once, before any
// command runs, from what main was stamped with.
var version, commit string

// versionLine says which build this is: the release, the commit (from
// the release stamp, else the VCS data Go records in the build) and the
// Go version.
func versionLine() string {
	rev, goVersion := commit, runtime.Version()
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("smartybridge %s (commit %s, %s, %s/%s)", version, rev, goVersion, runtime.GOOS, runtime.GOARCH)
}

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

// takesNoArguments are the commands that take no argument at all.
var takesNoArguments = map[string]bool{"run": true, "demo": true, "addon": true, "health": true, "confirm-key": true,
	"version": true, "-version": true, "--version": true, "-v": true}

// Build names a build: the release, and the commit when stamped.
type Build struct{ Version, Commit string }

// Main runs the command line args and returns the process's exit status.
func Main(ctx context.Context, b Build, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	version, commit = b.Version, b.Commit
	return exitStatus(run(ctx, args, processEnv(), stdin, stdout, stderr), stderr)
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
func run(ctx context.Context, args []string, env Env, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	if cmd == "" {
		cmd = "run"
	}
	if help, ok := commandHelp[cmd]; ok && wantsHelp(args) {
		fmt.Fprint(stdout, help)
		return nil
	}
	// Commands that take no argument say so, rather than run as if
	// nothing was wrong (`demo -x`, `run extra`).
	if takesNoArguments[cmd] && len(args) > 0 {
		help := "smartybridge -h"
		if _, ok := commandHelp[cmd]; ok {
			help = "smartybridge " + cmd + " -h"
		}
		return configError{fmt.Errorf("%s takes no arguments, not %q; settings are SMARTY_* variables (smartybridge -h lists them; see %s)", cmd, args[0], help)}
	}
	switch cmd {
	case "-h", "-help", "--help", "help":
		if len(args) > 0 {
			if help, ok := commandHelp[args[0]]; ok {
				fmt.Fprint(stdout, help)
				return nil
			}
			return configError{fmt.Errorf("help %q: no such command; smartybridge -h lists them", args[0])}
		}
		return usage(stdout)
	case "version", "-version", "--version", "-v":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "decode":
		return runDecode(ctx, args, env, stdin, stdout, stderr)
	case "quarters":
		return runQuarters(ctx, args, env, stdin, stdout, stderr)
	case "demo":
		return runDemo(ctx, env, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, args, env, stdout)
	case "run":
		return runBridge(ctx, env, stderr, nil)
	case "addon":
		return runAddon(ctx, env, stderr)
	case "health":
		return runHealth(env, stdout)
	case "confirm-key":
		return runConfirmKey(env, stdout)
	}
	return configError{fmt.Errorf("unknown command %q: the commands are run, demo, simulate, decode, quarters, confirm-key, health, addon and version (smartybridge -h)", cmd)}
}

// runConfirmKey prints, for every configured meter key, the public key
// that signs the decryptors' confirmations: what a forwarder's
// SMARTY_CONFIRM_KEY is set to. It is derived one-way from the meter key
// and tells nothing about it.
func runConfirmKey(env Env, stdout io.Writer) error {
	var keys KeyConfig
	if err := env.Process(&keys); err != nil {
		return err
	}
	if err := keys.loadKeysFile(); err != nil {
		return configError{err}
	}
	o := keys.decryptOptions()
	if o.Key == nil && len(o.Keys) == 0 {
		return configError{errors.New("confirm-key needs the meter key: set SMARTY_KEY (or SMARTY_KEYS) as for the decryptor")}
	}
	if o.Key != nil {
		fmt.Fprintf(stdout, "SMARTY_CONFIRM_KEY=%s\n", bridge.ConfirmPublicKey(*o.Key))
	}
	titles := make([]string, 0, len(o.Keys))
	byName := map[string]string{}
	for t, k := range o.Keys {
		titles = append(titles, t.String())
		byName[t.String()] = bridge.ConfirmPublicKey(k)
	}
	sort.Strings(titles)
	for _, t := range titles {
		fmt.Fprintf(stdout, "%s SMARTY_CONFIRM_KEY=%s\n", t, byName[t])
	}
	return nil
}
