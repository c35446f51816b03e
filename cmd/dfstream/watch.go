package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dfstream/dfstream"
)

func runWatch(args []string, e *env) error {
	c := newCommand("watch", "PATTERN [--group G] [--json] [flags]",
		"Print the signals whose channel matches PATTERN as they arrive, one per line:\n"+
			"\"CHANNEL PAYLOAD\", or with --json {\"channel\",\"payload\",\"time\"} objects.\n"+
			"PATTERN tokens are separated by '.'; '*' matches one token, a final '>' one\n"+
			"or more. Lost connections are re-established by themselves (signals sent\n"+
			"meanwhile are missed), and said so on stderr. Runs until SIGINT or SIGTERM,\n"+
			"its normal end: then it exits 0, connected or reconnecting.",
		"  dfstream watch 'orders.*.created' --json\n  dfstream watch 'jobs.>' --group workers",
		exitCodesWatch, e.stdout)
	common := c.addCommonFlags(e.stderr)
	metrics := c.addMetricsFlag()
	group := c.fs.String("group", "", "join the queue group `G`: each signal goes to one member of the group")
	asJSON := c.fs.Bool("json", false, "print JSON lines {\"channel\",\"payload\",\"time\"}")
	pos, rest, dashdash, err := c.parse(args)
	if err != nil {
		return err
	}
	pos = append(pos, rest...)
	_ = dashdash
	if len(pos) != 1 {
		return usagef("watch: one PATTERN expected, got %d arguments (see dfstream watch --help)", len(pos))
	}
	pattern := pos[0]
	if err := checkKey("PATTERN", pattern); err != nil {
		return err
	}
	if *group != "" {
		if err := checkKey("--group", *group); err != nil {
			return err
		}
	}
	// SIGINT and SIGTERM end watch with 0 in every state. They stay caught
	// until it returns: a second one while it closes must not kill it with
	// 128+N.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()

	mopts, stopMetrics, err := metrics.client(e.stderr)
	if err != nil {
		return err
	}
	defer stopMetrics()
	client, err := common.newClient(mopts...)
	if err != nil {
		return err
	}
	defer closeWithin(3*time.Second, client.Close)

	ss, err := client.Signals(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return watchFailed(err, common)
	}
	defer closeWithin(3*time.Second, ss.Close)
	if *group != "" {
		_, err = ss.ListenGroup(ctx, pattern, *group)
	} else {
		_, err = ss.Listen(ctx, pattern)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, dfstream.ErrClosed) {
			// The stream ended under the Listen: say why it did.
			<-ss.Done()
			if serr := ss.Err(); serr != nil {
				err = serr
			}
		}
		return watchFailed(err, common)
	}
	if *group != "" {
		fmt.Fprintf(e.stderr, "dfstream: watching %s (group %s) on %s\n", pattern, *group, ss.Server())
	} else {
		fmt.Fprintf(e.stderr, "dfstream: watching %s on %s\n", pattern, ss.Server())
	}

	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	for ev := range ss.Events() {
		switch ev := ev.(type) {
		case dfstream.Signal:
			if *asJSON {
				err = enc.Encode(struct {
					Channel string `json:"channel"`
					Payload string `json:"payload"`
					Time    string `json:"time"`
				}{ev.Channel, ev.Payload, ev.At.UTC().Format(time.RFC3339Nano)})
			} else {
				_, err = fmt.Fprintf(e.stdout, "%s %s\n", ev.Channel, ev.Payload)
			}
			if err != nil { // stdout gone (a closed pipe): nothing left to do
				return exitWith(exitFailure, fmt.Errorf("watch: %w", err))
			}
		case dfstream.Disconnected:
			fmt.Fprintf(e.stderr, "dfstream: watch: connection to %s lost (%s); reconnecting\n", ev.Server, libMsg(ev.Reason))
		case dfstream.Reconnected:
			// Down starts at the last delivery known to work, before the
			// loss was noticed.
			fmt.Fprintf(e.stderr, "dfstream: watch: reconnected to %s; signals sent in the last %v may have been missed\n",
				ev.Server, ev.Down.Round(time.Millisecond))
		case dfstream.Overflow:
			fmt.Fprintf(e.stderr, "dfstream: watch: %d signals dropped (output too slow)\n", ev.Dropped)
		case dfstream.Failed:
			if ctx.Err() != nil {
				return nil
			}
			return watchFailed(ev.Err, common)
		case dfstream.Closed:
			if ctx.Err() == nil && ev.Err != nil && !errors.Is(ev.Err, context.Canceled) {
				return watchFailed(ev.Err, common)
			}
			return nil
		}
	}
	if err := ss.Err(); err != nil && ctx.Err() == nil {
		return watchFailed(err, common)
	}
	return nil
}

// watchFailed is the exit of a watch the library stopped with err: 69 for
// the server's failures, with a hint when it refused authentication.
func watchFailed(err error, common *commonFlags) error {
	err = fmt.Errorf("watch: %w", lib(err))
	if !errors.Is(err, dfstream.ErrAuth) {
		return classify(err)
	}
	hint := "check the auth token"
	if common.auth.token == "" && common.auth.tokenFile == "" {
		hint = "the server requires an auth token: set --auth-token-file, --auth-token or DFSTREAM_AUTH_TOKEN"
	}
	return exitWith(exitUnavailable, fmt.Errorf("%w (%s)", err, hint))
}
