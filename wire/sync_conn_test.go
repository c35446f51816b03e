package wire_test

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

// syncConn dials a scripted server with DialSync; cleanup closes the conn.
func syncConn(t *testing.T, script func(p *peer) error) *wire.SyncConn {
	t.Helper()
	c, err := (&wire.Dialer{Timeout: 5 * time.Second}).DialSync(t.Context(), server(t, nil, script))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// silent reads requests and never answers.
func silent(p *peer) error {
	_, _ = io.Copy(io.Discard, p.r)
	return nil
}

func soon() time.Time { return time.Now().Add(5 * time.Second) }

func TestSyncConnExchangesInOrder(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	for _, k := range []string{"a", "b", "c"} {
		line, err := c.Exchange(lreq(k), soon())
		require.NoError(t, err)
		assert.Equal(t, "ok "+k, line)
	}
	require.NoError(t, c.Err())
}

func TestSyncConnDeadlineStopsIt(t *testing.T) {
	t.Parallel()
	c := syncConn(t, silent)
	start := time.Now()
	_, err := c.Exchange(lreq("k"), time.Now().Add(50*time.Millisecond))
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)
	_, err = c.Exchange(lreq("k"), soon())
	assert.ErrorIs(t, err, wire.ErrClosed, "a connection out of step is never used again")
}

func TestSyncConnExpediteShortensTheExchangeInFlight(t *testing.T) {
	t.Parallel()
	c := syncConn(t, silent)
	go func() {
		time.Sleep(50 * time.Millisecond)
		c.Expedite(time.Now().Add(50 * time.Millisecond))
	}()
	start := time.Now()
	_, err := c.Exchange(lreq("k"), time.Now().Add(time.Minute))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestSyncConnExpediteNeverExtends(t *testing.T) {
	t.Parallel()
	c := syncConn(t, silent)
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.Expedite(time.Now().Add(time.Hour))
	}()
	start := time.Now()
	_, err := c.Exchange(lreq("k"), time.Now().Add(200*time.Millisecond))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

func TestSyncConnInterruptWhileIdleEndsTheNextExchange(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	_, err := c.Exchange(lreq("a"), soon())
	require.NoError(t, err)
	c.Interrupt()
	_, err = c.Exchange(lreq("b"), time.Now().Add(time.Minute))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

func TestSyncConnBadRequestSendsNothingAndKeepsIt(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	_, err := c.Exchange(wire.Request{Cmd: "l", Key: "a\nb", Arg: "0"}, soon())
	assert.ErrorIs(t, err, wire.ErrInvalidInput)
	line, err := c.Exchange(lreq("k"), soon())
	require.NoError(t, err)
	assert.Equal(t, "ok k", line, "the peer saw no part of the bad request")
}

func TestSyncConnFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		reply  string
		target error
	}{
		{"peer closes", "", io.EOF},
		{"push on a lock connection", "sig a b\n", wire.ErrProtocol},
		{"line over the cap", strings.Repeat("x", wire.DefaultMaxReply+10) + "\n", wire.ErrLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := syncConn(t, func(p *peer) error {
				if _, err := p.readRequest(); err != nil {
					return err
				}
				return p.write(tc.reply)
			})
			_, err := c.Exchange(lreq("k"), soon())
			assert.ErrorIs(t, err, wire.ErrClosed)
			assert.ErrorIs(t, err, tc.target)
			assert.ErrorIs(t, c.Err(), tc.target)
		})
	}
}

func TestDialSyncAuth(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, authScript("s3cret", "ok"))
	c, err := (&wire.Dialer{AuthToken: "s3cret", Timeout: 5 * time.Second}).DialSync(t.Context(), addr)
	require.NoError(t, err)
	defer c.Close()
	line, err := c.Exchange(lreq("k"), soon())
	require.NoError(t, err)
	assert.Equal(t, "ok k", line)
}

func TestDialSyncAuthRejected(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, authScript("bad", "error_auth"))
	c, err := (&wire.Dialer{AuthToken: "bad", Timeout: 5 * time.Second}).DialSync(t.Context(), addr)
	assert.Nil(t, c)
	assert.ErrorIs(t, err, wire.ErrAuth)
}

func TestDialSyncAuthTimeout(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, silent)
	start := time.Now()
	_, err := (&wire.Dialer{AuthToken: "x", Timeout: 100 * time.Millisecond}).DialSync(context.Background(), addr)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, wire.ErrAuth, "no reply is not a rejection")
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestDialSyncAuthCancelled(t *testing.T) {
	t.Parallel()
	addr := server(t, nil, silent)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := (&wire.Dialer{AuthToken: "x"}).DialSync(ctx, addr)
	assert.ErrorIs(t, err, context.Canceled)
}

func TestSyncConnExpeditedUntilTheNextExchange(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	assert.False(t, c.Expedited())
	c.Expedite(time.Now().Add(time.Hour))
	assert.True(t, c.Expedited(), "a pooled connection must not carry this to its next user")
	_, err := c.Exchange(lreq("k"), soon())
	require.NoError(t, err)
	assert.False(t, c.Expedited(), "the exchange it bounded took it")
}

func TestSyncConnUnexpediteLeavesTheNextExchangeItsOwnDeadline(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	c.Interrupt()
	c.Unexpedite()
	assert.False(t, c.Expedited())
	_, err := c.Exchange(lreq("k"), soon())
	assert.NoError(t, err, "not cut short by the withdrawn bound")
}

func TestSyncConnExchangeContextEndsWithItsContext(t *testing.T) {
	t.Parallel()
	c := syncConn(t, silent)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := c.ExchangeContext(ctx, lreq("k"), time.Now().Add(time.Minute))
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, wire.ErrClosed, "cut short, the connection is out of step")
}

func TestSyncConnExchangeContextAlreadyEndedSendsNothing(t *testing.T) {
	t.Parallel()
	c := syncConn(t, (*peer).echo)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.ExchangeContext(ctx, lreq("a"), soon())
	assert.ErrorIs(t, err, context.Canceled)
	line, err := c.Exchange(lreq("b"), soon())
	require.NoError(t, err)
	assert.Equal(t, "ok b", line, "the peer saw nothing of the first")
}

func TestSyncConnExchangeContextDeadlineIsTheContexts(t *testing.T) {
	t.Parallel()
	c := syncConn(t, silent)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.ExchangeContext(ctx, lreq("k"), time.Now().Add(time.Minute))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
