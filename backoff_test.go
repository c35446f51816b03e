package dfstream

import (
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// backoffCap is the wait jitterBackoff jitters below, computed without
// overflow: lo·2^(attempt-1), capped at hi.
func backoffCap(lo, hi time.Duration, attempt int) time.Duration {
	if attempt <= 1 {
		return lo
	}
	d := new(big.Int).Lsh(big.NewInt(int64(lo)), uint(min(attempt-1, 128)))
	if d.Cmp(big.NewInt(int64(hi))) > 0 {
		return hi
	}
	return time.Duration(d.Int64())
}

// Issue 9 item 7: with max = math.MaxInt64 the doubling used to overflow
// from attempt ~38 on, and the wait came out negative or zero.
func TestBackoffStaysWithinItsBoundsForExtremeLimitsAndAttempts(t *testing.T) {
	t.Parallel()
	limits := []struct{ lo, hi time.Duration }{
		{100 * time.Millisecond, math.MaxInt64},
		{1, math.MaxInt64},
		{3, math.MaxInt64 - 1},
		{math.MaxInt64/2 + 1, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64},
		{time.Hour, math.MaxInt64 / 3},
		{1, 1},
		{1, 2},
		{100 * time.Millisecond, 5 * time.Second},
	}
	for _, l := range limits {
		for attempt := 1; attempt <= 10_000; attempt++ {
			want := backoffCap(l.lo, l.hi, attempt)
			d := jitterBackoff(l.lo, l.hi, attempt)
			if d < want/2 || d > want || d <= 0 {
				require.Failf(t, "wait out of bounds", "min %d max %d attempt %d: %d, want in [%d, %d]",
					l.lo, l.hi, attempt, d, want/2, want)
			}
		}
		for _, attempt := range []int{math.MaxInt, math.MinInt, -1, 0} {
			d := jitterBackoff(l.lo, l.hi, attempt)
			want := backoffCap(l.lo, l.hi, attempt)
			require.True(t, d >= want/2 && d <= want && d > 0,
				"min %d max %d attempt %d: %d", l.lo, l.hi, attempt, d)
		}
	}
}

// Options reject these limits, but the function must not spin on them
// either: a min below 1ns counts as 1ns, a max below min as min.
func TestBackoffIsPositiveForLimitsOptionsReject(t *testing.T) {
	t.Parallel()
	for _, l := range []struct{ lo, hi time.Duration }{
		{0, 0}, {-1, -1}, {math.MinInt64, math.MinInt64}, {math.MinInt64, math.MaxInt64},
		{0, math.MaxInt64}, {time.Second, 0}, {math.MaxInt64, math.MinInt64},
	} {
		for _, attempt := range []int{math.MinInt, 0, 1, 2, 38, 64, 10_000, math.MaxInt} {
			d := jitterBackoff(l.lo, l.hi, attempt)
			require.Positive(t, d, "min %d max %d attempt %d", l.lo, l.hi, attempt)
			require.LessOrEqual(t, d, max(l.lo, l.hi, 1), "min %d max %d attempt %d", l.lo, l.hi, attempt)
		}
	}
}
