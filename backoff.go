package dfstream

import (
	"math/rand/v2"
	"time"
)

// jitterBackoff returns the wait before retry number attempt (from 1):
// exponential from min, capped at max, with "equal jitter" (uniform in
// [d/2, d]) so that many clients that lost the same server do not all come
// back at the same instant.
func jitterBackoff(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1)
}
