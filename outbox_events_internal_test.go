package dfstream

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// eventRole says where an event goes in a lock or semaphore stream's
// outbox, and so how much of the reserve one acquire round can use.
type eventRole struct {
	hold     bool // a lock or semaphore stream emits it
	restates bool // only restates a held stream's state: soft part, coalesced
	reserve  int  // the most of it one acquire round leaves in the reserve
	terminal bool // may end the stream (the terminal slot is counted once)
}

// eventRoles classifies every Event the package declares. Adding an event
// type fails TestEveryEventIsCountedInTheRoundReserve until it is added
// here, which is where roundEvents gets re-checked.
var eventRoles = map[string]struct {
	ev   Event
	role eventRole
}{
	"Queued":       {Queued{}, eventRole{hold: true, reserve: 1}},
	"Acquired":     {Acquired{}, eventRole{hold: true, reserve: 1}},
	"Renewed":      {Renewed{}, eventRole{hold: true, restates: true, reserve: 1}},
	"Moved":        {Moved{}, eventRole{hold: true, restates: true}}, // folded with Renewed
	"Lost":         {Lost{}, eventRole{hold: true, reserve: 1, terminal: true}},
	"Released":     {Released{}, eventRole{hold: true, terminal: true}},
	"Failed":       {Failed{}, eventRole{hold: true, terminal: true}},
	"Signal":       {Signal{}, eventRole{}},
	"Disconnected": {Disconnected{}, eventRole{}},
	"Reconnected":  {Reconnected{}, eventRole{}},
	"Overflow":     {Overflow{}, eventRole{}},
	"Closed":       {Closed{}, eventRole{terminal: true}},
}

// declaredEvents returns the types with a When method in the package's
// non-test files: the Event implementations.
func declaredEvents(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	fset := token.NewFileSet()
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "When" {
				continue
			}
			if id, ok := fn.Recv.List[0].Type.(*ast.Ident); ok {
				names = append(names, id.Name)
			}
		}
	}
	return names
}

func TestEveryEventIsCountedInTheRoundReserve(t *testing.T) {
	declared := declaredEvents(t)
	require.NotEmpty(t, declared)
	for _, name := range declared {
		assert.Contains(t, eventRoles, name, "classify the new event %s in eventRoles and re-check roundEvents", name)
	}
	assert.Len(t, eventRoles, len(declared), "eventRoles lists an event the package no longer has")

	sum, terminal := 0, false
	for name, e := range eventRoles {
		assert.Equal(t, e.role.restates, restates(e.ev), "%s: restates() disagrees with its role", name)
		if name != "Lost" { // only a stream's final Lost is terminal
			assert.Equal(t, e.role.terminal, e.ev.Terminal(), "%s: Terminal()", name)
		}
		if !e.role.hold {
			continue
		}
		sum += e.role.reserve
		terminal = terminal || e.role.terminal
	}
	if terminal {
		sum++ // the terminal event: one per stream, whichever it is
	}
	assert.Equal(t, roundEvents, sum, "roundEvents must count what one round can leave in the reserve")
}
