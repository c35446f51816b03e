// Command dfstream is the command-line face of the dfstream client: it runs
// an embedded dflockd-compatible server, runs commands under a lock or
// semaphore, watches and emits signals, and shows a server's state.
//
// Run "dfstream help" for the commands and "dfstream COMMAND --help" for
// their flags, environment variables, an example and the exit codes.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// env is the process's standard streams, passed to the commands.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

var commands = []struct {
	name, summary string
	run           func(args []string, e *env) error
}{
	{"serve", "run the embedded dflockd-compatible server", runServe},
	{"lock", "run a command while holding an exclusive lock", runLock},
	{"sem", "run a command while holding a semaphore slot", runSem},
	{"watch", "print signals matching a pattern as they arrive", runWatch},
	{"emit", "send a signal and print how many receivers got it", runEmit},
	{"stats", "show a server's locks, semaphores and subscriptions", runStats},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: dfstream COMMAND [flags] [arguments]")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-6s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun \"dfstream COMMAND --help\" for a command's flags, environment, an example")
	fmt.Fprintln(w, "and its exit codes; \"dfstream --version\" for the version.")
	fmt.Fprintln(w, "Flags may be written -flag or --flag, before or after the arguments (lock and")
	fmt.Fprintln(w, "sem: before the --).")
}

func main() {
	os.Exit(run(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}))
}

// run runs the command line args and returns the exit code. Errors are
// printed as one line on stderr.
func run(args []string, e *env) int {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "dfstream: missing command (see dfstream help)")
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && name == "help" {
			return run([]string{args[1], "--help"}, e)
		}
		usage(e.stdout)
		return exitOK
	case "version", "-version", "--version":
		fmt.Fprintln(e.stdout, version())
		return exitOK
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(args[1:], e)
		return report(err, e.stderr)
	}
	fmt.Fprintf(e.stderr, "dfstream: unknown command %q (see dfstream help)\n", name)
	return exitUsage
}

// version is the line of --version: the module version the binary was
// built as ("(devel)" for a plain go build outside a module version), the
// commit when the build knows it, and the Go version and platform.
func version() string {
	v, commit := "(unknown)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		var dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value[:min(len(s.Value), 12)]
			case "vcs.modified":
				if s.Value == "true" {
					dirty = ", modified"
				}
			}
		}
		if commit != "" {
			commit = " (commit " + commit + dirty + ")"
		}
	}
	return fmt.Sprintf("dfstream %s%s %s %s/%s", v, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// report prints err as one line and returns its exit code.
func report(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		err = ee.err
	}
	if err != nil {
		// Library errors are wrapped with lib, which drops their own
		// "dfstream: " prefixes, so the prefix is said once.
		fmt.Fprintf(stderr, "dfstream: %s\n", oneLine(err.Error()))
	}
	return code
}

// oneLine folds a message onto one line.
func oneLine(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '\n' || r == '\r' {
			r = ' '
		}
		out = append(out, r)
	}
	return string(out)
}
