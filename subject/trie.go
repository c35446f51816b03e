package subject

// Trie maps subject patterns to values and finds every value whose pattern
// matches a subject. A pattern may hold any number of values; inserting the
// same pattern twice keeps both values.
//
// The zero value is an empty trie ready to use.
//
// Concurrency: Trie has no internal locking. Any number of goroutines may call
// [Trie.Lookup] and [Trie.Len] concurrently, but [Trie.Insert] and
// [Trie.Remove] must not run concurrently with each other or with any other
// method; callers that mutate a live trie must synchronise externally (for
// example with a sync.RWMutex, or by building a new trie and publishing it
// through an atomic pointer).
type Trie[T any] struct {
	root node[T]
	n    int
}

// node is one token position in the trie. Literal tokens live in children;
// the wildcard tokens "*" and ">" have dedicated edges, so a literal child can
// never be named "*" or ">". The path from the root therefore identifies the
// pattern uniquely, and every value stored at a node shares its pattern.
type node[T any] struct {
	children map[string]*node[T]
	star     *node[T]
	gt       *node[T]
	pattern  string // full pattern of the values below; set when values is non-empty
	values   []T
}

// empty reports whether n holds no values and has no descendants, so that it
// can be pruned.
func (n *node[T]) empty() bool {
	return len(n.values) == 0 && len(n.children) == 0 && n.star == nil && n.gt == nil
}

// Insert adds v under pattern. The pattern is expected to be valid (the wire
// package validates it); see the package documentation for what an invalid
// one does. Insert does not deduplicate: the same value inserted twice under
// one pattern is visited twice by Lookup.
func (t *Trie[T]) Insert(pattern string, v T) {
	n := &t.root
	for p := 0; p <= len(pattern); {
		e := tokenEnd(pattern, p)
		tok := pattern[p:e]
		switch tok {
		case "*":
			if n.star == nil {
				n.star = new(node[T])
			}
			n = n.star
		case ">":
			if n.gt == nil {
				n.gt = new(node[T])
			}
			n = n.gt
		default:
			c := n.children[tok]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*node[T])
				}
				c = new(node[T])
				n.children[tok] = c
			}
			n = c
		}
		p = e + 1
	}
	n.pattern = pattern
	n.values = append(n.values, v)
	t.n++
}

// Remove removes the values stored under exactly pattern (compared as a
// pattern string, not matched as a subject) for which match returns true, and
// returns how many it removed. A nil match removes every value under pattern.
// Nodes left with no values and no descendants are pruned, so a trie whose
// values have all been removed holds no memory beyond its zero value.
func (t *Trie[T]) Remove(pattern string, match func(T) bool) int {
	removed := t.root.remove(pattern, 0, match)
	t.n -= removed
	return removed
}

// remove removes matching values under the pattern suffix that starts at
// token position p, pruning descendants that become empty.
func (n *node[T]) remove(pattern string, p int, match func(T) bool) int {
	if p > len(pattern) {
		kept := n.values[:0]
		for _, v := range n.values {
			if match != nil && !match(v) {
				kept = append(kept, v)
			}
		}
		removed := len(n.values) - len(kept)
		clear(n.values[len(kept):]) // drop references for the garbage collector
		if len(kept) == 0 {
			n.values, n.pattern = nil, ""
		} else {
			n.values = kept
		}
		return removed
	}
	e := tokenEnd(pattern, p)
	tok := pattern[p:e]
	var c *node[T]
	switch tok {
	case "*":
		c = n.star
	case ">":
		c = n.gt
	default:
		c = n.children[tok]
	}
	if c == nil {
		return 0
	}
	removed := c.remove(pattern, e+1, match)
	if c.empty() {
		switch tok {
		case "*":
			n.star = nil
		case ">":
			n.gt = nil
		default:
			delete(n.children, tok)
			if len(n.children) == 0 {
				n.children = nil
			}
		}
	}
	return removed
}

// Lookup calls visit once for each value whose pattern matches subject,
// passing the value's pattern. The order of the calls is unspecified. Lookup
// does not allocate; visit must not call Insert or Remove on t.
func (t *Trie[T]) Lookup(subject string, visit func(pattern string, v T)) {
	t.root.lookup(subject, 0, visit)
}

// lookup visits the matches below n for the subject suffix starting at token
// position s (s == len(subject)+1 when every token has been consumed).
func (n *node[T]) lookup(subject string, s int, visit func(string, T)) {
	if s > len(subject) {
		for _, v := range n.values {
			visit(n.pattern, v)
		}
		return
	}
	// At least one token remains, so a ">" edge here matches.
	if g := n.gt; g != nil {
		for _, v := range g.values {
			visit(g.pattern, v)
		}
	}
	e := tokenEnd(subject, s)
	if n.children != nil {
		if c := n.children[subject[s:e]]; c != nil {
			c.lookup(subject, e+1, visit)
		}
	}
	if n.star != nil {
		n.star.lookup(subject, e+1, visit)
	}
}

// Len returns the number of values in the trie.
func (t *Trie[T]) Len() int {
	return t.n
}
