package wire_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
	"github.com/dfstream/dfstream/wire"
)

// everyParser runs line through every reply parser that takes a status, so
// a status is checked the same way wherever it can come back.
func everyParser(line string) map[string]error {
	_, gErr := wire.ParseGrant("l", line)
	_, _, eErr := wire.ParseEnqueue("e", line)
	_, _, nErr := wire.ParseRenew("n", line)
	_, sErr := wire.ParseSignalReply(line)
	_, stErr := wire.ParseStats(line)
	return map[string]error{
		"l": gErr, "e": eErr, "n": nErr, "barrier": wire.ParseOK("barrier", line), "signal": sErr, "stats": stErr,
	}
}

// requireStatus asserts that err is the status error of cmd with status,
// not a protocol error, and returns it.
func requireStatus(t *testing.T, err error, cmd, status string) *wire.ServerError {
	t.Helper()
	require.ErrorIs(t, err, wire.ErrServer, cmd)
	assert.NotErrorIs(t, err, wire.ErrProtocol, cmd)
	var se *wire.ServerError
	require.ErrorAs(t, err, &se, cmd)
	assert.Equal(t, status, se.Status, cmd)
	assert.Equal(t, cmd, se.Cmd)
	return se
}

// protocol-v2 §5: a draining server answers any request error_draining.
func TestV2DrainingMatchesErrDraining(t *testing.T) {
	t.Parallel()
	for cmd, err := range everyParser("error_draining") {
		requireStatus(t, err, cmd, "error_draining")
		assert.ErrorIs(t, err, wire.ErrDraining, cmd)
		assert.NotErrorIs(t, err, wire.ErrNotLeader, cmd)
	}
}

// protocol-v2 §2 and §7: error_not_leader carries the leader's client
// address when the member knows one, nothing during an election.
func TestV2NotLeaderCarriesTheLeaderAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ line, leader string }{
		{"error_not_leader 10.0.0.2:6388", "10.0.0.2:6388"},
		{"error_not_leader [::1]:6388", "[::1]:6388"},
		{"error_not_leader", ""},
		{"error_not_leader  \t h:1 \t", "h:1"},
		{"error_not_leader\th:1", "h:1"},
		{"  error_not_leader h:1", "h:1"},
	} {
		for cmd, err := range everyParser(tc.line) {
			var nle *wire.NotLeaderError
			require.ErrorAs(t, err, &nle, "%s %q", cmd, tc.line)
			assert.Equal(t, tc.leader, nle.Leader, "%s %q", cmd, tc.line)
			assert.ErrorIs(t, err, wire.ErrNotLeader)
			requireStatus(t, err, cmd, "error_not_leader")
			assert.Contains(t, err.Error(), "not the cluster leader")
			if tc.leader != "" {
				assert.Contains(t, err.Error(), tc.leader)
			}
		}
	}
}

// An address has no blank: two words after the status are not a hint.
func TestV2NotLeaderWithTwoWordsIsAProtocolError(t *testing.T) {
	t.Parallel()
	for cmd, err := range everyParser("error_not_leader a:1 b:2") {
		require.ErrorIs(t, err, wire.ErrProtocol, cmd)
		assert.NotErrorIs(t, err, wire.ErrNotLeader, cmd)
		assert.NotErrorIs(t, err, wire.ErrServer, cmd)
	}
}

func TestV2NotLeaderErrorMatchesItsSentinel(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("acquire: %w", &wire.NotLeaderError{Leader: "h:1"})
	assert.ErrorIs(t, err, wire.ErrNotLeader)
	assert.ErrorIs(t, err, wire.ErrServer)
	assert.NotErrorIs(t, err, wire.ErrDraining)
	assert.Equal(t, `not the cluster leader (leader "h:1")`, (&wire.NotLeaderError{Leader: "h:1"}).Error())
	assert.Equal(t, "not the cluster leader (no leader known)", (&wire.NotLeaderError{}).Error())

	err = wire.StatusErr("w", "error_not_leader")
	var nle *wire.NotLeaderError
	require.ErrorAs(t, err, &nle)
	assert.Empty(t, nle.Leader)
	assert.ErrorIs(t, err, wire.ErrNotLeader)
}

// protocol-v2 §2: a 2.x server may follow error with a word
// (stable_ref_already_set); with or without it the reply is the generic
// server error, not a protocol error.
func TestV2ErrorWithATrailingWordIsTheGenericServerError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ line, detail string }{
		{"error", ""},
		{"error stable_ref_already_set", "stable_ref_already_set"},
		{"error  stable_ref_empty ", "stable_ref_empty"},
		{"error\tsome words here", "some words here"},
	} {
		for cmd, err := range everyParser(tc.line) {
			se := requireStatus(t, err, cmd, "error")
			assert.Equal(t, tc.detail, se.Detail)
			assert.Equal(t, wire.ErrServer, se.Unwrap(), "no status sentinel but ErrServer")
		}
	}
	err := wire.ParseOK("stable-ref", "error stable_ref_already_set")
	assert.Equal(t, `server replied "error stable_ref_already_set"`, err.Error())
}

func TestV2ServerErrorDetailIsCut(t *testing.T) {
	t.Parallel()
	err := wire.ParseOK("r", "error "+strings.Repeat("x", 10000))
	var se *wire.ServerError
	require.ErrorAs(t, err, &se)
	assert.LessOrEqual(t, len(se.Detail), 128)
	err = wire.ParseOK("r", "error "+strings.Repeat("x", 127)+" y")
	require.ErrorAs(t, err, &se)
	assert.Equal(t, strings.Repeat("x", 127), se.Detail, "no blank left at the cut")
	err = wire.ParseOK("r", strings.Repeat("y", 10000))
	require.ErrorAs(t, err, &se)
	assert.LessOrEqual(t, len(se.Status), 128)
}

// protocol-v2 §7: barrier's key and argument are ignored; "_" is sent.
func TestV2BarrierRequest(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "barrier\n_\n_\n", enc(wire.Barrier()))
	require.NoError(t, wire.ParseOK("barrier", "ok"))
}

// protocol-v2 §7: the ref is on the key line, non-empty, at most 64 bytes
// of printable ASCII, and arrives trimmed.
func TestV2StableRefValidation(t *testing.T) {
	t.Parallel()
	for _, ref := range []string{"a", strings.Repeat("r", 64), "my session 1", "~!@#$%^&*()_+{}|:<>?", "0123456789abcdef0123456789abcdef"} {
		r, err := wire.StableRef(ref)
		require.NoError(t, err, "%q", ref)
		assert.Equal(t, "stable-ref\n"+ref+"\n_\n", enc(r))
		assert.NoError(t, wire.ValidateStableRef(ref))
	}
	for _, ref := range []string{
		"", strings.Repeat("r", 65), " a", "a ", " ", "\ta", "a\tb", "a\nb", "a\rb", "\x00", "\x7f", "é", "a\u00a0b",
	} {
		r, err := wire.StableRef(ref)
		require.ErrorIs(t, err, wire.ErrInvalidInput, "%q", ref)
		assert.Equal(t, wire.Request{}, r)
		var ie *wire.InputError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, "stable ref", ie.Field)
	}
}

// protocol-v2 §3: the first 16 hex digits are a big-endian fence.
func TestV2FenceFromToken(t *testing.T) {
	t.Parallel()
	const salt = "9f3a0c44e1d2b7a8"
	for _, tc := range []struct {
		token string
		fence uint64
	}{
		{"0000000000000001" + salt, 1},
		{"0000000000000000" + salt, 0},
		{"0123456789abcdef" + salt, 0x0123456789abcdef},
		{"ffffffffffffffff" + salt, 1<<64 - 1},
		{"188d2f5e7c1a4b00" + salt, 0x188d2f5e7c1a4b00},
	} {
		f, err := wire.FenceFromToken(tc.token)
		require.NoError(t, err, tc.token)
		assert.Equal(t, tc.fence, f, tc.token)
	}
	for _, bad := range []string{
		"", "0000000000000001", "0000000000000001" + salt + "0", "000000000000001" + salt,
		"0000000000000001" + strings.ToUpper(salt), "000000000000000G" + salt, "0x00000000000001" + salt,
		"+000000000000001" + salt, " 000000000000001" + salt,
	} {
		f, err := wire.FenceFromToken(bad)
		require.ErrorIs(t, err, wire.ErrInvalidInput, "%q", bad)
		assert.Zero(t, f)
	}
}

func TestV2FencesOfRisingTokensRise(t *testing.T) {
	t.Parallel()
	prev := uint64(0)
	for _, n := range []uint64{1, 2, 255, 256, 1 << 32, 1<<63 - 1, 1 << 63, 1<<64 - 1} {
		f, err := wire.FenceFromToken(fmt.Sprintf("%016x", n) + "00000000deadbeef")
		require.NoError(t, err)
		require.Equal(t, n, f)
		require.Greater(t, f, prev)
		prev = f
	}
}

// protocol-v2 §6: a 2.x single node sends the 1.10 shape.
const stats2 = `ok {"connections":2,"locks":[{"key":"k","owner_conn_id":1099511627777,"lease_expires_in_s":9.5,"waiters":1}],` +
	`"semaphores":[],"idle_locks":[],"idle_semaphores":[]}`

// protocol-v2 §6: a cluster member adds "cluster"; leader_addr is omitted
// when unknown.
const stats2Cluster = `ok {"connections":1,"locks":[],"semaphores":[{"key":"s","limit":3,"holders":1,"waiters":0}],` +
	`"idle_locks":[],"idle_semaphores":[],` +
	`"cluster":{"node_id":"n2","role":"follower","term":7,"leader_id":"n1","leader_addr":"10.0.0.1:6388",` +
	`"commit_index":120,"last_log_index":121,"snapshot_index":100,"voters":["n1","n2","n3"]}}`

const stats2Election = `ok {"connections":1,"locks":[],"semaphores":[],"idle_locks":[],"idle_semaphores":[],` +
	`"cluster":{"node_id":"n3","role":"candidate","term":8,"leader_id":"","commit_index":120,"last_log_index":121,` +
	`"snapshot_index":100,"voters":["n1","n2","n3"]}}`

func TestV2StatsSingleNodeHasNoCluster(t *testing.T) {
	t.Parallel()
	s, err := wire.ParseStats(stats2)
	require.NoError(t, err)
	assert.Nil(t, s.Cluster)
	assert.Nil(t, s.SignalChannels)
	require.Len(t, s.Locks, 1)
	assert.Equal(t, uint64(1099511627777), s.Locks[0].OwnerConnID)
	// The older shapes still parse, without a cluster either.
	for _, line := range []string{stats110, statsRF, statsRFEmpty, `ok {"cluster":null}`} {
		s, err := wire.ParseStats(line)
		require.NoError(t, err, line)
		assert.Nil(t, s.Cluster, line)
	}
	// Re-encoded stats of a single node say nothing of a cluster (the CLI's
	// --json output is unchanged).
	b, err := json.Marshal(s)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "cluster")
}

func TestV2StatsClusterObjectIsParsed(t *testing.T) {
	t.Parallel()
	s, err := wire.ParseStats(stats2Cluster)
	require.NoError(t, err)
	assert.Equal(t, &wire.ClusterStat{
		NodeID: "n2", Role: wire.RoleFollower, Term: 7, LeaderID: "n1", LeaderAddr: "10.0.0.1:6388",
		CommitIndex: 120, LastLogIndex: 121, SnapshotIndex: 100, Voters: []string{"n1", "n2", "n3"},
	}, s.Cluster)
	assert.Equal(t, []wire.SemStat{{Key: "s", Limit: 3, Holders: 1}}, s.Semaphores)

	s, err = wire.ParseStats(stats2Election)
	require.NoError(t, err)
	require.NotNil(t, s.Cluster)
	assert.Equal(t, wire.RoleCandidate, s.Cluster.Role)
	assert.Empty(t, s.Cluster.LeaderAddr, "omitted: no leader known")
}

func TestV2StatsBadClusterIsAProtocolError(t *testing.T) {
	t.Parallel()
	for _, line := range []string{
		`ok {"cluster":[]}`,
		`ok {"cluster":"leader"}`,
		`ok {"cluster":{"term":-1}}`,
		`ok {"cluster":{"term":"7"}}`,
		`ok {"cluster":{"commit_index":1.5}}`,
		`ok {"cluster":{"voters":"n1"}}`,
	} {
		s, err := wire.ParseStats(line)
		require.ErrorIs(t, err, wire.ErrProtocol, line)
		assert.Nil(t, s)
	}
}

// A 2.x exchange as a Conn sees it: the peer checks the bytes of barrier and
// stable-ref, answers a not-leader hint, the stable-ref word, and finally
// error_draining before it closes.
func TestV2RepliesThroughAConn(t *testing.T) {
	t.Parallel()
	c, p := pair(t)
	ref := must(t)(wire.StableRef("session 1"))
	p.run(t, func() error {
		for _, step := range []struct {
			want  [3]string
			reply string
		}{
			{[3]string{"stable-ref", "session 1", "_"}, "ok\n"},
			{[3]string{"stable-ref", "session 1", "_"}, "error stable_ref_already_set\n"},
			{[3]string{"barrier", "_", "_"}, "error_not_leader 127.0.0.1:7001\n"},
			{[3]string{"l", "k", "0"}, "error_draining\n"},
		} {
			req, err := p.readRequest()
			if err != nil {
				return err
			}
			if req != step.want {
				return fmt.Errorf("request %q, want %q", req, step.want)
			}
			if err := p.write(step.reply); err != nil {
				return err
			}
		}
		return p.nc.Close() // a draining server closes after the reply
	})
	line, err := c.Do(t.Context(), ref)
	require.NoError(t, err)
	require.NoError(t, wire.ParseOK("stable-ref", line))

	line, err = c.Do(t.Context(), ref)
	require.NoError(t, err)
	err = wire.ParseOK("stable-ref", line)
	require.ErrorIs(t, err, wire.ErrServer)
	var se *wire.ServerError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "stable_ref_already_set", se.Detail)

	line, err = c.Do(t.Context(), wire.Barrier())
	require.NoError(t, err)
	var nle *wire.NotLeaderError
	require.ErrorAs(t, wire.ParseOK("barrier", line), &nle)
	assert.Equal(t, "127.0.0.1:7001", nle.Leader)

	line, err = c.Do(t.Context(), lreq("k"))
	require.NoError(t, err)
	_, err = wire.ParseGrant("l", line)
	require.ErrorIs(t, err, wire.ErrDraining)
	waitDone(t, c)
}

// Servers before 2.x do not know barrier or stable-ref: they answer the
// generic error and keep the connection (protocol-v2 §11).
func TestV2RequestsOnASignalsEraServerAreGenericErrors(t *testing.T) {
	t.Parallel()
	srv := dflockdtest.New(t, dflockdtest.Config{})
	c, err := (&wire.Dialer{Timeout: 5 * time.Second}).Dial(t.Context(), srv.Addr())
	require.NoError(t, err)
	defer c.Close()
	for _, req := range []wire.Request{wire.Barrier(), must(t)(wire.StableRef("s1"))} {
		line, err := c.Do(t.Context(), req)
		require.NoError(t, err)
		err = wire.ParseOK(req.Cmd, line)
		require.ErrorIs(t, err, wire.ErrServer, req.Cmd)
		assert.NotErrorIs(t, err, wire.ErrNotLeader)
	}
	line, err := c.Do(t.Context(), lreq("k"))
	require.NoError(t, err, "the connection is kept")
	_, err = wire.ParseGrant("l", line)
	require.NoError(t, err)
}
