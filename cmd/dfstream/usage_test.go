package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ran")
	cases := []struct {
		name string
		env  []string
		args []string
	}{
		{"no command", nil, nil},
		{"unknown command", nil, []string{"frobnicate"}},
		{"unknown flag", nil, []string{"lock", "k", "--bogus", "--", "touch", marker}},
		{"bad duration", nil, []string{"lock", "k", "--lease", "soon", "--", "touch", marker}},
		{"empty key", nil, []string{"lock", "", "--", "touch", marker}},
		{"key with spaces", nil, []string{"lock", "a b", "--", "touch", marker}},
		{"missing --", nil, []string{"lock", "k", "touch", marker}},
		{"no key", nil, []string{"lock", "--", "touch", marker}},
		{"two keys", nil, []string{"lock", "k", "j", "--", "touch", marker}},
		{"no command after --", nil, []string{"lock", "k", "--"}},
		{"sem without limit", nil, []string{"sem", "k", "--", "touch", marker}},
		{"sem zero limit", nil, []string{"sem", "k", "-n", "0", "--", "touch", marker}},
		{"watch without pattern", nil, []string{"watch"}},
		{"watch bad group", nil, []string{"watch", "a", "--group", "a b"}},
		{"emit without channel", nil, []string{"emit"}},
		{"emit wildcard channel", nil, []string{"emit", "a.*", "x"}},
		{"emit too many", nil, []string{"emit", "a", "b", "c"}},
		{"emit empty payload", nil, []string{"emit", "a", ""}},
		{"stats argument", nil, []string{"stats", "extra"}},
		{"serve argument", nil, []string{"serve", "extra"}},
		{"bad env duration", []string{"DFSTREAM_CONNECT_TIMEOUT=later"}, []string{"stats"}},
		{"bad env bool", []string{"DFSTREAM_TLS_INSECURE_SKIP_VERIFY=maybe"}, []string{"stats"}},
		{"missing token file", nil, []string{"stats", "--auth-token-file", "/nonexistent/token"}},
		{"tls cert without key", nil, []string{"stats", "--tls-cert", "/nonexistent/cert"}},
		{"empty servers", nil, []string{"stats", "--servers", ","}},
		{"server without port", nil, []string{"stats", "--servers", "nohostport"}},
		{"two tokens", nil, []string{"stats", "--auth-token", "a", "--auth-token-file", "/dev/null"}},
	}
	// The parallel subtests run only once the function that starts them
	// returns: group them under one t.Run, which returns after all of them,
	// so that the marker is checked after every command has run.
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				p := start(t, tc.env, "", tc.args...)
				code := p.wait(t, 10e9)
				require.Equal(t, 64, code, "stdout: %s\nstderr: %s", p.stdout, p.stderr)
				requireOneLineError(t, p.stderr.String())
			})
		}
	})
	_, err := os.Stat(marker)
	require.True(t, os.IsNotExist(err), "a command ran despite a usage error")
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"serve", "lock", "sem", "watch", "emit", "stats"} {
		for _, flag := range []string{"--help", "-h"} {
			stdout, stderr, code := dfs(t, nil, cmd, flag)
			require.Equal(t, 0, code, stderr)
			require.Empty(t, stderr)
			require.Contains(t, stdout, "Usage: dfstream "+cmd)
			require.Contains(t, stdout, "Example:")
			require.Contains(t, stdout, "Exit codes:")
			if cmd != "serve" {
				require.Contains(t, stdout, "DFSTREAM_SERVERS")
				require.Contains(t, stdout, "--tls-insecure-skip-verify")
			}
		}
	}
	stdout, _, code := dfs(t, nil, "help")
	require.Equal(t, 0, code)
	for _, cmd := range []string{"serve", "lock", "sem", "watch", "emit", "stats"} {
		require.Contains(t, stdout, "  "+cmd+" ")
	}
	stdout, _, code = dfs(t, nil, "help", "lock")
	require.Equal(t, 0, code)
	require.True(t, strings.HasPrefix(stdout, "Usage: dfstream lock"))
}

// Each command's --help lists the exit codes it can return, not the others'.
func TestHelpShowsTheCommandsOwnExitCodes(t *testing.T) {
	t.Parallel()
	exitCodes := func(cmd string) string {
		stdout, _, code := dfs(t, nil, cmd, "--help")
		require.Equal(t, 0, code)
		_, table, ok := strings.Cut(stdout, "Exit codes:\n")
		require.True(t, ok, stdout)
		return table
	}
	for _, cmd := range []string{"lock", "sem"} {
		table := exitCodes(cmd)
		for _, code := range []string{"73", "75", "126/127", "1..125"} {
			require.Contains(t, table, "  "+code+" ", cmd)
		}
		require.NotContains(t, table, "lock/sem:", cmd)
	}
	for _, cmd := range []string{"serve", "watch", "emit", "stats"} {
		table := exitCodes(cmd)
		for _, code := range []string{"73", "75", "126/127", "1..125"} {
			require.NotContains(t, table, "  "+code+" ", cmd)
		}
		require.NotContains(t, table, "lock", cmd)
		require.Contains(t, table, "  64 ", cmd)
	}
	require.Contains(t, exitCodes("serve"), "stopped by SIGINT or SIGTERM")
	require.Contains(t, exitCodes("watch"), "stopped by SIGINT or SIGTERM")
	require.Contains(t, exitCodes("emit"), "128+N")

	stdout, _, code := dfs(t, nil, "help")
	require.Equal(t, 0, code)
	require.NotContains(t, stdout, "Exit codes:")
}

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "-version", "version"} {
		stdout, stderr, code := dfs(t, nil, arg)
		require.Equal(t, 0, code, stderr)
		require.Empty(t, stderr)
		require.Regexp(t, `^dfstream \S+ .*go1\.\d+\S* \w+/\w+\n$`, stdout)
	}
}

// A duration without a unit is refused with the unit it most likely lacks,
// from a flag or from the environment.
func TestDurationWithoutUnitSaysWhichUnitToAdd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"lock", "k", "--lease", "10", "--", "true"}, "use 10s"},
		{nil, []string{"lock", "k", "--acquire-timeout", "2.5", "--", "true"}, "use 2.5s"},
		{nil, []string{"serve", "--shutdown-drain", "3"}, "use 3s"},
		{[]string{"DFSTREAM_CONNECT_TIMEOUT=7"}, []string{"stats"}, "use 7s"},
		{nil, []string{"lock", "k", "--lease", "soon", "--", "true"}, "like 500ms, 10s or 1m30s"},
	} {
		_, stderr, code := dfs(t, tc.env, tc.args...)
		require.Equal(t, 64, code, stderr)
		requireOneLineError(t, stderr)
		require.Contains(t, stderr, tc.want)
	}
}
