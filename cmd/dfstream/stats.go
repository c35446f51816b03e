package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dfstream/dfstream"
)

func runStats(args []string, e *env) error {
	c := newCommand("stats", "[--json] [flags]",
		"Show each server's state: connections, held locks with the lease left and\n"+
			"their waiters, semaphores with holders/limit, idle keys awaiting GC, and\n"+
			"signal subscriptions; or, with --json, the server's stats as JSON (an object\n"+
			"keyed by server address when there are several servers). A server that\n"+
			"does not answer is named on stderr after the others are shown, and the\n"+
			"exit code is 69.",
		"  dfstream stats --servers 10.0.0.5:6388\n  dfstream stats --json | jq '.locks'",
		exitCodesStats, e.stdout)
	common := c.addCommonFlags(e.stderr)
	c.addClusterFlag(common)
	asJSON := c.fs.Bool("json", false, "print JSON instead of a table")
	pos, rest, _, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos)+len(rest) > 0 {
		return usagef("stats takes no arguments (see dfstream stats --help)")
	}
	client, err := common.newClient()
	if err != nil {
		return err
	}
	defer closeWithin(3*time.Second, client.Close)

	// One server down does not hide the others: those that answer are
	// shown, and the rest are named in the error (exit 69).
	servers := client.Servers()
	all := make(map[string]*dfstream.Stats, len(servers))
	var answered []string
	var failed []error
	for _, addr := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), common.connectTimeout+10*time.Second)
		st, err := client.Stats(ctx, addr)
		cancel()
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", addr, lib(err)))
			continue
		}
		all[addr] = st
		answered = append(answered, addr)
	}
	if err := writeStats(e.stdout, *asJSON, len(servers) > 1, answered, all); err != nil {
		return err
	}
	switch {
	case len(failed) == 0:
		return nil
	case len(servers) == 1:
		return classify(fmt.Errorf("stats: %w", failed[0]))
	default:
		return classify(&statsFailure{failed: failed, of: len(servers)})
	}
}

// writeStats prints the servers that answered: tables, or JSON (an object
// keyed by address when several servers are configured).
func writeStats(out io.Writer, asJSON, several bool, answered []string, all map[string]*dfstream.Stats) error {
	if asJSON {
		if len(answered) == 0 {
			return nil
		}
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		if !several {
			return enc.Encode(emptyLists(all[answered[0]]))
		}
		out := make(map[string]*dfstream.Stats, len(all))
		for addr, st := range all {
			out[addr] = emptyLists(st)
		}
		return enc.Encode(out)
	}
	for i, addr := range answered {
		if i > 0 {
			fmt.Fprintln(out)
		}
		printStats(out, addr, all[addr])
	}
	return nil
}

// emptyLists returns st with its nil lists made empty, so that JSON shows
// every list as [] when it has nothing (a server with no subscriptions sends
// null for them, and older ones send no list at all).
func emptyLists(st *dfstream.Stats) *dfstream.Stats {
	out := *st
	out.Locks = nonNil(out.Locks)
	out.Semaphores = nonNil(out.Semaphores)
	out.IdleLocks = nonNil(out.IdleLocks)
	out.IdleSemaphores = nonNil(out.IdleSemaphores)
	out.SignalChannels = nonNil(out.SignalChannels)
	return &out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// statsFailure names, on one line, the servers of several that gave no
// stats, each with its reason; it matches each reason with errors.Is.
type statsFailure struct {
	failed []error
	of     int
}

func (e *statsFailure) Error() string {
	msgs := make([]string, len(e.failed))
	for i, err := range e.failed {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("stats: no answer from %d of %d servers: %s", len(e.failed), e.of, strings.Join(msgs, "; "))
}

func (e *statsFailure) Unwrap() []error { return e.failed }

// printStats writes one server's state as aligned tables.
func printStats(out io.Writer, addr string, st *dfstream.Stats) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "SERVER\t%s\n", addr)
	fmt.Fprintf(w, "CONNECTIONS\t%d\n", st.Connections)
	printClusterStatus(w, st)

	fmt.Fprintln(w)
	if len(st.Locks) == 0 {
		fmt.Fprintln(w, "LOCKS\t(none)")
	} else {
		fmt.Fprintln(w, "LOCK\tHOLDER\tLEASE LEFT\tFENCE\tWAITERS")
		for _, l := range st.Locks {
			holder, lease, fence := "-", "-", "-"
			if l.OwnerConnID != 0 {
				holder = "conn " + strconv.FormatUint(l.OwnerConnID, 10)
				lease = seconds(l.LeaseExpiresIn)
				if l.Fence != 0 {
					fence = strconv.FormatUint(l.Fence, 10)
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\n", l.Key, holder, lease, fence, l.Waiters)
		}
	}

	fmt.Fprintln(w)
	if len(st.Semaphores) == 0 {
		fmt.Fprintln(w, "SEMAPHORES\t(none)")
	} else {
		fmt.Fprintln(w, "SEMAPHORE\tHOLDERS/LIMIT\tWAITERS")
		for _, s := range st.Semaphores {
			fmt.Fprintf(w, "%s\t%d/%d\t%d\n", s.Key, s.Holders, s.Limit, s.Waiters)
		}
	}

	fmt.Fprintln(w)
	if len(st.IdleLocks)+len(st.IdleSemaphores) == 0 {
		fmt.Fprintln(w, "IDLE KEYS\t(none)")
	} else {
		fmt.Fprintln(w, "IDLE KEY\tKIND\tIDLE FOR")
		for _, k := range st.IdleLocks {
			fmt.Fprintf(w, "%s\tlock\t%s\n", k.Key, seconds(k.IdleS))
		}
		for _, k := range st.IdleSemaphores {
			fmt.Fprintf(w, "%s\tsemaphore\t%s\n", k.Key, seconds(k.IdleS))
		}
	}

	// The private probe channels of dfstream signal streams are noise here.
	probes := 0
	shown := st.SignalChannels[:0:0]
	for _, s := range st.SignalChannels {
		if strings.HasPrefix(s.Pattern, dfstream.ProbeChannelPrefix) {
			probes++
			continue
		}
		shown = append(shown, s)
	}
	fmt.Fprintln(w)
	if len(shown) == 0 {
		fmt.Fprintln(w, "SUBSCRIPTIONS\t(none)")
	} else {
		fmt.Fprintln(w, "PATTERN\tGROUP\tLISTENERS")
		for _, s := range shown {
			g := s.Group
			if g == "" {
				g = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%d\n", s.Pattern, g, s.Listeners)
		}
	}
	if probes > 0 {
		fmt.Fprintf(w, "(%d dfstream heartbeat probe subscriptions not shown)\n", probes)
	}
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
}
