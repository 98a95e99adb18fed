package cache

import (
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// tagState is one tag's entry in the index: the keys whose current entry carries the tag,
// and the stamp of the tag's latest invalidation. An entry carrying the tag with a write
// stamp below invalidatedAt is dead, whether or not it has been reclaimed yet.
type tagState struct {
	name          string              // the interned tag; entries share this string
	keys          map[string]struct{} // keys whose entry carries the tag
	invalidatedAt uint64              // stamp of the latest invalidation, 0 if none
	pending       int                 // invalidation snapshots still being reclaimed
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
	tagStateBytes  = 160 // tagState, its map header and the shard map slot
	tagMemberBytes = 40  // one key in a tag's key set (the key string itself is shared)
)

func newTagIndex(shards int) *tagIndex {
	ti := &tagIndex{shards: make([]tagShard, shards)}
	for i := range ti.shards {
		ti.shards[i].m = make(map[string]*tagState)
	}
	return ti
}

func (ti *tagIndex) shard(tag string) *tagShard {
	return &ti.shards[xxhash.Sum64String(tag)%uint64(len(ti.shards))]
}

// add records that key's entry carries tag and returns the interned tag string.
func (ti *tagIndex) add(tag, key string) string {
	sh := ti.shard(tag)
	sh.mu.Lock()
	ts := sh.m[tag]
	if ts == nil {
		ts = &tagState{name: tag, keys: make(map[string]struct{}, 1)}
		sh.m[tag] = ts
		ti.tags.Add(1)
		ti.bytes.Add(tagStateBytes + int64(len(tag)))
	}
	if _, ok := ts.keys[key]; !ok {
		ts.keys[key] = struct{}{}
		ti.bytes.Add(tagMemberBytes)
	}
	name := ts.name
	sh.mu.Unlock()
	return name
}

// remove records that key's entry no longer carries tag, freeing the tag when it has no
// keys left and no invalidation is being reclaimed.
func (ti *tagIndex) remove(tag, key string) {
	sh := ti.shard(tag)
	sh.mu.Lock()
	if ts := sh.m[tag]; ts != nil {
		if _, ok := ts.keys[key]; ok {
			delete(ts.keys, key)
			ti.bytes.Add(-tagMemberBytes)
		}
		ti.maybeFreeLocked(sh, ts)
	}
	sh.mu.Unlock()
}

func (ti *tagIndex) maybeFreeLocked(sh *tagShard, ts *tagState) {
	if len(ts.keys) == 0 && ts.pending == 0 && sh.m[ts.name] == ts {
		delete(sh.m, ts.name)
		ti.tags.Add(-1)
		ti.bytes.Add(-(tagStateBytes + int64(len(ts.name))))
	}
}

// invalidate marks every entry of tag written before stamp as dead and hands the caller
// the keys to reclaim. The caller must call reclaimed(ts) when it has processed them.
// It returns nil when the tag has no keys.
func (ti *tagIndex) invalidate(tag string, stamp uint64) (*tagState, map[string]struct{}) {
	sh := ti.shard(tag)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ts := sh.m[tag]
	if ts == nil || len(ts.keys) == 0 {
		return nil, nil
	}
	ts.invalidatedAt = stamp
	ts.pending++
	keys := ts.keys
	ts.keys = make(map[string]struct{})
	ti.bytes.Add(-tagMemberBytes * int64(len(keys)))
	return ts, keys
}

// reclaimed ends one invalidation's reclaim of ts.
func (ti *tagIndex) reclaimed(ts *tagState) {
	sh := ti.shard(ts.name)
	sh.mu.Lock()
	ts.pending--
	ti.maybeFreeLocked(sh, ts)
	sh.mu.Unlock()
}

// invalidatedAt returns the stamp of tag's latest invalidation still relevant (0 if none).
func (ti *tagIndex) invalidatedAt(tag string) uint64 {
	sh := ti.shard(tag)
	sh.mu.RLock()
	var at uint64
	if ts := sh.m[tag]; ts != nil {
		at = ts.invalidatedAt
	}
	sh.mu.RUnlock()
	return at
}

// keys returns a copy of the keys indexed under tag.
func (ti *tagIndex) keys(tag string) []string {
	sh := ti.shard(tag)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	ts := sh.m[tag]
	if ts == nil {
		return nil
	}
	out := make([]string, 0, len(ts.keys))
	for k := range ts.keys {
		out = append(out, k)
	}
	return out
}

// size returns how many keys are indexed under tag.
func (ti *tagIndex) size(tag string) int {
	sh := ti.shard(tag)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if ts := sh.m[tag]; ts != nil {
		return len(ts.keys)
	}
	return 0
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
			if len(ts.keys) > 0 {
				out = append(out, TagCount{Tag: name, Keys: len(ts.keys)})
			}
		}
		sh.mu.RUnlock()
	}
	return out
}
