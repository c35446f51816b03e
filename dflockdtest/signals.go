package dflockdtest

import (
	"sort"
	"sync"
	"sync/atomic"
)

// pushQueueLen is the per-connection push queue length of the real server.
const pushQueueLen = 64

// pushQueue is a connection's bounded queue of sig lines. Lines are shared,
// immutable byte slices (one allocation per signal, whatever the fan-out).
type pushQueue struct {
	mu    sync.Mutex
	lines [pushQueueLen][]byte
	head  int
	n     int
	wake  chan struct{} // cap 1: lines were queued
}

func newPushQueue() *pushQueue { return &pushQueue{wake: make(chan struct{}, 1)} }

// push queues line; false when the queue is full.
func (q *pushQueue) push(line []byte) bool {
	q.mu.Lock()
	if q.n == pushQueueLen {
		q.mu.Unlock()
		return false
	}
	q.lines[(q.head+q.n)%pushQueueLen] = line
	q.n++
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// drain empties the queue, appending the lines to dst unless discard.
func (q *pushQueue) drain(dst []byte, discard bool) []byte {
	q.mu.Lock()
	for q.n > 0 {
		if !discard {
			dst = append(dst, q.lines[q.head]...)
		}
		q.lines[q.head] = nil
		q.head = (q.head + 1) % pushQueueLen
		q.n--
	}
	q.mu.Unlock()
	return dst
}

func (q *pushQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// subKey is one listen registration: (pattern, group); group "" = plain.
type subKey struct{ pattern, group string }

func (k subKey) String() string {
	if k.group == "" {
		return k.pattern
	}
	return k.pattern + " " + k.group
}

// subscriber is the signal hub's view of one connection.
type subscriber struct {
	id     uint64
	subs   []subKey // join order; guarded by hub.mu
	subSet map[subKey]struct{}
	epoch  uint64     // guarded by hub.mu: dedupe of plain delivery
	pq     *pushQueue // set by the connection's own goroutine on first listen
	muted  atomic.Bool
	dead   atomic.Bool // a push write failed: discard from now on
	cancel func()      // slow-listener policy: cancel the connection's context
}

// offer hands line to the connection. It reports whether signal counts it:
// muted and dead connections swallow it (counted); a full queue refuses it.
func (sb *subscriber) offer(line []byte) bool {
	if sb.muted.Load() || sb.dead.Load() {
		return true
	}
	return sb.pq.push(line)
}

func (sb *subscriber) cancelConn() {
	if sb.cancel != nil {
		sb.cancel()
	}
}

type group struct {
	name    string
	members []*subscriber // join order
	next    uint64        // round-robin counter, persists
}

// patEntry is everything listening on one pattern.
type patEntry struct {
	pattern string
	node    *sigNode
	gt      bool // attached as node.gtEntry (pattern ends in ">")
	plain   map[*subscriber]struct{}
	groups  map[string]*group
	gorder  []*group // creation order
}

func (e *patEntry) empty() bool { return len(e.plain) == 0 && len(e.groups) == 0 }

// sigNode is a node of the subscription trie over '.'-separated tokens.
type sigNode struct {
	parent  *sigNode
	tok     string // edge label from parent ("*" for the star edge)
	lit     map[string]*sigNode
	star    *sigNode
	entry   *patEntry // pattern ending exactly here
	gtEntry *patEntry // pattern ending in ">" right after this node
}

func (n *sigNode) empty() bool {
	return len(n.lit) == 0 && n.star == nil && n.entry == nil && n.gtEntry == nil
}

// hub holds every subscription. Matching walks the trie, so a signal costs
// O(matching nodes), not O(subscriptions).
type hub struct {
	mu      sync.Mutex
	root    sigNode
	entries map[string]*patEntry
	epoch   uint64

	// scratch for the signal being delivered (guarded by mu)
	line  []byte
	count int
}

func newHub() *hub { return &hub{entries: make(map[string]*patEntry)} }

// splitDots splits s on '.', reusing dst.
func splitDots(s []byte, dst [][]byte) [][]byte {
	dst = dst[:0]
	start := 0
	for i, c := range s {
		if c == '.' {
			dst = append(dst, s[start:i])
			start = i + 1
		}
	}
	return append(dst, s[start:])
}

func (h *hub) insert(e *patEntry) {
	n := &h.root
	var toks [16][]byte
	parts := splitDots([]byte(e.pattern), toks[:0])
	for i, tok := range parts {
		st := string(tok)
		if st == ">" && i == len(parts)-1 {
			n.gtEntry = e
			e.node, e.gt = n, true
			return
		}
		var child *sigNode
		if st == "*" {
			if n.star == nil {
				n.star = &sigNode{parent: n, tok: "*"}
			}
			child = n.star
		} else {
			if n.lit == nil {
				n.lit = make(map[string]*sigNode)
			}
			child = n.lit[st]
			if child == nil {
				child = &sigNode{parent: n, tok: st}
				n.lit[st] = child
			}
		}
		n = child
	}
	n.entry = e
	e.node = n
}

func (h *hub) remove(e *patEntry) {
	delete(h.entries, e.pattern)
	n := e.node
	if e.gt {
		n.gtEntry = nil
	} else {
		n.entry = nil
	}
	for n != &h.root && n.empty() {
		p := n.parent
		if n.tok == "*" {
			p.star = nil
		} else {
			delete(p.lit, n.tok)
		}
		n = p
	}
}

// listen registers (pattern, group) for sb. first is true when sb had no
// push queue yet (the caller creates it and starts the writer).
func (h *hub) listen(sb *subscriber, pattern, grp []byte, maxSubs int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if maxSubs > 0 && len(sb.subs) >= maxSubs {
		return false
	}
	k := subKey{pattern: string(pattern), group: string(grp)}
	if _, dup := sb.subSet[k]; dup {
		return true
	}
	e := h.entries[k.pattern]
	if e == nil {
		e = &patEntry{pattern: k.pattern}
		h.entries[k.pattern] = e
		h.insert(e)
	}
	if k.group == "" {
		if e.plain == nil {
			e.plain = make(map[*subscriber]struct{})
		}
		e.plain[sb] = struct{}{}
	} else {
		if e.groups == nil {
			e.groups = make(map[string]*group)
		}
		g := e.groups[k.group]
		if g == nil {
			g = &group{name: k.group}
			e.groups[k.group] = g
			e.gorder = append(e.gorder, g)
		}
		g.members = append(g.members, sb)
	}
	if sb.subSet == nil {
		sb.subSet = make(map[subKey]struct{})
	}
	sb.subSet[k] = struct{}{}
	sb.subs = append(sb.subs, k)
	return true
}

// unlisten removes (pattern, group) for sb, if present.
func (h *hub) unlisten(sb *subscriber, pattern, grp []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := subKey{pattern: string(pattern), group: string(grp)}
	if _, ok := sb.subSet[k]; !ok {
		return
	}
	h.removeLocked(sb, k)
	for i, x := range sb.subs {
		if x == k {
			sb.subs = append(sb.subs[:i], sb.subs[i+1:]...)
			break
		}
	}
}

func (h *hub) removeLocked(sb *subscriber, k subKey) {
	delete(sb.subSet, k)
	e := h.entries[k.pattern]
	if e == nil {
		return
	}
	if k.group == "" {
		delete(e.plain, sb)
	} else if g := e.groups[k.group]; g != nil {
		for i, m := range g.members {
			if m == sb {
				g.members = append(g.members[:i], g.members[i+1:]...)
				break
			}
		}
		if len(g.members) == 0 {
			delete(e.groups, k.group)
			for i, x := range e.gorder {
				if x == g {
					e.gorder = append(e.gorder[:i], e.gorder[i+1:]...)
					break
				}
			}
		}
	}
	if e.empty() {
		h.remove(e)
	}
}

// removeAll drops every subscription of sb (disconnect).
func (h *hub) removeAll(sb *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, k := range sb.subs {
		h.removeLocked(sb, k)
	}
	sb.subs = nil
}

// subscriptions returns sb's registrations in join order.
func (h *hub) subscriptions(sb *subscriber) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, len(sb.subs))
	for i, k := range sb.subs {
		out[i] = k.String()
	}
	return out
}

// signal delivers "sig <channel> <payload>\n" and returns the number of
// copies queued (the signal reply's count).
func (h *hub) signal(channel, payload []byte) int {
	line := make([]byte, 0, 4+len(channel)+1+len(payload)+1)
	line = append(line, "sig "...)
	line = append(line, channel...)
	line = append(line, ' ')
	line = append(line, payload...)
	line = append(line, '\n')

	var buf [16][]byte
	toks := splitDots(channel, buf[:0])

	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return 0
	}
	h.epoch++
	h.line, h.count = line, 0
	h.match(&h.root, toks, 0)
	h.line = nil
	return h.count
}

func (h *hub) match(n *sigNode, toks [][]byte, i int) {
	if i == len(toks) {
		if n.entry != nil {
			h.deliver(n.entry)
		}
		return
	}
	if n.gtEntry != nil {
		h.deliver(n.gtEntry) // ">" takes the one or more remaining tokens
	}
	if c := n.lit[string(toks[i])]; c != nil {
		h.match(c, toks, i+1)
	}
	if n.star != nil {
		h.match(n.star, toks, i+1)
	}
}

func (h *hub) deliver(e *patEntry) {
	for sb := range e.plain {
		if sb.epoch == h.epoch {
			continue // once per connection for plain subscriptions
		}
		sb.epoch = h.epoch
		if sb.offer(h.line) {
			h.count++
		} else {
			sb.cancelConn()
		}
	}
	for _, g := range e.gorder {
		n := len(g.members)
		start := int(g.next % uint64(n))
		g.next++
		delivered := false
		for j := 0; j < n; j++ {
			if g.members[(start+j)%n].offer(h.line) {
				h.count++
				delivered = true
				break
			}
		}
		if !delivered {
			g.members[start].cancelConn()
		}
	}
}

type signalChannelInfo struct {
	Pattern   string `json:"pattern"`
	Group     string `json:"group,omitempty"`
	Listeners int    `json:"listeners"`
}

// stats returns the signal_channels array: nil (JSON null) when empty.
func (h *hub) stats() []signalChannelInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return nil
	}
	pats := make([]string, 0, len(h.entries))
	for p := range h.entries {
		pats = append(pats, p)
	}
	sort.Strings(pats)
	var out []signalChannelInfo
	for _, p := range pats {
		e := h.entries[p]
		if len(e.plain) > 0 {
			out = append(out, signalChannelInfo{Pattern: p, Listeners: len(e.plain)})
		}
		for _, g := range e.gorder {
			out = append(out, signalChannelInfo{Pattern: p, Group: g.name, Listeners: len(g.members)})
		}
	}
	return out
}
