package dfstream

import (
	"math/rand/v2"
	"time"
)

// jitterBackoff returns the wait before retry number attempt (from 1):
// exponential from lo, capped at hi, with "equal jitter" (uniform in
// [d/2, d]) so that many clients that lost the same server do not all come
// back at the same instant.
//
// It holds for every input, not only validated options: the doubling stops
// before it could overflow (hi may be math.MaxInt64), a lo below 1ns is
// taken as 1ns and a hi below lo as lo, so the wait is never negative or
// zero however many attempts have failed.
func jitterBackoff(lo, hi time.Duration, attempt int) time.Duration {
	lo = max(lo, 1)
	hi = max(hi, lo)
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		if d > hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	half := d / 2
	if half == 0 {
		return d
	}
	return half + rand.N(half+1)
}
