package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr starts the command in a process group of its own unless it
// shares dfstream's, and with SIGKILL as its parent-death signal: if
// dfstream is killed (SIGKILL, a crash), nothing renews the lease any more,
// so the command must not outlive it.
func sysProcAttr(shared bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: !shared, Pdeathsig: syscall.SIGKILL}
}

// scan adds the current descendants of the command and of the processes
// seen before to seen (Linux: /proc).
func (j *job) scan() {
	if j.seen == nil {
		j.seen = map[int]uint64{}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	type proc struct {
		ppid    int
		started uint64
	}
	procs := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, started, ok := procStat(pid); ok {
			procs[pid] = proc{ppid, started}
		}
	}
	// Roots: the command, and the still-living processes seen before
	// (reparented away from the job when their parent exited).
	in := map[int]bool{}
	if !j.reaped {
		in[j.pid] = true
	}
	for pid, started := range j.seen {
		if p, ok := procs[pid]; ok && p.started == started {
			in[pid] = true
		}
	}
	for grew := true; grew; {
		grew = false
		for pid, p := range procs {
			if !in[pid] && in[p.ppid] {
				in[pid], grew = true, true
				j.seen[pid] = p.started
			}
		}
	}
}

// procStat reads the parent pid and start time of pid from /proc.
func procStat(pid int) (ppid int, started uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// "pid (comm) state ppid ... starttime(22nd) ...": comm may hold
	// spaces and parentheses, so split after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	started, err2 := strconv.ParseUint(f[19], 10, 64)
	return ppid, started, err1 == nil && err2 == nil
}
