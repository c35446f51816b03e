package wire_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// server accepts connections on a loopback listener and runs script on
// each, optionally after a TLS handshake. Cleanup waits for the scripts.
func server(t *testing.T, tlsCfg *tls.Config, script func(p *peer) error) string {
	t.Helper()
	ln := listen(t)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				if tlsCfg != nil {
					tc := tls.Server(nc, tlsCfg)
					if tc.Handshake() != nil {
						return
					}
					nc = tc
				}
				if err := script(&peer{nc: nc, r: bufio.NewReader(nc)}); err != nil {
					t.Errorf("server: %v", err)
				}
			})
		}
	})
	return ln.Addr().String()
}

// authScript expects auth with want, then answers reply; on "ok" it echoes.
func authScript(want, reply string) func(p *peer) error {
	return func(p *peer) error {
		req, err := p.readRequest()
		if err != nil {
			return err
		}
		if req != [3]string{"auth", "_", want} {
			return fmt.Errorf("unexpected request %q", req)
		}
		if err := p.write(reply + "\n"); err != nil {
			return err
		}
		if reply != "ok" {
			return nil // the server closes after error_auth
		}
		return p.echo()
	}
}

func TestDialPlain(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, (*peer).echo)
	c, err := (&wire.Dialer{Timeout: 5 * time.Second}).Dial(t.Context(), addr)
	require.NoError(t, err)
	defer c.Close()
	line, err := c.Do(t.Context(), lreq("k"))
	require.NoError(t, err)
	assert.Equal(t, "ok k", line)
	assert.Equal(t, addr, c.RemoteAddr().String())
}

func TestDialOptionsApplied(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, func(p *peer) error { return p.write("sig a b\n") })
	got := make(chan wire.Push, 1)
	c, err := (&wire.Dialer{}).Dial(t.Context(), addr, wire.WithPushHandler(func(ps wire.Push) { got <- ps }))
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, wire.Push{Channel: "a", Payload: "b"}, <-got)
}

func TestDialAuth(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, authScript("s3cret", "ok"))
	c, err := (&wire.Dialer{AuthToken: "s3cret", Timeout: 5 * time.Second}).Dial(t.Context(), addr)
	require.NoError(t, err)
	defer c.Close()
	line, err := c.Do(t.Context(), lreq("k"))
	require.NoError(t, err)
	assert.Equal(t, "ok k", line)
}

func TestDialAuthRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reply  string
		target error
	}{
		{"error_auth", wire.ErrAuth}, // wrong token
		{"error", wire.ErrServer},    // server without auth
		{"ok extra", wire.ErrProtocol},
	} {
		t.Run(tc.reply, func(t *testing.T) {
			t.Parallel()
			addr := server(t, nil, authScript("bad", tc.reply))
			c, err := (&wire.Dialer{AuthToken: "bad", Timeout: 5 * time.Second}).Dial(t.Context(), addr)
			require.Error(t, err)
			assert.Nil(t, c)
			assert.ErrorIs(t, err, wire.ErrAuth)
			assert.ErrorIs(t, err, tc.target)
			assert.Contains(t, err.Error(), "dial "+addr)
			assert.NotContains(t, err.Error(), "bad\"")
		})
	}
}

func TestDialAuthTimeout(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, func(p *peer) error {
		_, _ = io.Copy(io.Discard, p.r) // never answer
		return nil
	})
	start := time.Now()
	_, err := (&wire.Dialer{AuthToken: "x", Timeout: 100 * time.Millisecond}).Dial(context.Background(), addr)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, wire.ErrAuth, "no reply is not a rejection")
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, err = (&wire.Dialer{Timeout: 5 * time.Second}).Dial(t.Context(), addr)
	require.Error(t, err)
	var de *wire.DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, addr, de.Addr)
	assert.True(t, strings.HasPrefix(err.Error(), "dial "+addr+": "), err.Error())
	assert.Equal(t, 1, strings.Count(err.Error(), addr), "the *net.OpError's own copy of the address is cut: %q", err)
}

func TestDialBadTokenNoConnect(t *testing.T) {
	t.Parallel()
	_, err := (&wire.Dialer{AuthToken: "a\nl"}).Dial(t.Context(), "192.0.2.1:1")
	assert.ErrorIs(t, err, wire.ErrInvalidInput)
}

// selfSigned makes a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c, err := dflockdtest.NewTestCert()
	require.NoError(t, err)
	return c.Cert, c.Pool
}

func TestDialTLS(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	addr := server(t, srvCfg, authScript("tok", "ok"))

	// No ServerName: Dial fills it in from the address on a clone.
	cliCfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c, err := (&wire.Dialer{TLS: cliCfg, AuthToken: "tok", Timeout: 5 * time.Second}).Dial(t.Context(), addr)
	require.NoError(t, err)
	defer c.Close()
	assert.Empty(t, cliCfg.ServerName, "the caller's config is not modified")
	line, err := c.Do(t.Context(), lreq("k"))
	require.NoError(t, err)
	assert.Equal(t, "ok k", line)

	// A ServerName the certificate does not cover fails the handshake.
	bad := &tls.Config{RootCAs: pool, ServerName: "example.com", MinVersion: tls.VersionTLS12}
	_, err = (&wire.Dialer{TLS: bad, Timeout: 5 * time.Second}).Dial(t.Context(), addr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dial "+addr+": tls handshake")
}
