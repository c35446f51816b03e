package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/wire"
)

// Exit codes (sysexits.h where one fits). Each command's --help lists its
// own; the README has them all.
const (
	exitOK          = 0
	exitFailure     = 1  // a failure that fits nowhere else
	exitUsage       = 64 // bad flags, arguments or input (EX_USAGE)
	exitUnavailable = 69 // server unreachable, authentication refused, server error (EX_UNAVAILABLE)
	exitNotAcquired = 73 // lock/sem: not acquired within --acquire-timeout; the command did not run (EX_CANTCREAT)
	exitLeaseLost   = 75 // lock/sem: the lease was lost while the command ran; it was stopped (EX_TEMPFAIL)
	exitCannotExec  = 126
	exitNotFound    = 127
)

// The lines of the exit-code tables: each command's --help shows those that
// apply to it.
const (
	exitLineOK        = "  0        success\n"
	exitLineStopped   = "  0        stopped by SIGINT or SIGTERM (its normal end)\n"
	exitLineHoldOK    = "  0        the command exited 0\n"
	exitLineFailure   = "  1        another failure\n"
	exitLineStdout    = "  1        stdout closed or not writable\n"
	exitLinePassed    = "  1..125   the command's own exit code, passed through\n"
	exitLineUsage     = "  64       usage error: bad flag, argument or input\n"
	exitLineUnavail   = "  69       server unreachable, authentication refused, or a server error\n"
	exitLineNoListen  = "  69       cannot listen on --addr (or --metrics-addr)\n"
	exitLineNotAcq    = "  73       not acquired within --acquire-timeout (the command did not run)\n"
	exitLineLost      = "  75       the lease was lost while the command ran (it was stopped)\n"
	exitLineExec      = "  126/127  the command could not be executed / was not found\n"
	exitLineHoldSig   = "  128+N    the command was killed by signal N, or dfstream got signal N\n           before KEY was acquired\n"
	exitLineInterrupt = "  128+N    interrupted by signal N (SIGINT: 130, SIGTERM: 143)\n"
)

// Each command's exit codes.
var (
	exitCodesServe = exitCodes(exitLineStopped, exitLineFailure, exitLineUsage, exitLineNoListen)
	exitCodesHold  = exitCodes(exitLineHoldOK, exitLineFailure, exitLinePassed, exitLineUsage, exitLineUnavail,
		exitLineNotAcq, exitLineLost, exitLineExec, exitLineHoldSig)
	exitCodesWatch = exitCodes(exitLineStopped, exitLineStdout, exitLineUsage, exitLineUnavail)
	exitCodesEmit  = exitCodes(exitLineOK, exitLineFailure, exitLineUsage, exitLineUnavail, exitLineInterrupt)
	exitCodesStats = exitCodes(exitLineOK, exitLineFailure, exitLineUsage,
		"  69       a server did not answer (the others are shown), or refused authentication\n")
)

func exitCodes(lines ...string) string { return "Exit codes:\n" + strings.Join(lines, "") }

// exitError carries an exit code and, unless err is nil, the one line to
// print on stderr.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func exitWith(code int, err error) error { return &exitError{code: code, err: err} }

// libError is an error of the dfstream library as the command shows it: the
// library starts its messages with "dfstream: ", which main prints once in
// front of the whole line, so that leading prefix is dropped. The rest is
// the library's message as it is.
type libError struct{ err error }

func (e *libError) Error() string { return libMsg(e.err) }
func (e *libError) Unwrap() error { return e.err }

// lib marks err as an error of the library (nil stays nil).
func lib(err error) error {
	if err == nil {
		return nil
	}
	return &libError{err}
}

// libMsg is the text of a library error without its leading "dfstream: ",
// on one line.
func libMsg(err error) string {
	if err == nil {
		return "<nil>"
	}
	return oneLine(strings.TrimPrefix(err.Error(), "dfstream: "))
}

func usagef(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// classify maps an error of the client to an exit code.
func classify(err error) error {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return err
	case errors.Is(err, dfstream.ErrInvalidInput):
		return exitWith(exitUsage, err)
	default:
		return exitWith(exitUnavailable, err)
	}
}

// envBinding ties a flag to the environment variable that supplies it when
// the flag is not given.
type envBinding struct{ flag, env string }

// command is one subcommand: its FlagSet, its help text and the environment
// variables of its flags.
type command struct {
	name     string
	synopsis string // after "dfstream NAME "
	summary  string
	example  string
	fs       *flag.FlagSet
	env      []envBinding
	groups   [][]string // flags set together: one given on the command line disables the others' env
	exits    string     // the exit-code table of --help
	stdout   io.Writer
}

func newCommand(name, synopsis, summary, example, exits string, stdout io.Writer) *command {
	c := &command{name: name, synopsis: synopsis, summary: summary, example: example, exits: exits, stdout: stdout}
	c.fs = flag.NewFlagSet("dfstream "+name, flag.ContinueOnError)
	c.fs.SetOutput(io.Discard) // errors are reported once, by main
	c.fs.Usage = func() {}
	return c
}

// bindEnv registers env as the fallback of flag name.
func (c *command) bindEnv(name, env string) { c.env = append(c.env, envBinding{name, env}) }

func (c *command) printHelp() {
	w := c.stdout
	fmt.Fprintf(w, "Usage: dfstream %s %s\n\n%s\n\nFlags (-flag and --flag are the same):\n", c.name, c.synopsis, c.summary)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
	if len(c.env) > 0 {
		fmt.Fprintln(w, "\nEnvironment (a flag given on the command line wins):")
		for _, b := range c.env {
			fmt.Fprintf(w, "  %-34s --%s\n", b.env, b.flag)
		}
	}
	fmt.Fprintf(w, "\nExample:\n%s\n\n%s", c.example, c.exits)
}

// parse parses args, allowing flags between positional arguments. Everything
// after the first "--" is returned as rest, with dashdash true. Environment
// variables fill in the bound flags not given. A help flag returns errHelp.
func (c *command) parse(args []string) (pos, rest []string, dashdash bool, err error) {
	for i, a := range args {
		if a == "--" {
			args, rest, dashdash = args[:i], args[i+1:], true
			break
		}
	}
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				c.printHelp()
				return nil, nil, false, errHelp
			}
			return nil, nil, false, usagef("%s: %v (see dfstream %s --help)", c.name, err, c.name)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	given := maps.Clone(set)
	for _, g := range c.groups {
		if slices.ContainsFunc(g, func(n string) bool { return given[n] }) {
			for _, n := range g {
				set[n] = true
			}
		}
	}
	for _, b := range c.env {
		v, ok := os.LookupEnv(b.env)
		if !ok || v == "" || set[b.flag] {
			continue
		}
		if err := c.fs.Set(b.flag, v); err != nil {
			return nil, nil, false, usagef("%s: invalid %s: %v", c.name, b.env, err)
		}
	}
	return pos, rest, dashdash, nil
}

// errHelp reports that --help was given and the help printed.
var errHelp = errors.New("help requested")

// authFlags are the auth token flags, shared by the client commands and serve.
type authFlags struct {
	token, tokenFile string
}

func (c *command) addAuthFlags() *authFlags {
	a := &authFlags{}
	c.fs.StringVar(&a.token, "auth-token", "", "auth token (prefer --auth-token-file or the environment: arguments are visible to other users)")
	c.fs.StringVar(&a.tokenFile, "auth-token-file", "", "read the auth token from this file (trailing white space is dropped)")
	c.bindEnv("auth-token", "DFSTREAM_AUTH_TOKEN")
	c.bindEnv("auth-token-file", "DFSTREAM_AUTH_TOKEN_FILE")
	c.groups = append(c.groups, []string{"auth-token", "auth-token-file"})
	return a
}

// resolve returns the token: --auth-token, else the file's content.
func (a *authFlags) resolve() (string, error) {
	if a.token != "" && a.tokenFile != "" {
		return "", usagef("give --auth-token or --auth-token-file, not both")
	}
	if a.token != "" {
		return a.token, nil
	}
	if a.tokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return "", usagef("auth token file: %v", err)
	}
	tok := strings.TrimRight(string(b), " \t\r\n")
	if tok == "" {
		return "", usagef("auth token file %s is empty", a.tokenFile)
	}
	return tok, nil
}

// commonFlags are the flags of every client command.
type commonFlags struct {
	servers        string
	cluster        *clusterFlag // nil: the command takes no --cluster
	tlsCA          string
	tlsCert        string
	tlsKey         string
	insecure       bool
	auth           *authFlags
	connectTimeout time.Duration
	verbose        bool
	stderr         io.Writer
	extra          []optionsFunc // of the clientFlagGroups
}

// optionsFunc gives the Client options of a group of flags once they are
// parsed (or a usage error).
type optionsFunc func() ([]dfstream.Option, error)

// clientFlagGroups are further groups of flags every client command takes,
// each in a file of its own: its init appends a function that registers
// the group's flags (and environment variables) on c and returns what
// builds the group's options. This file need not change for a new group.
var clientFlagGroups []func(c *command) optionsFunc

// addCommonFlags registers the server, TLS, auth, timeout and logging flags
// on c, with their environment variables.
func (c *command) addCommonFlags(stderr io.Writer) *commonFlags {
	f := &commonFlags{stderr: stderr}
	fs := c.fs
	fs.StringVar(&f.servers, "servers", dfstream.DefaultServer, "comma-separated `host:port` list of servers")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM `file` of CA certificates to verify the servers with (turns TLS on)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM client certificate `file` (with --tls-key; turns TLS on)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM client key `file`")
	fs.BoolVar(&f.insecure, "tls-insecure-skip-verify", false, "TLS without verifying the server's certificate (testing only)")
	f.auth = c.addAuthFlags()
	c.durationVar(&f.connectTimeout, "connect-timeout", dfstream.DefaultConnectTimeout, "`duration` bound on dialing, TLS handshake and auth")
	fs.BoolVar(&f.verbose, "v", false, "debug logs on stderr")
	c.bindEnv("servers", "DFSTREAM_SERVERS")
	c.bindEnv("tls-ca", "DFSTREAM_TLS_CA")
	c.bindEnv("tls-cert", "DFSTREAM_TLS_CERT")
	c.bindEnv("tls-key", "DFSTREAM_TLS_KEY")
	c.bindEnv("tls-insecure-skip-verify", "DFSTREAM_TLS_INSECURE_SKIP_VERIFY")
	c.bindEnv("connect-timeout", "DFSTREAM_CONNECT_TIMEOUT")
	for _, add := range clientFlagGroups {
		f.extra = append(f.extra, add(c))
	}
	return f
}

func (f *commonFlags) logger() zerolog.Logger {
	return newLogger(f.verbose, f.stderr)
}

func newLogger(verbose bool, w io.Writer) zerolog.Logger {
	if !verbose {
		return zerolog.Nop()
	}
	// The timestamp field is written with TimeFieldFormat (whole seconds by
	// default) and the console writer parses it back, so the milliseconds of
	// TimeFormat would always read .000 without this.
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000", NoColor: true}).
		Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

// options builds the Client options from the flags.
func (f *commonFlags) options() ([]dfstream.Option, error) {
	var addrs []string
	for _, a := range strings.Split(f.servers, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, usagef("--servers is empty")
	}
	if f.connectTimeout <= 0 {
		return nil, usagef("--connect-timeout must be positive")
	}
	where, err := f.where(addrs)
	if err != nil {
		return nil, err
	}
	opts := []dfstream.Option{
		where,
		dfstream.WithConnectTimeout(f.connectTimeout),
		dfstream.WithLogger(f.logger()),
	}
	tok, err := f.auth.resolve()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		opts = append(opts, dfstream.WithAuthToken(tok))
	}
	cfg, err := clientTLS(f.tlsCA, f.tlsCert, f.tlsKey, f.insecure)
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		opts = append(opts, dfstream.WithTLS(cfg))
	}
	for _, extra := range f.extra {
		more, err := extra()
		if err != nil {
			return nil, err
		}
		opts = append(opts, more...)
	}
	return opts, nil
}

func clientTLS(ca, cert, key string, insecure bool) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" && !insecure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // opt-in flag
	if ca != "" {
		pool, err := loadCAs(ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, usagef("TLS certificate: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, usagef("TLS CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usagef("TLS CA: no PEM certificate in %s", file)
	}
	return pool, nil
}

// newClient builds a Client from the common flags, and extra options.
func (f *commonFlags) newClient(extra ...dfstream.Option) (*dfstream.Client, error) {
	opts, err := f.options()
	if err != nil {
		return nil, err
	}
	c, err := dfstream.New(append(opts, extra...)...)
	if err != nil {
		return nil, exitWith(exitUsage, lib(err))
	}
	return c, nil
}

// closeWithin calls close but gives up waiting after d (a frozen server must
// not keep the process alive).
func closeWithin(d time.Duration, fn func() error) {
	done := make(chan struct{})
	go func() {
		_ = fn()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// checkKey rejects what cannot be a key before anything is sent.
func checkKey(what, key string) error {
	if key == "" {
		return usagef("%s is empty", what)
	}
	if strings.ContainsFunc(key, func(r rune) bool { return r == 0 || unicode.IsSpace(r) }) {
		return usagef("%s %q contains white space", what, key)
	}
	return nil
}

// durationValue is a time.Duration flag whose error says how to write what
// was meant: "10" is refused with "use 10s".
type durationValue time.Duration

func (d *durationValue) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// durationVar registers a duration flag. Name the value in usage with
// backquotes (`duration`), as --help shows that name.
func (c *command) durationVar(p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	c.fs.Var((*durationValue)(p), name, usage)
}

// parseDuration is time.ParseDuration with errors that say what to write
// instead: a plain number gets the unit it most likely lacks.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
		return 0, fmt.Errorf("no unit: use %ss (or %sms, %sm)", s, s, s)
	}
	return 0, errors.New("not a duration: write a number with a unit, like 500ms, 10s or 1m30s")
}

// forever is the longest wait the library sends: the wire takes whole
// seconds up to wire.MaxSeconds (about 292 years), and WithAcquireTimeout
// rejects anything longer.
const forever = time.Duration(wire.MaxSeconds) * time.Second

// waitValue is a --acquire-timeout: a duration, or "inf" / "-1" for
// forever (in practice: forever, above).
type waitValue time.Duration

func (v *waitValue) String() string {
	if v == nil {
		return "0s"
	}
	if time.Duration(*v) == forever {
		return "inf"
	}
	return time.Duration(*v).String()
}

func (v *waitValue) Set(s string) error {
	if s == "inf" || s == "-1" {
		*v = waitValue(forever)
		return nil
	}
	d, err := parseDuration(s)
	switch {
	case err != nil:
		return fmt.Errorf("%w; or inf or -1 to wait forever", err)
	case d < 0:
		return errors.New("negative (inf or -1: wait forever)")
	case d > forever:
		return fmt.Errorf("more than %v (inf or -1: wait forever)", forever)
	}
	*v = waitValue(d)
	return nil
}
