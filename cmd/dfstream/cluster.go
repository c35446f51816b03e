package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/dfstream/dfstream"
)

// clusterFlag is --cluster (DFSTREAM_CLUSTER): the members of a dflockd
// 2.x Raft cluster, which lock, sem and stats talk to instead of
// --servers (see dfstream.WithCluster).
type clusterFlag struct {
	members string
	fs      *flag.FlagSet
}

// addClusterFlag registers --cluster on c, for the common flags f.
func (c *command) addClusterFlag(f *commonFlags) {
	f.cluster = &clusterFlag{fs: c.fs}
	c.fs.StringVar(&f.cluster.members, "cluster", "",
		"comma-separated `host:port` list of the members of a dflockd 2.x cluster (instead of --servers): requests go to the leader, and a failover moves a held lock rather than losing it")
	c.bindEnv("cluster", "DFSTREAM_CLUSTER")
}

// where is the option that says which servers to talk to: the cluster's
// members when --cluster is given, else the --servers list addrs.
func (f *commonFlags) where(addrs []string) (dfstream.Option, error) {
	if f.cluster == nil || f.cluster.members == "" {
		return dfstream.WithServers(addrs...), nil
	}
	serversSet := false
	f.cluster.fs.Visit(func(fl *flag.Flag) { serversSet = serversSet || fl.Name == "servers" })
	if serversSet {
		return nil, usagef("--cluster and --servers exclude each other (a cluster is one lock table)")
	}
	var members []string
	for _, m := range strings.Split(f.cluster.members, ",") {
		if m = strings.TrimSpace(m); m != "" {
			members = append(members, m)
		}
	}
	if len(members) == 0 {
		return nil, usagef("--cluster is empty")
	}
	return dfstream.WithCluster(members...), nil
}

// printClusterStatus writes a cluster member's Raft status, if it has one.
func printClusterStatus(w io.Writer, st *dfstream.Stats) {
	cs := st.Cluster
	if cs == nil {
		return
	}
	leader := cs.LeaderAddr
	switch {
	case leader == "" && cs.LeaderID == "":
		leader = "(none known)"
	case leader == "":
		leader = cs.LeaderID
	case cs.LeaderID != "":
		leader += " (" + cs.LeaderID + ")"
	}
	fmt.Fprintf(w, "CLUSTER NODE\t%s\n", cs.NodeID)
	fmt.Fprintf(w, "ROLE\t%s\n", cs.Role)
	fmt.Fprintf(w, "TERM\t%d\n", cs.Term)
	fmt.Fprintf(w, "LEADER\t%s\n", leader)
	fmt.Fprintf(w, "COMMIT INDEX\t%d\n", cs.CommitIndex)
}
