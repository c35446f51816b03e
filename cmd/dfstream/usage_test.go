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
			require.Contains(t, stdout, "75")
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
