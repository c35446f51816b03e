package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func runEmit(args []string, e *env) error {
	c := newCommand("emit", "CHANNEL [PAYLOAD] [flags]",
		"Send PAYLOAD to CHANNEL and print how many receivers the server queued it for\n"+
			"(one per listening connection, plus one per matching queue group). Without\n"+
			"PAYLOAD, each non-empty line of stdin is sent, and one count printed per line.\n"+
			"A payload is at most 256 bytes; a payload starting with '-' goes after --.",
		"  dfstream emit orders.eu.created '{\"id\":42}'\n  tail -f events.log | dfstream emit logs.app",
		e.stdout)
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	emit := func(payload string) error {
		n, err := client.Emit(ctx, channel, payload)
		if err != nil {
			return classify(fmt.Errorf("emit: %w", err))
		}
		fmt.Fprintln(e.stdout, n)
		return nil
	}
	if len(pos) == 2 {
		return emit(pos[1])
	}
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		p := strings.TrimSuffix(sc.Text(), "\r")
		if p == "" {
			continue
		}
		if err := emit(p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ee *exitError
			if errors.As(err, &ee) {
				return exitWith(ee.code, fmt.Errorf("stdin line %d: %w", line, ee.err))
			}
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return usagef("emit: reading stdin: %v", err)
	}
	return nil
}
