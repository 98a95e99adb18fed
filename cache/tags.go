package cache

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// tagState is one tag's entry in the index: the keys whose current entry carries the tag,
// and the stamp of the tag's latest invalidation. An entry carrying the tag with a write
// stamp below invalidatedAt is dead, whether or not it has been reclaimed yet.
type tagState struct {
	name string    // the interned tag; never changes
	self *tagState // &self is the tag handle list of an entry carrying only this tag
	// keys holds, for each key whose current entry carries the tag, that entry (a write
	// replaces the entry it supersedes here, so the set never keeps an old value alive).
	// Only an entry's key and hash are read here: they never change once indexed.
	keys entryTable
	// invalidatedAt is the stamp of the latest invalidation, 0 if none; it never
	// decreases. It is written under the shard's lock and may be read without it (stateOf,
	// Import, an invalidation's count): an entry whose handle points at this state and
	// whose stamp is below it is dead.
	invalidatedAt atomic.Uint64
	// inflight holds the key sets taken by invalidations still being reclaimed, by
	// invalidation stamp. Their keys may still carry the tag (entries written
	// concurrently with the invalidation, re-indexed when reclaimed), so readers of the
	// tag's keys look here too. The sets are read-only once taken.
	inflight map[uint64]entryTable
}

type tagShard struct {
	mu sync.RWMutex         // protects m and every tagState in it
	m  map[string]*tagState // tag -> state; a state with no keys and nothing pending is freed
	_  [40]byte             // keep shards on separate cache lines
}

// tagIndex maps tags to the keys carrying them. Lock order: a caller may take a tag
// shard's lock while holding a key shard's lock, never the other way round.
type tagIndex struct {
	shards []tagShard
	tags   atomic.Int64 // distinct tags held
	bytes  atomic.Int64 // estimated bytes held by the index (docs/memory.md)
}

// Estimated heap cost of index structures (docs/memory.md explains the figures).
const (
	tagStateBytes  = 160               // tagState and its slot in the shard's map
	tagMemberBytes = tableSlotAvgBytes // one key in a tag's key set: a slot of its table
)

func newTagIndex(shards int) *tagIndex {
	ti := &tagIndex{shards: make([]tagShard, shards)}
	for i := range ti.shards {
		ti.shards[i].m = make(map[string]*tagState)
	}
	return ti
}

func (ti *tagIndex) shard(tag string) *tagShard { return &ti.shards[ti.shardIndex(tag)] }

func (ti *tagIndex) shardIndex(tag string) int {
	return int(xxhash.Sum64String(tag) % uint64(len(ti.shards)))
}

// add records that e, its key's entry from now on, carries tag (in place of the key's
// previous entry if that carried it too), and returns the tag's state. The caller holds
// e's shard lock.
func (ti *tagIndex) add(tag string, e *entry) *tagState {
	sh := ti.shard(tag)
	sh.mu.Lock()
	ts := ti.addLocked(sh, tag, e)
	sh.mu.Unlock()
	return ts
}

func (ti *tagIndex) addLocked(sh *tagShard, tag string, e *entry) *tagState {
	ts := sh.m[tag]
	if ts == nil {
		// Cloned: the caller's string may share memory with something bigger.
		ts = &tagState{name: strings.Clone(tag)}
		ts.self = ts
		sh.m[ts.name] = ts
		ti.tags.Add(1)
		ti.bytes.Add(tagStateBytes + int64(len(tag)))
	}
	if ts.keys.put(e) == nil {
		ti.bytes.Add(tagMemberBytes)
	}
	return ts
}

// readd indexes e under tag again: e survived the invalidation which took its key's set,
// unless a later invalidation of tag has killed it meanwhile (that one could not see the
// key: the earlier one held it). It reports whether it did; if not, the caller removes
// e. The caller holds e's shard lock.
func (ti *tagIndex) readd(tag string, e *entry) bool {
	sh := ti.shard(tag)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if ts := sh.m[tag]; ts != nil && e.stamp.Load() < ts.invalidatedAt.Load() {
		return false
	}
	ti.addLocked(sh, tag, e)
	return true
}

// remove records that e's key no longer has an entry carrying tag, freeing the tag when
// it has no keys left and no invalidation is being reclaimed. The caller holds e's shard
// lock.
func (ti *tagIndex) remove(tag string, e *entry) {
	sh := ti.shard(tag)
	sh.mu.Lock()
	if ts := sh.m[tag]; ts != nil {
		if ts.keys.delete(e.key(), e.hash) != nil {
			ti.bytes.Add(-tagMemberBytes)
		}
		ti.maybeFreeLocked(sh, ts)
	}
	sh.mu.Unlock()
}

// unadd undoes add(tag, e) for an abandoned write: if tag's key set holds e, it holds
// back (the entry e was to replace, nil if it does not carry tag) instead. The caller
// holds e's shard lock.
func (ti *tagIndex) unadd(tag string, e, back *entry) {
	sh := ti.shard(tag)
	sh.mu.Lock()
	if ts := sh.m[tag]; ts != nil {
		if back != nil {
			ts.keys.replace(e, back)
		} else if ts.keys.deleteEntry(e) {
			ti.bytes.Add(-tagMemberBytes)
		}
		ti.maybeFreeLocked(sh, ts)
	}
	sh.mu.Unlock()
}

func (ti *tagIndex) maybeFreeLocked(sh *tagShard, ts *tagState) {
	if ts.keys.len() == 0 && len(ts.inflight) == 0 && sh.m[ts.name] == ts {
		delete(sh.m, ts.name)
		ti.tags.Add(-1)
		ti.bytes.Add(-(tagStateBytes + int64(len(ts.name))))
	}
}

// invalidate takes an invalidation's stamp from next, marks every entry carrying one of
// tags written before it as dead, and hands the caller, for each tag the index holds, its
// previous invalidation stamp and its keys to reclaim; the caller must call
// reclaimed(ts, stamp) for each snapshot with keys when it has processed them. The stamp
// is taken while holding the shard locks of all the tags, so whoever takes a later stamp
// and then reads a tag's invalidatedAt sees it (stampDerivedLocked relies on this). A tag
// with no keys of its own yields an empty snapshot, but still records the stamp (earlier
// invalidations then hold its keys, and readd sees the stamp).
func (ti *tagIndex) invalidate(tags []string, next func() uint64) (uint64, []tagSnapshot) {
	locked := make([]int, 0, len(tags))
	for _, t := range tags {
		locked = append(locked, ti.shardIndex(t))
	}
	slices.Sort(locked)
	locked = slices.Compact(locked)
	for _, i := range locked { // in shard order: the one place holding several
		ti.shards[i].mu.Lock()
	}
	defer func() {
		for _, i := range locked {
			ti.shards[i].mu.Unlock()
		}
	}()
	stamp := next()
	snaps := make([]tagSnapshot, 0, len(tags))
	for _, t := range tags {
		ts := ti.shard(t).m[t]
		if ts == nil {
			continue
		}
		prev := ts.invalidatedAt.Load()
		if stamp > prev { // concurrent invalidations must not move it back
			ts.invalidatedAt.Store(stamp)
		}
		if ts.keys.len() == 0 {
			snaps = append(snaps, tagSnapshot{ts: ts, prevAt: prev})
			continue
		}
		keys := ts.keys
		ts.keys = entryTable{}
		if ts.inflight == nil {
			ts.inflight = make(map[uint64]entryTable, 1)
		}
		ts.inflight[stamp] = keys // its memory stays counted until reclaimed
		snaps = append(snaps, tagSnapshot{ts: ts, prevAt: prev, keys: keys})
	}
	return stamp, snaps
}

// lockAll takes every shard's lock, in shard order (FLUSH; the caller holds no tag
// shard lock).
func (ti *tagIndex) lockAll() {
	for i := range ti.shards {
		ti.shards[i].mu.Lock()
	}
}

func (ti *tagIndex) unlockAll() {
	for i := range ti.shards {
		ti.shards[i].mu.Unlock()
	}
}

// clearLocked empties the index for a FLUSH that has taken every key shard's table away:
// every tag state is dropped at once. Entries still pointing at the dropped states are
// the flushed ones; invalidations still reclaiming keep theirs (reclaimed then finds a
// state no longer in the index and leaves the counters alone). The caller holds every
// shard's lock, and every change to the counters is made under one, so they are zero
// afterwards.
func (ti *tagIndex) clearLocked() {
	for i := range ti.shards {
		ti.shards[i].m = make(map[string]*tagState)
	}
	ti.tags.Add(-ti.tags.Load())
	ti.bytes.Add(-ti.bytes.Load())
}

// reclaimed ends the reclaim of ts by the invalidation stamped at stamp, letting the key
// set it took go (uncounted unless a FLUSH dropped ts from the index meanwhile, and with
// it the counters).
func (ti *tagIndex) reclaimed(ts *tagState, stamp uint64) {
	sh := ti.shard(ts.name)
	sh.mu.Lock()
	if set, ok := ts.inflight[stamp]; ok && sh.m[ts.name] == ts {
		ti.bytes.Add(-tagMemberBytes * int64(set.len()))
	}
	delete(ts.inflight, stamp)
	ti.maybeFreeLocked(sh, ts)
	sh.mu.Unlock()
}

// invalidatedAt returns the stamp of tag's latest invalidation still relevant (0 if none).
func (ti *tagIndex) invalidatedAt(tag string) uint64 {
	sh := ti.shard(tag)
	sh.mu.RLock()
	var at uint64
	if ts := sh.m[tag]; ts != nil {
		at = ts.invalidatedAt.Load()
	}
	sh.mu.RUnlock()
	return at
}

// keys returns a copy of the keys indexed under tag, including those held by
// invalidations still being reclaimed that may still carry it (callers check each key's
// entry). An entry of such a set installed with a stamp below that invalidation's is dead
// and skipped without looking further: its key's current entry, if it carries the tag, is
// indexed in the tag's keys or in a later set. So KEYS_BY_TAG right after INV_TAG costs a
// pass over the taken set, not a key-shard lock per key.
func (ti *tagIndex) keys(tag string) []string {
	sh := ti.shard(tag)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	ts := sh.m[tag]
	if ts == nil {
		return nil
	}
	out := make([]string, 0, ts.keys.len())
	for _, e := range ts.keys.slots {
		if e != nil {
			out = append(out, e.key())
		}
	}
	if len(ts.inflight) == 0 {
		return out
	}
	seen := make(map[string]struct{}, len(out))
	for _, k := range out {
		seen[k] = struct{}{}
	}
	for stamp, set := range ts.inflight {
		for _, e := range set.slots {
			if e == nil {
				continue
			}
			if st := e.stamp.Load(); st != 0 && st < stamp {
				continue // killed by that invalidation
			}
			if k := e.key(); !hasKey(seen, k) {
				seen[k] = struct{}{}
				out = append(out, k)
			}
		}
	}
	return out
}

// size returns how many keys keys(tag) would return, at most.
func (ti *tagIndex) size(tag string) int {
	sh := ti.shard(tag)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	n := 0
	if ts := sh.m[tag]; ts != nil {
		n = ts.keys.len()
		for _, set := range ts.inflight {
			n += set.len()
		}
	}
	return n
}

// TagCount is one tag and the number of keys indexed under it.
type TagCount struct {
	Tag  string
	Keys int
}

// counts returns every tag with its key count.
func (ti *tagIndex) counts() []TagCount {
	var out []TagCount
	for i := range ti.shards {
		sh := &ti.shards[i]
		sh.mu.RLock()
		for name, ts := range sh.m {
			if n := ts.keys.len(); n > 0 {
				out = append(out, TagCount{Tag: name, Keys: n})
			}
		}
		sh.mu.RUnlock()
	}
	return out
}

func hasKey(set map[string]struct{}, k string) bool {
	_, ok := set[k]
	return ok
}
