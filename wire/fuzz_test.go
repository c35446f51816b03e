package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dfstream/dfstream/wire"
)

// checkReplyErr asserts the error contract of every reply parser: a status
// error or a protocol error, never both, never anything else.
func checkReplyErr(t *testing.T, line string, err error) {
	t.Helper()
	isServer, isProto := errors.Is(err, wire.ErrServer), errors.Is(err, wire.ErrProtocol)
	if isServer == isProto {
		t.Fatalf("%q: error %v: server=%v protocol=%v", line, err, isServer, isProto)
	}
	if isServer && strings.HasPrefix(line, "ok ") {
		t.Fatalf("%q: an ok-line gave a server error: %v", line, err)
	}
	_ = err.Error()
	if isServer {
		checkStatus(t, line, err)
	}
}

// words splits a reply line as the server's replies are split: on spaces
// and tabs only.
func words(line string) []string {
	return strings.FieldsFunc(line, func(c rune) bool { return c == ' ' || c == '\t' })
}

// checkStatus asserts what a server error says of its line: the status is
// the line's first word, the detail the rest; a not-leader error exactly
// when the status is error_not_leader, its hint the one word after it.
func checkStatus(t *testing.T, line string, err error) {
	t.Helper()
	var se *wire.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("%q: server error %v is no *ServerError", line, err)
	}
	words := words(line)
	if len(words) == 0 || !strings.HasPrefix(words[0], se.Status) || se.Status == "" || se.Status == "ok" {
		t.Fatalf("%q: status %q", line, se.Status)
	}
	if len(se.Detail) > 128 || strings.Trim(se.Detail, " \t") != se.Detail {
		t.Fatalf("%q: detail %q", line, se.Detail)
	}
	var nle *wire.NotLeaderError
	isNL := errors.As(err, &nle)
	if isNL != (se.Status == "error_not_leader") || isNL != errors.Is(err, wire.ErrNotLeader) {
		t.Fatalf("%q: not-leader error %v for status %q", line, isNL, se.Status)
	}
	if isNL && (nle.Leader != se.Detail || strings.ContainsAny(nle.Leader, " \t") || len(words) > 2) {
		t.Fatalf("%q: leader %q", line, nle.Leader)
	}
	if errors.Is(err, wire.ErrDraining) != (se.Status == "error_draining") {
		t.Fatalf("%q: draining %v for status %q", line, errors.Is(err, wire.ErrDraining), se.Status)
	}
}

// checkDigits asserts that the number fields of an accepted reply, the
// fields of line from index first on, are bare decimal digits: the server
// writes no sign, so "+5" or "-0" must have been refused.
func checkDigits(t *testing.T, line string, first int) {
	t.Helper()
	fields := words(line)
	for _, f := range fields[min(first, len(fields)):] {
		if f == "" || strings.Trim(f, "0123456789") != "" {
			t.Fatalf("%q: number field %q accepted", line, f)
		}
	}
}

func FuzzParseGrant(f *testing.F) {
	for _, s := range []string{
		"ok 0123456789abcdef0123456789abcdef 33", "ok t 60 7", "ok t 1 18446744073709551615",
		"timeout", "error", "error_draining", "", " ", "ok", "ok t", "ok t 0", "ok t -1",
		"ok t 9223372037", "ok t 1 2 3", "ok\tt\t5", "acquired t 1", "ok t +5", "ok t 1 +1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		g, err := wire.ParseGrant("l", line)
		if err != nil {
			checkReplyErr(t, line, err)
			if g != (wire.Grant{}) {
				t.Fatalf("%q: grant %+v with error", line, g)
			}
			return
		}
		if g.Token == "" || g.Lease < time.Second || g.Lease%time.Second != 0 {
			t.Fatalf("%q: bad grant %+v", line, g)
		}
		checkDigits(t, line, 2)
		// Re-encoding and parsing again gives the same grant.
		re := "ok " + g.Token + " " + strconv.FormatInt(int64(g.Lease/time.Second), 10)
		if g.Fence != 0 {
			re += " " + strconv.FormatUint(g.Fence, 10)
		}
		g2, err := wire.ParseGrant("l", re)
		if err != nil || g2 != g {
			t.Fatalf("%q: round trip %q gave %+v, %v", line, re, g2, err)
		}
	})
}

func FuzzParseEnqueue(f *testing.F) {
	for _, s := range []string{
		"queued", "acquired t 33", "acquired t 5 12", "queued 1", "ok t 1", "acquired", "acquired t x",
		"error_already_enqueued", "", "acquired t 1 2 3", "acquired t +1", "acquired t 1 -0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		g, acquired, err := wire.ParseEnqueue("e", line)
		if err != nil {
			checkReplyErr(t, line, err)
			if acquired || g != (wire.Grant{}) {
				t.Fatalf("%q: result with error", line)
			}
			return
		}
		if acquired != (g.Token != "") || (acquired && g.Lease < time.Second) {
			t.Fatalf("%q: inconsistent %+v acquired=%v", line, g, acquired)
		}
		checkDigits(t, line, 2)
	})
}

func FuzzParseRenew(f *testing.F) {
	for _, s := range []string{"ok 33", "ok 20 4", "error", "error_lease_expired", "ok", "ok 1 2 3", "ok x", "ok 0", "", "ok +3", "ok 3 -0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		lease, fence, err := wire.ParseRenew("n", line)
		if err != nil {
			checkReplyErr(t, line, err)
			if lease != 0 || fence != 0 {
				t.Fatalf("%q: result with error", line)
			}
			return
		}
		if lease < time.Second || lease > wire.MaxSeconds*time.Second {
			t.Fatalf("%q: lease %v", line, lease)
		}
		checkDigits(t, line, 1)
	})
}

func FuzzParseSignalReply(f *testing.F) {
	for _, s := range []string{"ok 0", "ok 3", "ok", "ok -1", "ok +3", "ok -0", "ok 1 2", "error", "", "ok 9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		n, err := wire.ParseSignalReply(line)
		if err != nil {
			checkReplyErr(t, line, err)
			if n != 0 {
				t.Fatalf("%q: count %d with error", line, n)
			}
			return
		}
		if want, _ := strconv.ParseUint(words(line)[1], 10, 64); n < 0 || uint64(n) != want {
			t.Fatalf("%q: count %d", line, n)
		}
		checkDigits(t, line, 1)
	})
}

func FuzzParsePush(f *testing.F) {
	for _, s := range []string{
		"sig a.b hello", "sig a.b   x  y\tz ", "sig c \t", "sig ", "sig a", "sig  x", "ok 1", "", "sig a b c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		p, err := wire.ParsePush(line)
		if err != nil {
			if !errors.Is(err, wire.ErrProtocol) {
				t.Fatalf("%q: %v", line, err)
			}
			return
		}
		if !wire.IsPush(line) || p.Channel == "" || strings.Contains(p.Channel, " ") {
			t.Fatalf("%q: bad push %+v", line, p)
		}
		if "sig "+p.Channel+" "+p.Payload != line {
			t.Fatalf("%q: push %+v does not rebuild the line", line, p)
		}
	})
}

func FuzzParseStats(f *testing.F) {
	for _, s := range []string{
		stats110, statsRF, statsRFEmpty, stats2, stats2Cluster, stats2Election, "ok {}", "ok null", "ok [", "error", "",
		"ok  {\"locks\":null}", "ok\t{}", `ok {"cluster":{"term":-1}}`, "error_not_leader h:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		s, err := wire.ParseStats(line)
		if err != nil {
			checkReplyErr(t, line, err)
			if s != nil {
				t.Fatalf("%q: stats with error", line)
			}
			return
		}
		if s == nil {
			t.Fatalf("%q: nil stats without error", line)
		}
		checkStatsCounts(t, line, s)
	})
}

// checkStatsCounts asserts that accepted stats hold no negative count or
// duration: the server sends none.
func checkStatsCounts(t *testing.T, line string, s *wire.Stats) {
	t.Helper()
	nums := []float64{float64(s.Connections)}
	for _, l := range s.Locks {
		nums = append(nums, float64(l.Waiters), l.LeaseExpiresIn)
	}
	for _, m := range s.Semaphores {
		nums = append(nums, float64(m.Limit), float64(m.Holders), float64(m.Waiters))
	}
	for _, i := range append(s.IdleLocks, s.IdleSemaphores...) {
		nums = append(nums, i.IdleS)
	}
	for _, c := range s.SignalChannels {
		nums = append(nums, float64(c.Listeners))
	}
	for _, n := range nums {
		if n < 0 {
			t.Fatalf("%q: negative figure %v accepted", line, n)
		}
	}
}

// Every status line, as any reply parser sees it: a status error whose
// fields say what the line says, or a protocol error.
func FuzzStatusLine(f *testing.F) {
	for _, s := range []string{
		"ok", "error", "error_draining", "error_not_leader", "error_not_leader 10.0.0.1:6388",
		"error_not_leader\t[::1]:1 ", "error_not_leader a b", "error stable_ref_already_set", "  timeout  ",
		"error\tx y", "ok 1", "", "\t", "error " + strings.Repeat("x", 127) + " y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		err := wire.ParseOK("barrier", line)
		if err == nil {
			if strings.TrimSpace(line) != "ok" {
				t.Fatalf("%q accepted as ok", line)
			}
			return
		}
		checkReplyErr(t, line, err)
	})
}

// A stable ref is accepted exactly when the server would keep it as given,
// and then travels alone on the key line.
func FuzzStableRef(f *testing.F) {
	for _, s := range []string{"a", "my ref", " a", "a ", "", strings.Repeat("r", 65), "é", "\x7f", "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		r, err := wire.StableRef(ref)
		printable := !strings.ContainsFunc(ref, func(c rune) bool { return c < 0x20 || c > 0x7e })
		want := ref != "" && len(ref) <= wire.MaxStableRefLen && printable && strings.TrimSpace(ref) == ref
		if (err == nil) != want {
			t.Fatalf("%q: error %v, want accepted=%v", ref, err, want)
		}
		if err != nil {
			if !errors.Is(err, wire.ErrInvalidInput) || r != (wire.Request{}) {
				t.Fatalf("%q: %v, %v", ref, r, err)
			}
			return
		}
		if got := string(r.AppendTo(nil)); got != "stable-ref\n"+ref+"\n_\n" {
			t.Fatalf("%q: encoded %q", ref, got)
		}
	})
}

// A fence is read from a token of 32 lower-case hex digits only, and it is
// the number its first 16 spell.
func FuzzFenceFromToken(f *testing.F) {
	for _, s := range []string{
		"0000000000000001deadbeefdeadbeef", "ffffffffffffffff0000000000000000", "", "0x00000000000001deadbeefdeadbeef",
		"0000000000000001DEADBEEFDEADBEEF", "+000000000000001deadbeefdeadbeef",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		fence, err := wire.FenceFromToken(token)
		if err != nil {
			if !errors.Is(err, wire.ErrInvalidInput) || fence != 0 {
				t.Fatalf("%q: %d, %v", token, fence, err)
			}
			return
		}
		if len(token) != 32 || strings.Trim(token, "0123456789abcdef") != "" {
			t.Fatalf("%q accepted", token)
		}
		if got := fmt.Sprintf("%016x", fence); got != token[:16] {
			t.Fatalf("%q: fence %d spells %s", token, fence, got)
		}
	})
}

// chunkReader returns at most n bytes per Read, to split lines anywhere.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n, len(r.data))
	copy(p, r.data[:k])
	r.data = r.data[k:]
	return k, nil
}

// refLines is the LineReader's specification, written the simple way.
func refLines(data []byte, max int) ([]string, error) {
	var lines []string
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			switch {
			case len(data) > max+1:
				return lines, wire.ErrLineTooLong
			case len(data) > 0:
				return lines, io.ErrUnexpectedEOF
			default:
				return lines, io.EOF
			}
		}
		l := bytes.TrimSuffix(data[:i], []byte("\r"))
		if len(l) > max {
			return lines, wire.ErrLineTooLong
		}
		lines = append(lines, string(l))
		data = data[i+1:]
	}
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("ok\nqueued\r\n"), uint8(1), uint16(10))
	f.Add([]byte("0123456789\n01234567890\n"), uint8(3), uint16(10))
	f.Add([]byte("partial"), uint8(255), uint16(3))
	f.Add(bytes.Repeat([]byte("x"), 2000), uint8(100), uint16(1500))
	f.Add(append(bytes.Repeat([]byte("y"), 700), "\r\n\n\r\r\n"...), uint8(17), uint16(700))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, max uint16) {
		m := 1 + int(max)%3000
		lr := wire.NewLineReader(&chunkReader{data: data, n: 1 + int(chunk)}, m)
		want, wantErr := refLines(data, m)
		var got []string
		var err error
		for {
			var l string
			if l, err = lr.ReadLine(); err != nil {
				break
			}
			if len(l) > m {
				t.Fatalf("line of %d bytes over cap %d", len(l), m)
			}
			got = append(got, l)
		}
		if !errors.Is(err, wantErr) {
			t.Fatalf("error %v, want %v", err, wantErr)
		}
		if len(got) != len(want) {
			t.Fatalf("%d lines, want %d", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("line %d: %q, want %q", i, got[i], want[i])
			}
		}
	})
}

// checkEncoding is the safety property of every builder: exactly three
// lines, none over the server's limit, and nothing else.
func checkEncoding(t *testing.T, name string, r wire.Request, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, wire.ErrInvalidInput) {
			t.Fatalf("%s: error %v does not match ErrInvalidInput", name, err)
		}
		if r != (wire.Request{}) {
			t.Fatalf("%s: request %v built despite error", name, r)
		}
		return
	}
	b := r.AppendTo(nil)
	if n := bytes.Count(b, []byte("\n")); n != 3 {
		t.Fatalf("%s: %q has %d LFs", name, b, n)
	}
	lines := strings.SplitAfter(string(b), "\n")
	for _, l := range lines[:3] {
		if len(l)-1 > wire.MaxLineLen {
			t.Fatalf("%s: line of %d bytes", name, len(l)-1)
		}
		if strings.ContainsAny(l[:len(l)-1], "\r\x00") && r.Cmd != "auth" && r.Cmd != "signal" {
			t.Fatalf("%s: CR or NUL in %q", name, l)
		}
	}
	if r.Cmd == "" || r.Key == "" || strings.ContainsFunc(r.Key, func(c rune) bool { return c == ' ' || c == '\t' || c == '\r' }) {
		t.Fatalf("%s: bad key in %v", name, r)
	}
}

func FuzzValidate(f *testing.F) {
	f.Add(uint8(0), "k", "0123456789abcdef", "a.>", "g", "hello world", int64(time.Second), int64(0), 1)
	f.Add(uint8(1), "a b", "t\nr", "a.>.b", "g h", "x\ny", int64(-1), int64(-1), 0)
	f.Add(uint8(1), strings.Repeat("k", 256), strings.Repeat("t", 256), "*.*", "", strings.Repeat("p", 256), int64(1<<63-1), int64(1), -5)
	f.Add(uint8(2), "k\u00a0", "t\u2003", "a*", "\x00", "\r", int64(1), int64(999999999), 3)
	f.Fuzz(func(t *testing.T, kind uint8, key, tok, pattern, group, payload string, timeout, lease int64, limit int) {
		k := wire.Kind(kind % 3)
		to, ls := time.Duration(timeout), time.Duration(lease)
		r, err := wire.Auth(tok)
		checkEncoding(t, "auth", r, err)
		r, err = wire.Acquire(k, key, to, limit, ls)
		checkEncoding(t, "acquire", r, err)
		r, err = wire.Enqueue(k, key, limit, ls)
		checkEncoding(t, "enqueue", r, err)
		r, err = wire.Wait(k, key, to)
		checkEncoding(t, "wait", r, err)
		r, err = wire.Renew(k, key, tok, ls)
		checkEncoding(t, "renew", r, err)
		r, err = wire.Release(k, key, tok)
		checkEncoding(t, "release", r, err)
		r, err = wire.Listen(pattern, group)
		checkEncoding(t, "listen", r, err)
		r, err = wire.Unlisten(pattern, group)
		checkEncoding(t, "unlisten", r, err)
		r, err = wire.Signal(key, payload)
		checkEncoding(t, "signal", r, err)
		if err == nil && strings.ContainsAny(r.Key, "*>") {
			t.Fatalf("signal to a wildcard channel %q", r.Key)
		}
	})
}
