// Package cache is TagCache's local store: entries with a value, tags and an optional TTL,
// kept in one locked shard per ring partition, with an exact tag index, invalidations that
// take effect for every key at one instant, lazy and background expiry, and eviction under
// a memory limit. It knows nothing of networks or clusters; node/ serves it to clients and
// puts it behind the ring. docs/store.md explains the design and why it is race-free.
package cache

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// entry is one stored value. It is immutable once published in a shard map (every write
// publishes a new entry) except for access, so a reader may keep using an *entry, its
// value and its tags after releasing the shard lock.
type entry struct {
	value    []byte
	tags     []string // sorted, unique, interned in the tag index
	stamp    uint64   // Clock stamp of the write that produced this entry
	expireAt int64    // unix ms after which the entry is gone; 0 = no TTL
	created  int64    // unix ms of the write
	access   atomic.Uint32
}

// entryBytes is the estimated heap cost of an entry (docs/memory.md): the entry struct,
// its shard-map slot, the key, the value and the tag slice (tag strings are interned and
// counted by the tag index).
func entryBytes(key string, e *entry) int64 {
	return entryOverheadBytes + int64(len(key)+len(e.value)+16*len(e.tags))
}

const entryOverheadBytes = 136

// ExpireNow as a write's ttl stores an entry that has already expired: the TagCache
// protocols' TTL of 0 ms.
const ExpireNow time.Duration = -1

func (e *entry) hasTag(tag string) bool {
	for _, t := range e.tags {
		if t == tag {
			return true
		}
	}
	return false
}

type shard struct {
	mu       sync.RWMutex      // protects m
	m        map[string]*entry // key -> current entry (possibly expired or dead)
	expiring atomic.Int32      // entries in m with a TTL; lets the sweeper skip the shard
	hits     atomic.Uint64
	misses   atomic.Uint64
	puts     atomic.Uint64
	_        [32]byte // keep shards on separate cache lines
}

// Store is the local store. All methods are safe for concurrent use.
//
// Lock order: a key shard's lock may be held while taking a tag shard's lock, never the
// reverse, and no method holds two key shard locks at once. Only an invalidation holds
// several tag shard locks at once (in shard order, holding no key shard lock).
type Store struct {
	cfg    Config
	clock  *Clock
	shards []shard // one per partition
	tags   *tagIndex

	flushedAt  atomic.Uint64 // entries stamped before this are dead (FLUSH)
	flushing   atomic.Int32  // FLUSHes between taking their stamp and storing it in flushedAt
	reclaiming atomic.Int64  // tag invalidations whose reclaim is in progress
	lruClock   atomic.Uint32 // ticks once per SweepInterval; entries record it on access

	items         atomic.Int64
	bytes         atomic.Int64 // estimated bytes of entries (the tag index counts its own)
	invalidations atomic.Uint64
	evictions     atomic.Uint64
	expirations   atomic.Uint64

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// New returns a running Store; Close stops its sweeper.
func New(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:    cfg,
		clock:  NewClock(cfg.Now),
		shards: make([]shard, cfg.Partitions),
		tags:   newTagIndex(cfg.TagShards),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].m = make(map[string]*entry)
	}
	go s.sweepLoop()
	return s, nil
}

// Close stops the background sweeper. The store stays usable; nothing expires in the
// background any more (expired entries are still never served).
func (s *Store) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// Config returns the store's effective configuration.
func (s *Store) Config() Config { return s.cfg }

// Clock returns the clock that stamps the store's writes and invalidations.
func (s *Store) Clock() *Clock { return s.clock }

// Partitions returns the number of partitions.
func (s *Store) Partitions() int { return len(s.shards) }

// PartitionOf returns the partition that holds key: xxhash64(key) mod Partitions.
func (s *Store) PartitionOf(key string) int {
	return int(xxhash.Sum64String(key) % uint64(len(s.shards)))
}

func (s *Store) shardFor(key string) *shard { return &s.shards[s.PartitionOf(key)] }

func (s *Store) nowMs() int64 { return s.cfg.Now().UnixMilli() }

// state of an entry at one instant.
type state uint8

const (
	live    state = iota
	expired       // TTL passed
	dead          // overtaken by an invalidation or FLUSH not yet reclaimed
)

// stateOf decides whether e may be served. The caller holds e's shard lock (read or
// write), so a reclaimer cannot remove e meanwhile.
func (s *Store) stateOf(e *entry) state {
	if e.expireAt != 0 && s.nowMs() >= e.expireAt {
		return expired
	}
	if e.stamp < s.flushedAt.Load() {
		return dead
	}
	// An entry can be dead by a tag only while that invalidation is being reclaimed:
	// reclaim removes every such entry before the counter drops (docs/store.md).
	if len(e.tags) > 0 && s.reclaiming.Load() > 0 {
		for _, t := range e.tags {
			if e.stamp < s.tags.invalidatedAt(t) {
				return dead
			}
		}
	}
	return live
}

// validate checks a write against the limits and returns its tags sorted, without
// empties or duplicates.
func (s *Store) validate(key string, valueLen int, tags []string) ([]string, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	if len(key) > s.cfg.MaxKeyBytes {
		return nil, &LimitError{What: "key too long", Limit: int64(s.cfg.MaxKeyBytes), Unit: "bytes"}
	}
	if valueLen > s.cfg.MaxValueBytes {
		return nil, &LimitError{What: "value too large", Limit: int64(s.cfg.MaxValueBytes), Unit: "bytes"}
	}
	return s.normalizeTags(tags)
}

func (s *Store) normalizeTags(tags []string) ([]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if t == "" {
			continue
		}
		if len(t) > s.cfg.MaxTagBytes {
			return nil, &LimitError{What: "tag too long", Limit: int64(s.cfg.MaxTagBytes), Unit: "bytes"}
		}
		out = append(out, t)
	}
	sort.Strings(out)
	out = slices.Compact(out)
	if len(out) > s.cfg.MaxTags {
		return nil, &LimitError{What: "too many tags", Limit: int64(s.cfg.MaxTags), Unit: "tags"}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// expireAt turns a write's ttl into an expiry time: 0 means none, a negative ttl means
// "already expired" (the wire protocols' TTL 0: the write replaces the old value with
// nothing that can be read).
func (s *Store) expireAt(ttl time.Duration) int64 {
	if ttl == 0 {
		return 0
	}
	if ttl < 0 {
		return s.nowMs()
	}
	ms := ttl.Milliseconds()
	if ms == 0 {
		ms = 1
	}
	return s.nowMs() + ms
}

// publishLocked replaces key's entry old (nil if none) by e: it indexes e's tags and only
// then stamps e, so that an invalidation whose snapshot of a tag's keys missed key is
// ordered before e (docs/store.md), then installs e. The caller holds sh.mu.
func (s *Store) publishLocked(sh *shard, key string, old, e *entry) {
	s.indexTags(key, e)
	e.stamp = s.clock.Next()
	s.installLocked(sh, key, old, e)
}

// indexTags indexes key under e's tags, interning them.
func (s *Store) indexTags(key string, e *entry) {
	for i, t := range e.tags {
		e.tags[i] = s.tags.add(t, key)
	}
}

// stampDerivedLocked indexes e's tags and stamps e for a write computed from key's entry
// old (a read-modify-write: INCR, Set, SetTTL), and reports whether old is live as of e's
// stamp: killed by every invalidation and FLUSH stamped before it, by none stamped after.
// Judging old before taking the stamp would let an invalidation stamped in between spare
// e although e was computed from the value it killed. The caller holds sh.mu, and then
// installs e (installLocked) or abandons it (unindexNew).
func (s *Store) stampDerivedLocked(key string, old, e *entry) bool {
	s.indexTags(key, e)
	if old == nil {
		e.stamp = s.clock.Next()
		return false
	}
retry:
	for {
		e.stamp = s.clock.Next()
		for s.flushing.Load() != 0 { // a FLUSH stores its stamp right after taking it
			runtime.Gosched()
		}
		flushedAt := s.flushedAt.Load()
		if flushedAt > e.stamp {
			continue // a later FLUSH is already visible: judge as of a later stamp
		}
		live := old.stamp >= flushedAt && (old.expireAt == 0 || s.nowMs() < old.expireAt)
		// An invalidation takes its stamp and stores it under its tags' shard locks, so
		// invalidatedAt shows every invalidation stamped before e. old stays indexed under
		// its tags until installLocked, so their states, and those stamps, are still there.
		for _, t := range old.tags {
			at := s.tags.invalidatedAt(t)
			if at > e.stamp {
				continue retry // a later invalidation is already visible
			}
			if old.stamp < at {
				live = false
			}
		}
		return live
	}
}

// unindexNew undoes stampDerivedLocked's indexing of e when the write is abandoned.
func (s *Store) unindexNew(key string, old, e *entry) {
	for _, t := range e.tags {
		if old == nil || !old.hasTag(t) {
			s.tags.remove(t, key)
		}
	}
}

// installLocked puts e, indexed and stamped, in place of old (nil if none). old is
// unindexed from the tags e does not carry only now, after e's stamp, so that old's tag
// states, and the invalidation stamps they hold, stay in place until then. The caller
// holds sh.mu.
func (s *Store) installLocked(sh *shard, key string, old, e *entry) {
	if old != nil {
		for _, t := range old.tags {
			if !e.hasTag(t) {
				s.tags.remove(t, key)
			}
		}
		if old.expireAt != 0 {
			sh.expiring.Add(-1)
		}
		s.items.Add(-1)
		s.bytes.Add(-entryBytes(key, old))
	}
	e.created = int64(e.stamp >> logicalBits)
	e.access.Store(s.lruClock.Load())
	sh.m[key] = e
	if e.expireAt != 0 {
		sh.expiring.Add(1)
	}
	s.items.Add(1)
	s.bytes.Add(entryBytes(key, e))
}

// removeLocked deletes key's entry e from the shard and the tag index. The caller holds
// sh.mu and has checked that sh.m[key] == e.
func (s *Store) removeLocked(sh *shard, key string, e *entry) {
	delete(sh.m, key)
	for _, t := range e.tags {
		s.tags.remove(t, key)
	}
	if e.expireAt != 0 {
		sh.expiring.Add(-1)
	}
	s.items.Add(-1)
	s.bytes.Add(-entryBytes(key, e))
}

// Put stores value under key with the given TTL and tags, replacing any entry. ttl 0
// means no TTL; a negative ttl stores an entry that has already expired (ExpireNow). The
// store keeps its own copy of value.
func (s *Store) Put(key string, value []byte, ttl time.Duration, tags []string) error {
	tags, err := s.validate(key, len(value), tags)
	if err != nil {
		return err
	}
	e := &entry{value: clone(value), tags: tags, expireAt: s.expireAt(ttl)}
	sh := s.shardFor(key)
	sh.mu.Lock()
	s.publishLocked(sh, key, sh.m[key], e)
	sh.puts.Add(1)
	sh.mu.Unlock()
	s.evictIfNeeded()
	return nil
}

// Add stores value only if key holds no live entry, and reports whether it did.
func (s *Store) Add(key string, value []byte, ttl time.Duration, tags []string) (bool, error) {
	tags, err := s.validate(key, len(value), tags)
	if err != nil {
		return false, err
	}
	sh := s.shardFor(key)
	sh.mu.Lock()
	old := sh.m[key]
	if old != nil && s.stateOf(old) == live {
		sh.mu.Unlock()
		return false, nil
	}
	s.countExpired(old)
	s.publishLocked(sh, key, old, &entry{value: clone(value), tags: tags, expireAt: s.expireAt(ttl)})
	sh.puts.Add(1)
	sh.mu.Unlock()
	s.evictIfNeeded()
	return true, nil
}

// countExpired counts the removal of an expired entry a write is about to replace.
func (s *Store) countExpired(old *entry) {
	if old != nil && old.expireAt != 0 && s.nowMs() >= old.expireAt {
		s.expirations.Add(1)
	}
}

// Incr adds delta to the decimal int64 stored under key and returns the result. A missing
// (or expired, or invalidated) key is created holding delta. ttl != 0 sets a new TTL (see
// Put); ttl 0 keeps the TTL an existing entry had, and a new one gets none. tags != nil
// replaces the entry's tags; nil keeps them.
func (s *Store) Incr(key string, delta int64, ttl time.Duration, tags []string) (int64, error) {
	tags, err := s.validate(key, 0, tags)
	if err != nil {
		return 0, err
	}
	sh := s.shardFor(key)
	sh.mu.Lock()
	// Deferred in this order, eviction runs after the unlock: it takes shard locks, ours
	// included.
	defer s.evictIfNeeded()
	defer sh.mu.Unlock()
	old := sh.m[key]
	found := old != nil && s.stateOf(old) == live
	var cur int64
	if found {
		if cur, err = strconv.ParseInt(string(old.value), 10, 64); err != nil {
			return 0, ErrNotInteger
		}
		if (delta > 0 && cur > maxInt64-delta) || (delta < 0 && cur < minInt64-delta) {
			return 0, ErrOverflow
		}
	}
	n := delta
	e := &entry{tags: tags, expireAt: s.expireAt(ttl)}
	if found && tags == nil {
		e.tags = slices.Clone(old.tags) // kept if old is still live as of e's stamp
	}
	if s.stampDerivedLocked(key, old, e) && found {
		n = cur + delta
		if ttl == 0 {
			e.expireAt = old.expireAt
		}
	} else {
		// Absent, or removed by an invalidation or FLUSH stamped before e: start afresh.
		s.countExpired(old)
		if tags == nil {
			e.tags = nil // installLocked unindexes old's tags
		}
	}
	e.value = strconv.AppendInt(nil, n, 10)
	s.installLocked(sh, key, old, e)
	sh.puts.Add(1)
	return n, nil
}

const (
	maxInt64 = int64(^uint64(0) >> 1)
	minInt64 = -maxInt64 - 1
)

// Decr subtracts by from the integer under key; see Incr.
func (s *Store) Decr(key string, by int64, ttl time.Duration, tags []string) (int64, error) {
	if by == minInt64 {
		return 0, ErrOverflow
	}
	return s.Incr(key, -by, ttl, tags)
}

// Get returns key's value. The slice is shared with the store: do not modify it.
func (s *Store) Get(key string) ([]byte, bool) {
	e, ok := s.lookup(key, true)
	if !ok {
		return nil, false
	}
	return e.value, true
}

// lookup returns key's live entry, removing an expired entry it finds; count says
// whether the read counts as a hit or miss.
func (s *Store) lookup(key string, count bool) (*entry, bool) {
	sh := s.shardFor(key)
	sh.mu.RLock()
	e := sh.m[key]
	st := live
	if e != nil {
		st = s.stateOf(e)
	}
	sh.mu.RUnlock()
	if e == nil || st != live {
		if count {
			sh.misses.Add(1)
		}
		if st == expired {
			s.removeIfExpired(sh, key, e)
		}
		return nil, false
	}
	if tick := s.lruClock.Load(); e.access.Load() != tick {
		e.access.Store(tick)
	}
	if count {
		sh.hits.Add(1)
	}
	return e, true
}

// removeIfExpired deletes e if it is still key's entry and still expired, checked under
// the write lock, so a fresh write that landed meanwhile is never lost.
func (s *Store) removeIfExpired(sh *shard, key string, e *entry) {
	sh.mu.Lock()
	if sh.m[key] == e && s.stateOf(e) == expired {
		s.removeLocked(sh, key, e)
		s.expirations.Add(1)
	}
	sh.mu.Unlock()
}

// Entry is a read-only view of a stored entry.
type Entry struct {
	Key      string
	Value    []byte   // shared with the store: do not modify
	Tags     []string // sorted; shared with the store: do not modify
	Stamp    uint64   // Clock stamp of the write
	ExpireAt int64    // unix ms when the entry expires; 0 = no TTL
	Created  int64    // unix ms of the write
}

// TTLMillis returns the milliseconds left at now (unix ms), or -1 when there is no TTL.
func (e Entry) TTLMillis(nowMs int64) int64 {
	if e.ExpireAt == 0 {
		return -1
	}
	if left := e.ExpireAt - nowMs; left > 0 {
		return left
	}
	return 0
}

func view(key string, e *entry) Entry {
	return Entry{Key: key, Value: e.value, Tags: e.tags, Stamp: e.stamp, ExpireAt: e.expireAt, Created: e.created}
}

// GetEntry returns key's live entry with its metadata. It is an inspection (HTTP
// /keys/{key}, TTL, EXISTS), not a cache read: it counts no hit or miss.
func (s *Store) GetEntry(key string) (Entry, bool) {
	e, ok := s.lookup(key, false)
	if !ok {
		return Entry{}, false
	}
	return view(key, e), true
}

// Del removes key and reports whether it held a live entry.
func (s *Store) Del(key string) bool {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil {
		return false
	}
	st := s.stateOf(e)
	s.removeLocked(sh, key, e)
	if st == expired {
		s.expirations.Add(1)
	}
	return st == live
}

// InvalidateKeys removes each key and returns how many held a live entry.
func (s *Store) InvalidateKeys(keys []string) int {
	n := 0
	for _, k := range keys {
		if k != "" && s.Del(k) {
			n++
		}
	}
	s.invalidations.Add(uint64(n))
	return n
}

// InvalidateTag removes every entry carrying tag; see InvalidateTagsAny.
func (s *Store) InvalidateTag(tag string) int { return s.InvalidateTagsAny([]string{tag}) }

// InvalidateTagsAny removes every entry carrying any of tags and returns how many live
// entries it removed. Every such entry written before the call becomes invisible at one
// instant (one stamp for all tags); the call then reclaims their memory and returns.
// Entries written concurrently may or may not survive, as if ordered before or after.
func (s *Store) InvalidateTagsAny(tags []string) int {
	tags, _ = s.normalizeTagsUnbounded(tags)
	if len(tags) == 0 {
		return 0
	}
	return s.beginInvalidation(tags).finish()
}

// invalidation is an InvalidateTagsAny between its two steps: stamped, with each tag's
// key set taken, and not yet reclaimed.
type invalidation struct {
	s     *Store
	stamp uint64
	snaps []tagSnapshot
}

type tagSnapshot struct {
	ts   *tagState
	keys map[string]struct{}
}

// beginInvalidation takes the invalidation's stamp and each tag's key set: from here on
// every entry carrying one of tags and stamped before it is dead. The caller must call
// finish.
func (s *Store) beginInvalidation(tags []string) *invalidation {
	// Raise the counter before stamping, so a reader that sees it at zero knows no
	// entry is dead by a tag (stateOf).
	s.reclaiming.Add(1)
	stamp, snaps := s.tags.invalidate(tags, s.clock.Next)
	return &invalidation{s: s, stamp: stamp, snaps: snaps}
}

// finish reclaims the keys the invalidation took and returns how many live entries it
// removed.
func (inv *invalidation) finish() int {
	s := inv.s
	defer s.reclaiming.Add(-1)
	n := 0
	for _, sn := range inv.snaps {
		for k := range sn.keys {
			if s.reclaim(k, sn.ts.name, inv.stamp) {
				n++
			}
		}
		s.tags.reclaimed(sn.ts, inv.stamp)
	}
	s.invalidations.Add(uint64(n))
	return n
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

// reclaim processes one key of an invalidation of tag stamped at stamp: an entry carrying
// the tag written before the stamp is removed; one written after it (concurrently with
// the invalidation) survives and is indexed under the tag again, since the invalidation
// took the tag's key set. It reports whether it removed a live entry.
func (s *Store) reclaim(key, tag string, stamp uint64) bool {
	sh := s.shardFor(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil || !e.hasTag(tag) {
		return false
	}
	// Written after the stamp: it survives, unless a later invalidation of the tag has
	// killed it meanwhile (that one found the tag's keys taken by us and left it to us).
	if e.stamp > stamp && s.tags.readd(tag, key, e.stamp) {
		return false
	}
	wasExpired := e.expireAt != 0 && s.nowMs() >= e.expireAt
	s.removeLocked(sh, key, e)
	if wasExpired {
		s.expirations.Add(1)
	}
	return !wasExpired
}

// InvalidateTagsAll removes every live entry carrying all of tags and returns how many.
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
	for _, k := range s.tags.keys(smallest) {
		sh := s.shardFor(k)
		sh.mu.Lock()
		if e := sh.m[k]; e != nil && hasAll(e, tags) {
			st := s.stateOf(e)
			s.removeLocked(sh, k, e)
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

// KeysByTag returns the live keys carrying tag, sorted, at most limit of them (limit <= 0:
// all).
func (s *Store) KeysByTag(tag string, limit int) []string {
	keys := s.tags.keys(tag)
	sort.Strings(keys)
	out := keys[:0]
	for _, k := range keys {
		if limit > 0 && len(out) >= limit {
			break
		}
		sh := s.shardFor(k)
		sh.mu.RLock()
		e := sh.m[k]
		ok := e != nil && e.hasTag(tag) && s.stateOf(e) == live
		sh.mu.RUnlock()
		if ok {
			out = append(out, k)
		}
	}
	return out
}

// Tags returns every tag that has keys, with its key count, largest first.
func (s *Store) Tags() []TagCount {
	out := s.tags.counts()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Keys != out[j].Keys {
			return out[i].Keys > out[j].Keys
		}
		return out[i].Tag < out[j].Tag
	})
	return out
}

// Flush removes every entry and returns how many were live. Every entry written before
// the call becomes invisible at one instant; the call then reclaims them shard by shard.
func (s *Store) Flush() int {
	// flushing tells read-modify-writes (stampDerivedLocked) that a stamp may be taken
	// and not yet stored.
	s.flushing.Add(1)
	stamp := s.clock.Next()
	// Raise flushedAt, never lower it: a concurrent FLUSH with a later stamp may have
	// stored its own already.
	for old := s.flushedAt.Load(); old < stamp && !s.flushedAt.CompareAndSwap(old, stamp); {
		old = s.flushedAt.Load()
	}
	s.flushing.Add(-1)
	n := 0
	for p := range s.shards {
		n += s.dropPartition(p, stamp)
	}
	s.invalidations.Add(uint64(n))
	return n
}

// DropPartition removes every entry of partition p (for example when the node no longer
// owns it) and returns how many were live.
func (s *Store) DropPartition(p int) int {
	return s.dropPartition(p, ^uint64(0))
}

// dropPartition removes the entries of partition p stamped before stamp.
func (s *Store) dropPartition(p int, stamp uint64) int {
	sh := &s.shards[p]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.nowMs()
	n := 0
	for k, e := range sh.m {
		if e.stamp > stamp {
			continue
		}
		if e.expireAt == 0 || now < e.expireAt {
			n++
		} else {
			s.expirations.Add(1)
		}
		s.removeLocked(sh, k, e)
	}
	return n
}

// PartitionLen returns how many entries (live or not yet reclaimed) partition p holds.
func (s *Store) PartitionLen(p int) int {
	sh := &s.shards[p]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return len(sh.m)
}

// RangePartition calls fn for each live entry of partition p, in key order, starting
// after key after ("" for the start), until fn returns false. It works on a snapshot, so
// fn may call the store.
func (s *Store) RangePartition(p int, after string, fn func(Entry) bool) {
	sh := &s.shards[p]
	type kv struct {
		k string
		e *entry
	}
	sh.mu.RLock()
	snap := make([]kv, 0, len(sh.m))
	for k, e := range sh.m {
		if k > after && s.stateOf(e) == live {
			snap = append(snap, kv{k, e})
		}
	}
	sh.mu.RUnlock()
	sort.Slice(snap, func(i, j int) bool { return snap[i].k < snap[j].k })
	for _, x := range snap {
		if !fn(view(x.k, x.e)) {
			return
		}
	}
}

// Stats are the store's counters at one instant.
type Stats struct {
	Hits          uint64 // GETs that found a live entry
	Misses        uint64 // GETs that did not
	Puts          uint64 // entries written (PUT, ADD that added, INCR, DECR)
	Invalidations uint64 // live entries removed by INV_*, DEL-by-list and FLUSH
	Evictions     uint64 // entries removed to stay under MaxMemory
	Expirations   uint64 // expired entries removed
	Items         int64  // entries held (including expired ones not yet swept)
	Bytes         int64  // estimated bytes held, entries plus tag index
	Tags          int64  // distinct tags held
}

// HitRatio is Hits / (Hits + Misses), 0 when there were no reads.
func (st Stats) HitRatio() float64 {
	if st.Hits+st.Misses == 0 {
		return 0
	}
	return float64(st.Hits) / float64(st.Hits+st.Misses)
}

// Stats returns the current counters. It takes no lock.
func (s *Store) Stats() Stats {
	st := Stats{
		Invalidations: s.invalidations.Load(),
		Evictions:     s.evictions.Load(),
		Expirations:   s.expirations.Load(),
		Items:         s.items.Load(),
		Bytes:         s.memory(),
		Tags:          s.tags.tags.Load(),
	}
	for i := range s.shards {
		sh := &s.shards[i]
		st.Hits += sh.hits.Load()
		st.Misses += sh.misses.Load()
		st.Puts += sh.puts.Load()
	}
	return st
}

func (s *Store) memory() int64 { return s.bytes.Load() + s.tags.bytes.Load() }

// evictIfNeeded removes approximately least recently used entries until the store is
// under MaxMemory. It holds at most one shard lock at a time.
func (s *Store) evictIfNeeded() {
	if s.cfg.MaxMemory == 0 {
		return
	}
	for s.memory() > s.cfg.MaxMemory {
		if !s.evictOne() {
			return
		}
	}
}

// evictSamples is how many entries eviction compares to choose its victim.
const evictSamples = 5

// evictOne removes the least recently used of a few entries sampled from a random
// non-empty shard, preferring expired ones. It reports false when the store is empty.
func (s *Store) evictOne() bool {
	n := len(s.shards)
	start := rand.IntN(n)
	for i := range n {
		sh := &s.shards[(start+i)%n]
		sh.mu.Lock()
		var vk string
		var ve *entry
		seen := 0
		for k, e := range sh.m {
			if ve == nil || e.access.Load() < ve.access.Load() {
				vk, ve = k, e
			}
			if s.stateOf(e) != live {
				vk, ve = k, e
				break
			}
			if seen++; seen >= evictSamples {
				break
			}
		}
		if ve == nil {
			sh.mu.Unlock()
			continue
		}
		st := s.stateOf(ve)
		s.removeLocked(sh, vk, ve)
		sh.mu.Unlock()
		if st == expired {
			s.expirations.Add(1)
		} else {
			s.evictions.Add(1)
		}
		return true
	}
	return false
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append(make([]byte, 0, len(b)), b...)
}
