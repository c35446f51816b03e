package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dfstream/dfstream/dflockdtest"
)

func TestClusterLockAndSemRunOnTheLeaderGivenAnyMemberOrder(t *testing.T) {
	t.Parallel()
	cl := dflockdtest.NewCluster(t, dflockdtest.ClusterConfig{Nodes: 3})
	a := cl.Addrs()
	members := strings.Join([]string{a[2], a[1], a[0]}, ",")
	stdout, stderr, code := dfs(t, nil, "lock", "k", "--cluster", members, "--", "sh", "-c", `echo "${#DFSTREAM_TOKEN} $DFSTREAM_FENCE"`)
	require.Equal(t, 0, code, stderr)
	require.Regexp(t, `^32 [1-9][0-9]*\n$`, stdout, "a 2.x token, and its fence")
	_, stderr, code = dfs(t, []string{"DFSTREAM_CLUSTER=" + members}, "sem", "s", "--limit", "2", "--", "true")
	require.Equal(t, 0, code, stderr)
}

func TestClusterLockKeepsRunningTheCommandAcrossAFailover(t *testing.T) {
	t.Parallel()
	cl := dflockdtest.NewCluster(t, dflockdtest.ClusterConfig{Nodes: 3})
	p := start(t, nil, "", "lock", "k", "--cluster", strings.Join(cl.Addrs(), ","), "--lease", "4s", "--",
		"sh", "-c", `echo started; sleep 1; echo done`)
	p.waitOutput(t, p.stdout, "started")
	require.NoError(t, cl.Failover(1))
	require.Equal(t, 0, p.wait(t, 10*time.Second), "stopped: %s", p.stderr)
	require.Equal(t, "started\ndone\n", p.stdout.String())
	require.NotContains(t, p.stderr.String(), "lost")
}

func TestClusterStatsShowsEachMembersRoleTermAndLeader(t *testing.T) {
	t.Parallel()
	cl := dflockdtest.NewCluster(t, dflockdtest.ClusterConfig{Nodes: 3})
	stdout, stderr, code := dfs(t, nil, "stats", "--cluster", strings.Join(cl.Addrs(), ","))
	require.Equal(t, 0, code, stderr)
	require.Len(t, regexp.MustCompile(`(?m)^ROLE\s+follower$`).FindAllString(stdout, -1), 2, stdout)
	require.Len(t, regexp.MustCompile(`(?m)^ROLE\s+leader$`).FindAllString(stdout, -1), 1, stdout)
	require.Len(t, regexp.MustCompile(`(?m)^LEADER\s+`+regexp.QuoteMeta(cl.Addrs()[0])+` \(node0\)$`).FindAllString(stdout, -1), 3, stdout)
	require.Regexp(t, `(?m)^TERM\s+1$`, stdout)
}

func TestClusterFlagExcludesServers(t *testing.T) {
	t.Parallel()
	_, stderr, code := dfs(t, nil, "stats", "--cluster", "127.0.0.1:1", "--servers", "127.0.0.1:2")
	require.Equal(t, exitUsage, code)
	requireOneLineError(t, stderr)
}
