package cache

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// InvalidateTag removes every entry carrying tag; see InvalidateTagsAny.
func (s *Store) InvalidateTag(tag string) int { return s.InvalidateTagsAny([]string{tag}) }

// InvalidateTagsAny removes every entry carrying any of tags and returns how many live
// entries it removed. Every such entry written before the call becomes invisible at one
// instant (one stamp for all tags); the call counts them and returns, and their memory is
// reclaimed in the background (WaitReclaim waits for it). Entries written concurrently
// may or may not survive, as if ordered before or after. The call's cost does not depend
// on the reclaim: it is a pass over the keys the tags held, without key-shard locks
// (docs/store.md, "Invalidation without races").
func (s *Store) InvalidateTagsAny(tags []string) int {
	tags, _ = s.normalizeTagsUnbounded(tags)
	if len(tags) == 0 {
		return 0
	}
	inv := s.beginInvalidation(tags)
	n := inv.count()
	s.invalidations.Add(uint64(n))
	s.reclaimLater(inv)
	return n
}

// invalidation is an InvalidateTagsAny between its steps: stamped, with each tag's key
// set taken, and not yet counted or reclaimed.
type invalidation struct {
	s     *Store
	stamp uint64
	snaps []tagSnapshot // one per tag named that the index held, in tag order
}

// tagSnapshot is one tag of an invalidation: its state, the stamp of its invalidation
// before this one, and the key set taken from it.
type tagSnapshot struct {
	ts     *tagState
	prevAt uint64     // ts.invalidatedAt before this invalidation
	keys   entryTable // read-only once taken; empty if the tag had no keys of its own
}

// beginInvalidation takes the invalidation's stamp and each tag's key set: from here on
// every entry carrying one of tags and stamped before it is dead. The caller must count
// (count) and then reclaim (reclaim, reclaimLater or finish).
func (s *Store) beginInvalidation(tags []string) *invalidation {
	// Raise the counter before stamping, so a reader that sees it at zero knows no
	// entry is dead by a tag (stateOf).
	s.reclaiming.Add(1)
	stamp, snaps := s.tags.invalidate(tags, s.clock.Next)
	return &invalidation{s: s, stamp: stamp, snaps: snaps}
}

// finish counts and reclaims the invalidation before returning, and returns the count:
// the whole invalidation on the caller's goroutine (tests drive interleavings with it).
func (inv *invalidation) finish() int {
	n := inv.count()
	inv.s.invalidations.Add(uint64(n))
	inv.reclaim()
	return n
}

// count returns how many live entries the invalidation killed: entries of the key sets
// it took that were installed with a stamp below its own, had not expired, and had not
// been killed already by an earlier invalidation, each counted once even if it carries
// several of the tags. It takes no key-shard lock except to wait for a write caught
// between indexing an entry and installing it (settle). Entries are immutable once
// installed, and a key set holds each key's latest entry carrying the tag, so the pass
// sees what the invalidation killed; docs/store.md says what it may count differently
// when writes race it on the same key.
func (inv *invalidation) count() int {
	flushedAt := inv.s.flushedAt.Load()
	now := inv.s.nowMs()
	n := 0
	for i := range inv.snaps {
		n += countEntries(inv.snaps[i].keys.slots, func(e *entry, stamp uint64) bool {
			return inv.killed(e, stamp, i, now, flushedAt)
		})
	}
	return n
}

// countEntries returns for how many of the entries in slots (nil slots skipped) pred is
// true; pred gets each entry with its stamp. It touches the entries a batch at a time
// before judging any: in a large set each entry is a cache miss, and independent loads
// overlap (twice as fast over 1M entries as judging each in turn).
func countEntries(slots []*entry, pred func(e *entry, stamp uint64) bool) int {
	const batchLen = 32
	var batch [batchLen]*entry
	var stamps [batchLen]uint64
	var touched uintptr
	n := 0
	for len(slots) > 0 {
		k := 0
		for ; len(slots) > 0 && k < batchLen; slots = slots[1:] {
			if e := slots[0]; e != nil {
				batch[k] = e
				k++
			}
		}
		for j, e := range batch[:k] {
			stamps[j] = e.stamp.Load()
			if stamps[j] != 0 && e.ntags > 1 {
				// The handles may be on the next cache line: load one now too.
				touched ^= uintptr(unsafe.Pointer(*e.tags))
			}
		}
		for j, e := range batch[:k] {
			if pred(e, stamps[j]) {
				n++
			}
		}
	}
	touchSink.Store(touched) // keeps the loads above
	return n
}

// touchSink receives countEntries' by-product, so the compiler keeps its early loads.
var touchSink atomic.Uintptr

// killed reports whether e, found in the key set of snaps[i] with the stamp it had when
// count loaded it, is a live entry the invalidation killed and that is counted under
// that tag.
func (inv *invalidation) killed(e *entry, stamp uint64, i int, now int64, flushedAt uint64) bool {
	if stamp == 0 { // indexed, not installed: its writer holds its shard's lock
		if stamp = inv.s.settle(e); stamp == 0 {
			return false // abandoned: never installed
		}
	}
	// Loading a non-zero stamp makes the rest of e, written before it was stored, safe
	// to read.
	if stamp >= inv.stamp || (e.expireAt != 0 && now >= e.expireAt) {
		return false // written after the invalidation (it survives), or expired
	}
	if stamp < flushedAt && flushedAt < inv.stamp {
		// A FLUSH before us killed it and counted it. (Defensive: a FLUSH empties the
		// index, so the sets we took hold no entry older than it.)
		return false
	}
	for _, ts := range e.tagList() {
		j := inv.snapOf(ts.name)
		if j < 0 {
			// Killed by an earlier invalidation of another tag: that one counted it.
			if at := ts.invalidatedAt.Load(); stamp < at && at < inv.stamp {
				return false
			}
			continue
		}
		sn := &inv.snaps[j]
		if stamp < sn.prevAt {
			return false // killed by an earlier invalidation of this tag
		}
		if j < i && sn.keys.get(e.key(), e.hash) == e {
			return false // counted under an earlier tag of this invalidation
		}
	}
	return true
}

// snapOf returns the index in snaps of the tag named name, or -1.
func (inv *invalidation) snapOf(name string) int {
	for j := range inv.snaps {
		if inv.snaps[j].ts.name == name {
			return j
		}
	}
	return -1
}

// settle waits for the write that indexed e and has not installed it yet — it holds e's
// shard lock from indexing to installing or abandoning e — and returns e's stamp then: 0
// if the write abandoned e.
func (s *Store) settle(e *entry) uint64 {
	sh := s.shardFor(e.key())
	sh.mu.RLock()
	stamp := e.stamp.Load()
	sh.mu.RUnlock()
	return stamp
}

// reclaim processes every key the invalidation took (see Store.reclaim), lets the tags go
// (reclaimed) and drops the reclaiming counter.
// The background removal is CPU-bound and would otherwise delay requests: a goroutine
// that stays runnable (even one that yields) keeps the scheduler from polling the
// network, which it then does only every 10 ms, so a node with one P would answer its
// peers and clients that much later. After each reclaimBurst of work it sleeps briefly,
// leaving the P idle so that ready connections are served first (measured: INV_TAG of a
// 100k-key tag across three nodes went from ≈13 ms to ≈3 ms, docs/performance.md).
const (
	reclaimCheckEvery = 64                     // keys between two looks at the clock
	reclaimBurst      = 500 * time.Microsecond // work between two pauses
	reclaimPause      = 50 * time.Microsecond  // the pause
)

func (inv *invalidation) reclaim() {
	s := inv.s
	for _, sn := range inv.snaps {
		if sn.keys.len() == 0 {
			continue
		}
		n, since := 0, time.Now()
		for i := range scattered(len(sn.keys.slots)) {
			if e := sn.keys.slots[i]; e != nil {
				s.reclaim(e.key(), sn.ts.name, inv.stamp)
				if n++; n%reclaimCheckEvery == 0 && time.Since(since) > reclaimBurst {
					time.Sleep(reclaimPause)
					since = time.Now()
				}
			}
		}
		s.tags.reclaimed(sn.ts, inv.stamp)
	}
	s.reclaiming.Add(-1)
}

// reclaim processes one key of an invalidation of tag stamped at stamp: an entry carrying
// the tag written before the stamp is removed; one written after it (concurrently with
// the invalidation) survives and is indexed under the tag again, since the invalidation
// took the tag's key set.
func (s *Store) reclaim(key, tag string, stamp uint64) {
	sh, h := s.locate(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.t.get(key, h)
	if e == nil || !e.hasTag(tag) {
		return
	}
	// Written after the stamp: it survives, unless a later invalidation of the tag has
	// killed it meanwhile (that one found the tag's keys taken by us and left it to us).
	// A stamp equal to the invalidation's (only an imported entry's can be) is not
	// before it, as for stateOf.
	if e.stamp.Load() >= stamp && s.tags.readd(tag, e) {
		return
	}
	wasExpired := e.expireAt != 0 && s.nowMs() >= e.expireAt
	s.removeLocked(sh, e)
	if wasExpired {
		s.expirations.Add(1)
	}
}

// reclaimQueue hands invalidations to one background reclaimer goroutine, started when
// the queue gets work and ending when it is empty, so at most one runs at a time and
// reclaims run in the order the invalidations were issued.
type reclaimQueue struct {
	mu      sync.Mutex
	idle    sync.Cond // signalled when done advances; L is &mu
	queue   []*invalidation
	running bool   // the reclaimer goroutine is running
	issued  uint64 // invalidations ever queued
	done    uint64 // of those, reclaimed (in queue order)
	closed  bool   // Close was called: reclaim on the caller's goroutine
	// beforeEach, if set (by tests, before the first invalidation), runs on the
	// reclaimer goroutine before each queued invalidation is reclaimed.
	beforeEach func()
}

// reclaimLater reclaims inv in the background, or at once if it took no keys or the
// store is closed.
func (s *Store) reclaimLater(inv *invalidation) {
	q := &s.reclaims
	empty := true
	for _, sn := range inv.snaps {
		if sn.keys.len() > 0 {
			empty = false
			break
		}
	}
	q.mu.Lock()
	if empty || q.closed {
		q.mu.Unlock()
		inv.reclaim()
		return
	}
	q.queue = append(q.queue, inv)
	q.issued++
	if !q.running {
		q.running = true
		go s.reclaimLoop()
	}
	q.mu.Unlock()
}

func (s *Store) reclaimLoop() {
	q := &s.reclaims
	q.mu.Lock()
	for len(q.queue) > 0 {
		batch := q.queue
		q.queue = nil
		q.mu.Unlock()
		for i, inv := range batch {
			if q.beforeEach != nil {
				q.beforeEach()
			}
			inv.reclaim()
			batch[i] = nil
			q.mu.Lock()
			q.done++
			q.idle.Broadcast()
			q.mu.Unlock()
		}
		q.mu.Lock()
	}
	q.running = false
	q.mu.Unlock()
}

// WaitReclaim waits until the memory of every entry removed by an invalidation that
// returned before the call has been reclaimed: the entries are out of their shards and
// the tag index, and Stats().Items, Bytes and Tags no longer count them. Invalidations
// make entries invisible before they return; reclaiming them is background work
// (docs/store.md).
func (s *Store) WaitReclaim() {
	q := &s.reclaims
	q.mu.Lock()
	for target := q.issued; q.done < target; {
		q.idle.Wait()
	}
	q.mu.Unlock()
}

// normalizeTagsUnbounded sorts and dedupes tags named by an invalidation (no limits: a
// tag longer than the limit simply has no entries).
func (s *Store) normalizeTagsUnbounded(tags []string) ([]string, error) {
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if t != "" {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// InvalidateTagsAll removes every live entry carrying all of tags and returns how many.
// Unlike InvalidateTagsAny it removes each entry under its key's lock before returning:
// a tag's invalidation stamp cannot say "dead if it also carries these other tags", so
// nothing becomes invisible before it is removed (docs/store.md).
func (s *Store) InvalidateTagsAll(tags []string) int {
	tags, _ = s.normalizeTagsUnbounded(tags)
	if len(tags) == 0 {
		return 0
	}
	// Walk the smallest tag's keys: every entry carrying all tags is among them.
	smallest := tags[0]
	for _, t := range tags[1:] {
		if s.tags.size(t) < s.tags.size(smallest) {
			smallest = t
		}
	}
	n := 0
	keys := s.tags.keys(smallest) // in the order of the tag's slots: delete scattered
	for i := range scattered(len(keys)) {
		k := keys[i]
		sh, h := s.locate(k)
		sh.mu.Lock()
		if e := sh.t.get(k, h); e != nil && hasAll(e, tags) {
			st := s.stateOf(e)
			s.removeLocked(sh, e)
			if st == live {
				n++
			} else if st == expired {
				s.expirations.Add(1)
			}
		}
		sh.mu.Unlock()
	}
	s.invalidations.Add(uint64(n))
	return n
}

func hasAll(e *entry, tags []string) bool {
	for _, t := range tags {
		if !e.hasTag(t) {
			return false
		}
	}
	return true
}

// Flush removes every entry and returns how many were live. It holds every key shard's
// lock and every tag shard's lock for a moment: it takes its stamp, takes every shard's
// table and empties the tag index, so every entry written before it is gone at one
// instant, and every entry of the taken tables was installed before that instant. It
// then counts the live ones among them without any lock; their memory goes back to the
// Go heap with the tables.
func (s *Store) Flush() int {
	for i := range s.shards {
		s.shards[i].mu.Lock()
	}
	s.tags.lockAll()
	stamp := s.clock.Next()
	// FLUSHes are serialised by the locks, so flushedAt only grows. With every key shard
	// locked no read-modify-write is between taking its stamp and judging by flushedAt.
	s.flushedAt.Store(stamp)
	tables := make([]entryTable, len(s.shards))
	for i := range s.shards {
		sh := &s.shards[i]
		tables[i], sh.t = sh.t, entryTable{}
		sh.expiring.Store(0)
	}
	// Every change to these is made under a key shard lock: they count exactly what the
	// tables held.
	s.items.Add(-s.items.Load())
	s.bytes.Add(-s.bytes.Load())
	s.tags.clearLocked()
	s.tags.unlockAll()
	for i := range s.shards {
		s.shards[i].mu.Unlock()
	}

	now := s.nowMs()
	n, expired := 0, 0
	for i := range tables {
		n += countEntries(tables[i].slots, func(e *entry, stamp uint64) bool {
			if e.expireAt != 0 && now >= e.expireAt {
				expired++
				return false
			}
			return !deadByTag(e, stamp)
		})
	}
	s.expirations.Add(uint64(expired))
	s.invalidations.Add(uint64(n))
	return n
}

// deadByTag reports whether an entry stamped at stamp is dead by an invalidation of one
// of e's tags, as recorded in the states e's handles point at: for an installed entry,
// or one just indexed (Import), the states the index holds; for an entry a FLUSH took,
// the states dropped with it, whose stamps no longer change (an invalidation stamped
// before the FLUSH killed it, and counted it).
func deadByTag(e *entry, stamp uint64) bool {
	for _, ts := range e.tagList() {
		if stamp < ts.invalidatedAt.Load() {
			return true
		}
	}
	return false
}

// DropPartition removes every entry of partition p (for example when the node no longer
// owns it) and returns how many were live.
func (s *Store) DropPartition(p int) int {
	sh := &s.shards[p]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.t
	sh.t = entryTable{}
	n := 0
	for i := range scattered(len(t.slots)) {
		e := t.slots[i]
		if e == nil {
			continue
		}
		switch s.stateOf(e) {
		case live:
			n++
		case expired:
			s.expirations.Add(1)
		}
		s.forgetLocked(sh, e)
	}
	return n
}
