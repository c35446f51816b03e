package examples_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dfstream/dfstream/dflockdtest"
)

// bin is the directory of the example binaries, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dfstream-examples")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the examples:", err)
	} else {
		code = m.Run()
		if err := goleak.Find(); code == 0 && err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// examples lists the example commands: the directories with a main.go.
func examples(t *testing.T) []string {
	t.Helper()
	mains, err := filepath.Glob("*/main.go")
	require.NoError(t, err)
	var names []string
	for _, m := range mains {
		names = append(names, filepath.Dir(m))
	}
	require.NotEmpty(t, names)
	return names
}

// runExample runs the example name with args to its end and returns its
// output (stdout and stderr).
func runExample(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, name), args...).CombinedOutput()
	require.NoError(t, err, "%s %v:\n%s", name, args, out)
	return string(out)
}

// The README promises that every example takes -servers.
func TestEveryExampleTakesServers(t *testing.T) {
	t.Parallel()
	for _, name := range examples(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := dflockdtest.New(t, dflockdtest.Config{})
			out := runExample(t, name, "-servers", srv.Addr())
			require.NotContains(t, out, "embedded dflockd-compatible server", "it ignored -servers")
			require.NotEmpty(t, strings.TrimSpace(out))
		})
	}
}

// lost-cancel's work stops on the loss its cut link causes.
func TestLostCancelStopsTheWorkWhenTheLockIsLost(t *testing.T) {
	t.Parallel()
	out := runExample(t, "lost-cancel")
	require.Contains(t, out, "work stopped because the lock was lost")
	require.NotContains(t, out, "work finished")
}

// role-worker shows a stream with re-acquire winning the role back after
// it lost it.
func TestRoleWorkerWinsTheRoleBackAfterALoss(t *testing.T) {
	t.Parallel()
	out := runExample(t, "role-worker")
	var who string
	at := -1
	for _, step := range []string{"(its network link is cut)", "lost the scheduler role", "queued for the scheduler role again", "is the scheduler again"} {
		i := strings.Index(out, step)
		require.Greater(t, i, at, "%q missing or out of order:\n%s", step, out)
		line := out[strings.LastIndex(out[:i], "\n")+1 : i]
		name := strings.Fields(line)[0]
		if who == "" {
			who = name
		}
		require.Equal(t, who, name, "another worker:\n%s", out)
		at = i
	}
}
