package main

import (
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// writeCert writes a self-signed certificate for 127.0.0.1 (usable as its
// own CA, for servers and clients) and its key, and returns their paths.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	c, err := dflockdtest.NewTestCert()
	require.NoError(t, err)
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(certFile, c.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, c.KeyPEM, 0o600))
	return certFile, keyFile
}

func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srvCert, srvKey := writeCert(t, dir, "server")
	cliCert, cliKey := writeCert(t, dir, "client")
	p := start(t, nil, "", "serve", "--addr", "127.0.0.1:0", "--tls-cert", srvCert, "--tls-key", srvKey)
	p.waitOutput(t, p.stdout, "\n")
	m := regexp.MustCompile(`listening on (\S+) \(tls\)`).FindStringSubmatch(p.stdout.String())
	require.NotNil(t, m, p.stdout.String())
	addr := m[1]

	_, stderr, code := dfs(t, nil, "lock", "k", "--servers", addr, "--tls-ca", srvCert,
		"--tls-cert", cliCert, "--tls-key", cliKey, "--", "true")
	require.Equal(t, 0, code, stderr)
	// The same through the environment.
	_, stderr, code = dfs(t, []string{"DFSTREAM_SERVERS=" + addr, "DFSTREAM_TLS_INSECURE_SKIP_VERIFY=true",
		"DFSTREAM_TLS_CERT=" + cliCert, "DFSTREAM_TLS_KEY=" + cliKey}, "stats")
	require.Equal(t, 0, code, stderr)
	// Plain TCP to a TLS server fails.
	_, stderr, code = dfs(t, nil, "stats", "--servers", addr, "--connect-timeout", "2s")
	require.Equal(t, 69, code, stderr)
	requireOneLineError(t, stderr)
	// An unknown server certificate is refused.
	_, stderr, code = dfs(t, nil, "stats", "--servers", addr, "--tls-ca", cliCert,
		"--tls-cert", cliCert, "--tls-key", cliKey, "--connect-timeout", "3s")
	require.Equal(t, 69, code, stderr)
	requireOneLineError(t, stderr)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.wait(t, 15*time.Second))
}

// A signal while waiting for the lock: the command never runs, 128+N.
func TestLockInterruptedWhileWaiting(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	held, err := c.Lock(ctxTimeout(t, 10*time.Second), "busy")
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })

	marker := filepath.Join(t.TempDir(), "ran")
	p := start(t, nil, "", "lock", "busy", "--servers", srv.Addr(), "--acquire-timeout", "1m", "--", "touch", marker)
	require.Eventually(t, func() bool {
		st, err := c.Stats(ctxTimeout(t, 5*time.Second), "")
		return err == nil && len(st.Locks) == 1 && st.Locks[0].Waiters == 1
	}, 10*time.Second, 20*time.Millisecond)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	require.Equal(t, 128+int(syscall.SIGINT), p.wait(t, 10*time.Second))
	requireOneLineError(t, p.stderr.String())
	_, err = os.Stat(marker)
	require.True(t, os.IsNotExist(err))
	// The abandoned wait does not hold up the next one.
	require.NoError(t, held.Release(ctxTimeout(t, 5*time.Second)))
	_, stderr, code := dfs(t, nil, "lock", "busy", "--servers", srv.Addr(), "--acquire-timeout", "5s", "--", "true")
	require.Equal(t, 0, code, stderr)
}
