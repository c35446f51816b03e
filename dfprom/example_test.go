package dfprom_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/dfprom"
)

// A Client reports to Metrics registered with a registry of its own; a
// service serves the registry with promhttp.HandlerFor on /metrics. Here
// the registry is gathered directly and a few lines of the exposition
// printed.
func Example() {
	srv, err := dflockdtest.Start(dflockdtest.Config{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	reg := prometheus.NewRegistry()
	m, err := dfprom.New(dfprom.WithRegisterer(reg))
	if err != nil {
		panic(err)
	}
	c, err := dfstream.New(dfstream.WithServers(srv.Addr()), m.Option())
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ctx := context.Background()
	l, err := c.Lock(ctx, "reports/nightly")
	if err != nil {
		panic(err)
	}
	if err := l.Release(ctx); err != nil {
		panic(err)
	}

	fams, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			panic(err)
		}
	}
	for _, line := range strings.Split(text.String(), "\n") {
		for _, name := range []string{"dfstream_grants_total", "dfstream_held_streams", "dfstream_releases_total", "dfstream_acquire_wait_seconds_count"} {
			if strings.HasPrefix(line, name+"{") {
				fmt.Println(line)
			}
		}
	}
	// Output:
	// dfstream_acquire_wait_seconds_count{kind="lock",outcome="granted"} 1
	// dfstream_grants_total{kind="lock"} 1
	// dfstream_held_streams{kind="lock"} 0
	// dfstream_releases_total{kind="lock"} 1
}
