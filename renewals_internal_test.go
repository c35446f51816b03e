package dfstream

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ended is a stream whose renewal, when run, finds it ended.
func ended() *holdStream {
	s := &holdStream{renewIndex: -1, turn: make(chan struct{}, 1), done: make(chan struct{})}
	close(s.done)
	return s
}

// The schedule is driven by hand with fireAt; every time is hours ahead,
// so the real timer does not fire during the test.
func TestRenewalsRunWhatIsDueAndSetTheTimerForTheRest(t *testing.T) {
	var r renewals
	defer r.close()
	now := time.Now()
	late, due, gone := ended(), ended(), ended()

	r.add(late, now.Add(3*time.Hour))
	assert.Equal(t, now.Add(3*time.Hour), r.armed)
	r.add(due, now.Add(time.Hour))
	assert.Equal(t, now.Add(time.Hour), r.armed, "an earlier renewal moves the timer")
	r.add(gone, now.Add(2*time.Hour))
	r.remove(gone)
	assert.Equal(t, -1, gone.renewIndex)
	r.add(late, now.Add(4*time.Hour)) // rescheduled in place
	require.Len(t, r.due, 2)

	r.fireAt(now.Add(2 * time.Hour))
	assert.Equal(t, -1, due.renewIndex, "the due renewal was started")
	require.Len(t, r.due, 1)
	assert.Same(t, late, r.due[0])
	assert.Equal(t, now.Add(4*time.Hour), r.armed, "the timer is set for the next one")
}

func TestRenewalsAfterCloseScheduleNothing(t *testing.T) {
	var r renewals
	r.close()
	s := ended()
	r.add(s, time.Now().Add(time.Hour))
	assert.Empty(t, r.due)
	assert.Equal(t, -1, s.renewIndex)
}
