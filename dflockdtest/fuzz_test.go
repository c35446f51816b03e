package dflockdtest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzServerInput writes arbitrary bytes on a connection and checks that
// the server survives them: it never panics, the hostile connection ends or
// answers, and a healthy client on the same server is still served.
func FuzzServerInput(f *testing.F) {
	for _, seed := range []string{
		"l\nk\n0\n",
		"l\r\nk\r\n0\r\n",
		"stats\n_\n\n",
		"e\nk\n\nw\nk\n0\nr\nk\n00000000000000000000000000000000\n",
		"sl\ns\n0 3\nse\ns\n2 5\nsw\ns\n1\n",
		"listen\na.>\ng\nsignal\na.b\n  x y\t\nunlisten\na.>\ng\n",
		"listen\na.>.b\n\nlisten\n>\n\nsignal\na.*\nx\n",
		"n\nk\n" + strings.Repeat("f", 32) + " 9223372037\n",
		"auth\n_\ntoken\n",
		"ping\n_\n\n",
		"l\n" + strings.Repeat("k", 300) + "\n0\n",
		"\x00\xff\n\n\n",
		"l\nk\n+5 -1\n",
	} {
		f.Add([]byte(seed))
	}
	srv, err := Start(Config{ReadTimeout: 2 * time.Second, ShutdownDrain: -1, LeaseSweepInterval: 50 * time.Millisecond})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Close() })

	f.Fuzz(func(t *testing.T, input []byte) {
		hostile, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer hostile.Close()
		_ = hostile.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := hostile.Write(input); err != nil {
			return // the server may already have closed it
		}
		_ = hostile.(*net.TCPConn).CloseWrite()
		// Every reply line is one status and fields; the server never
		// writes a partial or empty line.
		rd := bufio.NewReader(hostile)
		for {
			// EOF, or a timeout while the connection waits in a blocking
			// command: either way the server has said all it will.
			line, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			if len(line) < 3 {
				t.Fatalf("short reply line %q", line)
			}
		}

		healthy, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer healthy.Close()
		_ = healthy.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(healthy, "stats\n_\n\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(healthy).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ok {") {
			t.Fatalf("healthy client not served after %q: %q %v", input, line, err)
		}
	})
}
