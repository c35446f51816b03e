// Command sem-pool bounds a pool of workers with a semaphore: ten jobs, at
// most three running at once across every process that uses the same key.
package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dfstream/dfstream"
	"github.com/dfstream/dfstream/examples/internal/embedded"
)

func main() {
	addrs, stop := embedded.Servers()
	defer stop()
	c, err := dfstream.New(dfstream.WithServers(addrs...))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()

	const limit = 3
	var running atomic.Int32
	var wg sync.WaitGroup
	for job := 1; job <= 10; job++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slot, err := c.AcquireSemaphore(context.Background(), "example/encoders", limit,
				dfstream.WithAcquireTimeout(time.Minute))
			if err != nil {
				fmt.Println("job", job, "not started:", err)
				return
			}
			defer slot.Close()
			n := running.Add(1)
			fmt.Printf("job %2d running (%d of at most %d)\n", job, n, limit)
			time.Sleep(200 * time.Millisecond)
			running.Add(-1)
			if err := slot.Release(context.Background()); err != nil {
				fmt.Println("job", job, "release:", err)
			}
		}()
	}
	wg.Wait()
	fmt.Println("all jobs done")
}
