// Package embedded gives the examples their server: the addresses given with
// -servers, or an in-process dflockdtest server when there are none.
package embedded

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/dfstream/dfstream/dflockdtest"
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
