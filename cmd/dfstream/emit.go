package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func runEmit(args []string, e *env) error {
	c := newCommand("emit", "CHANNEL [PAYLOAD] [flags]",
		"Send PAYLOAD to CHANNEL and print how many receivers the server queued it for\n"+
			"(one per listening connection, plus one per matching queue group). Without\n"+
			"PAYLOAD, each non-empty line of stdin is sent, and one count printed per line.\n"+
			"A payload is at most 256 bytes; a payload starting with '-' goes after --.\n"+
			"SIGINT or SIGTERM ends it with 130 or 143, also while it waits for stdin.",
		"  dfstream emit orders.eu.created '{\"id\":42}'\n  tail -f events.log | dfstream emit logs.app",
		exitCodesEmit, e.stdout)
	common := c.addCommonFlags(e.stderr)
	pos, rest, _, err := c.parse(args)
	if err != nil {
		return err
	}
	pos = append(pos, rest...)
	if len(pos) == 0 || len(pos) > 2 {
		return usagef("emit: CHANNEL and at most one PAYLOAD expected, got %d arguments (quote a payload with spaces)", len(pos))
	}
	channel := pos[0]
	if err := checkKey("CHANNEL", channel); err != nil {
		return err
	}
	if strings.ContainsAny(channel, "*>") {
		return usagef("CHANNEL %q contains a wildcard", channel)
	}
	if len(pos) == 2 && pos[1] == "" {
		return usagef("PAYLOAD is empty")
	}
	client, err := common.newClient()
	if err != nil {
		return err
	}
	defer closeWithin(3*time.Second, client.Close)
	// SIGINT and SIGTERM end emit with 128+N, also while it waits for
	// stdin, which a blocked read alone would not notice.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var caught atomic.Int32
	go func() {
		select {
		case sig := <-sigs:
			caught.Store(int32(signum(sig)))
			cancel()
		case <-ctx.Done():
		}
	}()
	interrupted := func() error { return exitWith(128+int(caught.Load()), nil) }

	emit := func(payload string) error {
		n, err := client.Emit(ctx, channel, payload)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted()
			}
			return classify(fmt.Errorf("emit: %w", lib(err)))
		}
		fmt.Fprintln(e.stdout, n)
		return nil
	}
	if len(pos) == 2 {
		return emit(pos[1])
	}

	// Lines are read in a goroutine so that a signal is seen while a read
	// blocks; that goroutine is left behind blocked, the process is ending.
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		var err error
		defer func() {
			readErr <- err
			close(lines)
		}()
		sc := bufio.NewScanner(e.stdin)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		err = sc.Err()
	}()
	line := 0
	for {
		var text string
		var ok bool
		select {
		case <-ctx.Done():
			return interrupted()
		case text, ok = <-lines:
		}
		if !ok {
			if ctx.Err() != nil {
				return interrupted()
			}
			if err := <-readErr; err != nil {
				return usagef("emit: reading stdin: %v", err)
			}
			return nil
		}
		line++
		p := strings.TrimSuffix(text, "\r")
		if p == "" {
			continue
		}
		if err := emit(p); err != nil {
			var ee *exitError
			if errors.As(err, &ee) && ee.err != nil {
				return exitWith(ee.code, fmt.Errorf("stdin line %d: %w", line, ee.err))
			}
			return err
		}
	}
}
