package examples_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// signal-router logs the panicking handler, as the error Recover made of it.
func TestSignalRouterLogsThePanickingHandler(t *testing.T) {
	t.Parallel()
	out := runExample(t, "signal-router")
	var logged bool
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "ERR") && strings.Contains(line, "handler panicked") {
			logged = true
		}
	}
	assert.True(t, logged, "no log line for the panic:\n%s", out)
}

// signal-router's log says how long each call took, with a unit.
func TestSignalRouterLogsHowLongACallTookWithItsUnit(t *testing.T) {
	t.Parallel()
	out := runExample(t, "signal-router")
	took := regexp.MustCompile(`took="?([^\s"]+)`).FindAllStringSubmatch(out, -1)
	require.NotEmpty(t, took, out)
	for _, m := range took {
		_, err := time.ParseDuration(m[1])
		assert.NoError(t, err, "took=%s", m[1])
	}
}
