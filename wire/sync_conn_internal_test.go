package wire

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipeConn is a SyncConn whose peer answers every request with "ok".
func pipeConn(t *testing.T) *SyncConn {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		rd := bufio.NewReader(server)
		for {
			for range 3 { // one three-line request
				if _, err := rd.ReadString('\n'); err != nil {
					return
				}
			}
			if _, err := server.Write([]byte("ok\n")); err != nil {
				return
			}
		}
	}()
	c := NewSyncConn(client, 0)
	t.Cleanup(func() {
		_ = c.Close()
		_ = server.Close()
		<-done
	})
	return c
}

func soon() time.Time { return time.Now().Add(5 * time.Second) }

var req = Request{Cmd: "l", Key: "k", Arg: "0"}

// ExchangeContext's AfterFunc may run once the exchange is over; what it
// does then must not reach the next exchange.
func TestInterruptWithNothingInFlightLeavesTheNextExchangeAlone(t *testing.T) {
	c := pipeConn(t)
	c.interruptInFlight()
	assert.False(t, c.Expedited())
	_, err := c.Exchange(req, soon())
	require.NoError(t, err)
}

// ... and it may run before the exchange is in flight, which must then be
// cut short all the same.
func TestExchangeWhoseContextEndedBeforeItWasInFlightIsCutShort(t *testing.T) {
	c := pipeConn(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.exchange(ctx, req, time.Now().Add(time.Minute))
	assert.ErrorIs(t, err, ErrClosed)
}
