package dfstream_test

import (
	"context"
	"fmt"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/dflockdtest"
)

// A lock held on a dflockd 2.x cluster survives a leader failover: the
// stream re-attaches on the new leader with the same token and reports
// Moved instead of Lost.
func ExampleWithCluster() {
	cl, _ := dflockdtest.StartCluster(dflockdtest.ClusterConfig{Nodes: 3})
	defer cl.Close()
	c, _ := dfstream.New(dfstream.WithCluster(cl.Addrs()...))
	defer c.Close()
	ctx := context.Background()

	lock, err := c.Lock(ctx, "jobs/leader", dfstream.WithLease(5*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	acquired := (<-lock.Events()).(dfstream.Acquired)
	_ = cl.Failover(1) // node 0 steps down, node 1 leads
	for ev := range lock.Events() {
		if m, ok := ev.(dfstream.Moved); ok {
			fmt.Println("moved to node 1:", m.To == cl.Addrs()[1])
			fmt.Println("same token:", m.Token == acquired.Token)
			break
		}
	}
	fmt.Println("release:", lock.Release(ctx))
	// Output:
	// moved to node 1: true
	// same token: true
	// release: <nil>
}
