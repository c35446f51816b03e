// Package embedded gives the examples their server: the addresses given with
// -servers, or an in-process dflockdtest server when there are none; and a
// Link the examples that show a loss cut to cause it.
package embedded

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/internal/faultproxy"
)

var servers = flag.String("servers", "", "comma-separated dflockd servers (host:port); empty starts an embedded server")

// Servers parses the flags and returns the servers to use, and a function
// that stops the embedded server if one was started.
func Servers() (addrs []string, stop func()) {
	flag.Parse()
	if *servers != "" {
		return strings.Split(*servers, ","), func() {}
	}
	srv, err := dflockdtest.Start(dflockdtest.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start embedded server:", err)
		os.Exit(1)
	}
	fmt.Println("embedded dflockd-compatible server on", srv.Addr())
	return []string{srv.Addr()}, func() { _ = srv.Close() }
}

// Link is an example's own network path to the servers: one TCP proxy per
// server on 127.0.0.1. Cutting it is a real network fault (both ends see
// the connection reset, the server releases what the connection held),
// whether the servers are embedded or given with -servers.
type Link struct{ proxies []*faultproxy.Proxy }

// NewLink starts a proxy to each of addrs.
func NewLink(addrs []string) (*Link, error) {
	l := &Link{}
	for _, a := range addrs {
		p, err := faultproxy.Start(a)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.proxies = append(l.proxies, p)
	}
	return l, nil
}

// Addrs are the addresses to give WithServers: the proxies'.
func (l *Link) Addrs() []string {
	out := make([]string, len(l.proxies))
	for i, p := range l.proxies {
		out[i] = p.Addr()
	}
	return out
}

// Cut resets every connection open through the link now. New connections
// go through as before, so a client that reconnects recovers.
func (l *Link) Cut() {
	for _, p := range l.proxies {
		p.Reset()
	}
}

// Close stops the proxies and closes the connections through them.
func (l *Link) Close() {
	for _, p := range l.proxies {
		_ = p.Close()
	}
}
