package wire_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/wire"
)

func lreq(key string) wire.Request { return wire.Request{Cmd: "l", Key: key, Arg: "0"} }

// Checklist 11: requests written back to back get their replies in order;
// each caller receives its own.
func TestConnFIFOPipelined(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	const n = 5
	p.run(t, func() error {
		// Read all requests before answering, then answer in one write:
		// the replies are in flight together.
		var out strings.Builder
		for range n {
			req, err := p.readRequest()
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "ok %s\n", req[1])
		}
		return p.write(out.String())
	})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", i)
			line, err := c.Do(t.Context(), lreq(key))
			assert.NoError(t, err)
			assert.Equal(t, "ok "+key, line)
		})
	}
	wg.Wait()
	assert.True(t, c.Idle())
	assert.NoError(t, c.Err())
}

// Checklist 90: pushes before, between and after replies go to the handler
// in order and never to a caller.
func TestConnPushesInterleaved(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var pushes []wire.Push
	c, p := pair(t, wire.WithPushHandler(func(ps wire.Push) {
		mu.Lock()
		pushes = append(pushes, ps)
		mu.Unlock()
	}))
	got := func() []wire.Push {
		mu.Lock()
		defer mu.Unlock()
		return append([]wire.Push(nil), pushes...)
	}
	p.run(t, func() error {
		if err := p.write("sig a.b   x  y\tz \n"); err != nil { // before any request
			return err
		}
		if _, err := p.readRequest(); err != nil {
			return err
		}
		if err := p.write("sig c p1\nok 1\nsig c p2\n"); err != nil {
			return err
		}
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.write("sig c p3\nsig c p4\nok 2\n")
	})
	line, err := c.Do(t.Context(), lreq("x"))
	require.NoError(t, err)
	assert.Equal(t, "ok 1", line)
	// The handler ran for every push read before the reply (p2 may have
	// followed already).
	first := got()
	require.GreaterOrEqual(t, len(first), 2)
	assert.Equal(t, []wire.Push{{Channel: "a.b", Payload: "  x  y\tz "}, {Channel: "c", Payload: "p1"}}, first[:2])

	line, err = c.Do(t.Context(), lreq("y"))
	require.NoError(t, err)
	assert.Equal(t, "ok 2", line)
	assert.Equal(t, []wire.Push{
		{Channel: "a.b", Payload: "  x  y\tz "},
		{Channel: "c", Payload: "p1"},
		{Channel: "c", Payload: "p2"},
		{Channel: "c", Payload: "p3"},
		{Channel: "c", Payload: "p4"},
	}, got())
}

func TestConnPushesDroppedWithoutHandler(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.write("sig a b\nsig a c\nok\n")
	})
	line, err := c.Do(t.Context(), lreq("x"))
	require.NoError(t, err)
	assert.Equal(t, "ok", line)
}

// A closed peer is noticed with no request outstanding, at once.
func TestConnPeerCloseNoticed(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	start := time.Now()
	require.NoError(t, p.nc.Close())
	waitDone(t, c)
	assert.Less(t, time.Since(start), time.Second)
	err := c.Err()
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, io.EOF)

	_, err = c.Do(t.Context(), lreq("k"))
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, io.EOF)
}

func TestConnPeerCloseWhilePending(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.nc.Close()
	})
	_, err := c.Do(t.Context(), lreq("k"))
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, io.EOF)
	waitDone(t, c)
}

// Abandoning a reply closes the Conn: the late reply would otherwise answer
// the next request.
func TestConnContextEndCloses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		target error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, p := pair(t)
			p.run(t, func() error {
				if _, err := p.readRequest(); err != nil {
					return err
				}
				// Never answer; the Conn must close its side.
				return p.expectEOF()
			})
			// A second caller waiting behind the abandoned one fails too.
			other := make(chan error, 1)
			go func() {
				_, err := c.Do(context.Background(), lreq("other"))
				other <- err
			}()

			ctx, cancel := tc.ctx()
			defer cancel()
			_, err := c.Do(ctx, lreq("k"))
			assert.ErrorIs(t, err, tc.target)
			assert.ErrorIs(t, err, wire.ErrClosed)
			waitDone(t, c)
			assert.ErrorIs(t, c.Err(), tc.target)
			assert.ErrorIs(t, <-other, wire.ErrClosed)
		})
	}
}

// A context that ended before Do writes nothing, so the Conn stays usable.
func TestConnContextAlreadyDone(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, p.echo)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Do(ctx, lreq("a"))
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, wire.ErrClosed)
	assert.NoError(t, c.Err())
	line, err := c.Do(t.Context(), lreq("b"))
	require.NoError(t, err)
	assert.Equal(t, "ok b", line)
}

// A write that blocks (the peer does not read) is ended by the context too.
func TestConnContextEndsBlockedWrite(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe() // synchronous: Write blocks until read
	defer server.Close()
	c := wire.NewConn(client)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Do(ctx, lreq("k"))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, wire.ErrClosed)
	waitDone(t, c)
}

// A reply line nobody asked for (the server's unsolicited "error" before it
// closes on read timeout) stops the Conn with a protocol error.
func TestConnUnsolicitedLine(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	require.NoError(t, p.write("error\n"))
	waitDone(t, c)
	err := c.Err()
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, wire.ErrProtocol)
	var pe *wire.ProtocolError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "error", pe.Line)
	assert.NoError(t, p.expectEOF(), "the Conn closed its side")
}

func TestConnMalformedPush(t *testing.T) {
	t.Parallel()
	c, p := pair(t, wire.WithPushHandler(func(wire.Push) {}))
	require.NoError(t, p.write("sig nopayload\n"))
	waitDone(t, c)
	assert.ErrorIs(t, c.Err(), wire.ErrProtocol)
}

// Checklist 100: an unknown status is a server error and the next request
// still gets its own reply.
func TestConnUnknownStatusNoDesync(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, func() error {
		for _, reply := range []string{"error_draining\n", "ok " + tok + " 33 5\n"} {
			if _, err := p.readRequest(); err != nil {
				return err
			}
			if err := p.write(reply); err != nil {
				return err
			}
		}
		return nil
	})
	line, err := c.Do(t.Context(), lreq("k"))
	require.NoError(t, err)
	_, err = wire.ParseGrant("l", line)
	assert.ErrorIs(t, err, wire.ErrServer)

	line, err = c.Do(t.Context(), lreq("k"))
	require.NoError(t, err)
	g, err := wire.ParseGrant("l", line)
	require.NoError(t, err)
	assert.Equal(t, wire.Grant{Token: tok, Lease: 33 * time.Second, Fence: 5}, g)
}

func TestConnReplyTooLong(t *testing.T) {
	t.Parallel()
	c, p := pair(t, wire.WithMaxReply(64))
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.write(strings.Repeat("x", 100) + "\n")
	})
	_, err := c.Do(t.Context(), wire.StatsRequest())
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, wire.ErrProtocol)
	assert.ErrorIs(t, err, wire.ErrLineTooLong)
}

// A stats reply far larger than the read buffer arrives whole.
func TestConnLargeReply(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	var js strings.Builder
	js.WriteString(`ok {"connections":1,"locks":[`)
	for i := range 5000 {
		if i > 0 {
			js.WriteByte(',')
		}
		fmt.Fprintf(&js, `{"key":"key-%d","owner_conn_id":%d,"lease_expires_in_s":1.5,"waiters":0}`, i, i)
	}
	js.WriteString(`],"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`)
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.write(js.String() + "\nok\n")
	})
	line, err := c.Do(t.Context(), wire.StatsRequest())
	require.NoError(t, err)
	s, err := wire.ParseStats(line)
	require.NoError(t, err)
	assert.Len(t, s.Locks, 5000)
	assert.Greater(t, len(line), 300_000)
}

// Hand-made requests with broken framing are refused before any byte is
// written.
func TestConnRejectsBadFraming(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, p.echo)
	for _, req := range []wire.Request{
		{},
		{Cmd: "l", Key: "a\nr", Arg: "0"},
		{Cmd: "l\nx", Key: "a", Arg: "0"},
		{Cmd: "signal", Key: "a", Arg: "x\nsignal\nb\ny"},
		{Cmd: "l", Key: strings.Repeat("k", 257), Arg: "0"},
	} {
		_, err := c.Do(t.Context(), req)
		assert.ErrorIs(t, err, wire.ErrInvalidInput, "%q", req)
	}
	line, err := c.Do(t.Context(), lreq("fine"))
	require.NoError(t, err)
	assert.Equal(t, "ok fine", line, "nothing was written before")
}

func TestConnCloseIdempotent(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.expectEOF()
	})
	pending := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), lreq("k"))
		pending <- err
	}()
	require.Eventually(t, func() bool { return !c.Idle() }, 5*time.Second, time.Millisecond)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	select {
	case <-c.Done():
	default:
		t.Fatal("Close returned before the reader stopped")
	}
	assert.ErrorIs(t, <-pending, wire.ErrClosed)
	assert.Equal(t, wire.ErrClosed.Error(), c.Err().Error())
	_, err := c.Do(t.Context(), lreq("k"))
	assert.ErrorIs(t, err, wire.ErrClosed)
}

type failingWrite struct {
	net.Conn
}

var errWrite = errors.New("write boom")

func (failingWrite) Write([]byte) (int, error) { return 0, errWrite }

func TestConnWriteErrorCloses(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer server.Close()
	c := wire.NewConn(failingWrite{client})
	defer c.Close()
	_, err := c.Do(t.Context(), lreq("k"))
	assert.ErrorIs(t, err, errWrite)
	assert.ErrorIs(t, err, wire.ErrClosed)
	waitDone(t, c)
	assert.ErrorIs(t, c.Err(), errWrite)
}

func TestConnAccessors(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	assert.Equal(t, p.nc.LocalAddr().String(), c.RemoteAddr().String())
	assert.True(t, c.Idle())
	assert.NoError(t, c.Err())
	created := c.LastUsed()
	assert.WithinDuration(t, time.Now(), created, time.Minute)

	release := make(chan struct{})
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		<-release
		return p.write("ok\n")
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := c.Do(context.Background(), lreq("k"))
		assert.NoError(t, err)
	}()
	require.Eventually(t, func() bool { return !c.Idle() }, 5*time.Second, time.Millisecond)
	close(release)
	<-done
	assert.True(t, c.Idle())
	assert.False(t, c.LastUsed().Before(created))
}

// Many goroutines share one Conn; each gets its own reply (run with -race).
func TestConnConcurrentDo(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, p.echo)
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("w%d-%d", w, i)
				line, err := c.Do(context.Background(), lreq(key))
				if !assert.NoError(t, err) || !assert.Equal(t, "ok "+key, line) {
					return
				}
			}
		})
	}
	wg.Wait()
	assert.True(t, c.Idle())
}

// Pushes and concurrent requests together, with a handler: nothing is lost
// or misrouted.
func TestConnConcurrentWithPushes(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	count := 0
	c, p := pair(t, wire.WithPushHandler(func(ps wire.Push) {
		mu.Lock()
		count++
		mu.Unlock()
	}))
	p.run(t, func() error {
		for {
			req, err := p.readRequest()
			if err != nil {
				return nil
			}
			if err := p.write("sig ch " + req[1] + "\nok " + req[1] + "\n"); err != nil {
				return nil
			}
		}
	})
	const workers, each = 4, 100
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				key := fmt.Sprintf("w%d-%d", w, i)
				line, err := c.Do(context.Background(), lreq(key))
				if !assert.NoError(t, err) || !assert.Equal(t, "ok "+key, line) {
					return
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, workers*each, count)
}

// Go pipelines from one goroutine: three requests are on the wire before
// any reply is read, and each channel gets its own reply.
func TestConnGoPipelined(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, func() error {
		var out strings.Builder
		for range 3 {
			req, err := p.readRequest()
			if err != nil {
				return err
			}
			fmt.Fprintf(&out, "sig x y\nok %s\n", req[1])
		}
		return p.write(out.String())
	})
	var calls []*wire.Call
	for _, k := range []string{"a", "b", "c"} {
		call, err := c.Go(lreq(k))
		require.NoError(t, err)
		calls = append(calls, call)
	}
	<-calls[2].Done()
	for i, k := range []string{"a", "b", "c"} {
		select {
		case <-calls[i].Done(): // earlier calls complete first
		default:
			t.Fatalf("call %d not complete after a later one", i)
		}
		line, err := calls[i].Result()
		require.NoError(t, err)
		assert.Equal(t, "ok "+k, line)
		line2, err2 := calls[i].Result() // repeatable
		assert.Equal(t, line, line2)
		assert.NoError(t, err2)
	}
	assert.True(t, c.Idle())
}

func TestConnGoErrors(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	call, err := c.Go(wire.Request{Cmd: "l", Key: "a\nb"})
	assert.ErrorIs(t, err, wire.ErrInvalidInput)
	assert.Nil(t, call)

	// Pending when the peer closes: the channel gets the error.
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		return p.nc.Close()
	})
	call, err = c.Go(lreq("k"))
	require.NoError(t, err)
	line, err := call.Result()
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.ErrorIs(t, err, io.EOF)
	assert.Empty(t, line)

	// On a stopped Conn: the error directly.
	waitDone(t, c)
	call, err = c.Go(lreq("k"))
	assert.ErrorIs(t, err, wire.ErrClosed)
	assert.Nil(t, call)
}

// Once Close returns, every call is complete: replies that arrived before
// keep their line, the rest have the error. Callers may peek without
// blocking.
func TestConnCallsCompleteByClose(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	p.run(t, func() error {
		if _, err := p.readRequest(); err != nil {
			return err
		}
		if err := p.write("ok first\n"); err != nil {
			return err
		}
		return p.expectEOF()
	})
	first, err := c.Go(lreq("a"))
	require.NoError(t, err)
	<-first.Done()
	var rest []*wire.Call
	for _, k := range []string{"b", "c", "d"} {
		call, err := c.Go(lreq(k))
		require.NoError(t, err)
		rest = append(rest, call)
	}
	require.NoError(t, c.Close())
	line, err := first.Result()
	require.NoError(t, err)
	assert.Equal(t, "ok first", line)
	for _, call := range rest {
		select {
		case <-call.Done():
		default:
			t.Fatal("call still pending after Close")
		}
		_, err := call.Result()
		assert.ErrorIs(t, err, wire.ErrClosed)
	}
}

// The push handler never runs once Close has returned, even with pushes
// still arriving and buffered.
func TestConnNoPushAfterClose(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	count, closed := 0, false
	c, p := pair(t, wire.WithPushHandler(func(wire.Push) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			t.Error("push handler ran after Close returned")
		}
		count++
	}))
	p.run(t, func() error {
		batch := strings.Repeat("sig a.b payload\n", 100)
		for {
			if err := p.write(batch); err != nil {
				return nil // the Conn is gone
			}
		}
	})
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return count > 1000
	}, 5*time.Second, time.Millisecond)
	require.NoError(t, c.Close())
	mu.Lock()
	closed = true
	mu.Unlock()
	time.Sleep(20 * time.Millisecond)
}
