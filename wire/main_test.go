package wire_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind: a Conn
// must own exactly one goroutine and Close must wait for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
