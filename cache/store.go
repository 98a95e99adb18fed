// Package cache is TagCache's local store: entries with a value, tags and an optional TTL,
// kept in one locked shard per ring partition, with an exact tag index, invalidations that
// take effect for every key at one instant, lazy and background expiry, and eviction under
// a memory limit. It knows nothing of networks or clusters; node/ serves it to clients and
// puts it behind the ring. docs/store.md explains the design and why it is race-free.
package cache

import (
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// ExpireNow as a write's ttl stores an entry that has already expired: the TagCache
// protocols' TTL of 0 ms.
const ExpireNow time.Duration = -1

type shard struct {
	mu       sync.RWMutex // protects t
	t        entryTable   // each key's current entry (possibly expired or dead)
	expiring atomic.Int32 // entries in t with a TTL; lets the sweeper skip the shard
	hits     atomic.Uint64
	misses   atomic.Uint64
	puts     atomic.Uint64
	_        [16]byte // keep shards on separate cache lines
}

// Store is the local store. All methods are safe for concurrent use.
//
// Lock order: a key shard's lock may be held while taking a tag shard's lock, never the
// reverse, and no method but Flush holds two key shard locks at once. An invalidation
// holds several tag shard locks at once (in shard order, holding no key shard lock);
// Flush takes every key shard's lock in shard order, then every tag shard's lock in
// shard order.
type Store struct {
	cfg    Config
	clock  *Clock
	shards []shard // one per partition
	tags   *tagIndex
	seed   maphash.Seed // for slotHash

	flushedAt  atomic.Uint64 // entries stamped before this are dead (FLUSH)
	reclaiming atomic.Int64  // tag invalidations whose reclaim is in progress
	reclaims   reclaimQueue  // invalidations waiting for the background reclaimer
	lruClock   atomic.Uint32 // ticks once per SweepInterval; entries record it on access
	lastNowMs  atomic.Int64  // the latest time nowMs returned

	items         atomic.Int64
	bytes         atomic.Int64 // estimated bytes of entries (the tag index counts its own)
	invalidations atomic.Uint64
	evictions     atomic.Uint64
	expirations   atomic.Uint64
	imports       atomic.Uint64

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
		seed:   maphash.MakeSeed(),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.reclaims.idle.L = &s.reclaims.mu
	go s.sweepLoop()
	return s, nil
}

// Close stops the background sweeper and waits for the background reclaim of every
// invalidation issued before it. The store stays usable: nothing expires in the
// background any more (expired entries are still never served), and invalidations issued
// after Close reclaim before they return.
func (s *Store) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	s.reclaims.mu.Lock()
	s.reclaims.closed = true
	s.reclaims.mu.Unlock()
	s.WaitReclaim()
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

// slotHash is the hash that places key in its partition's table and in tags' key sets.
// It is seeded per store, so clients cannot choose keys that collide (xxhash, which
// places keys in partitions, is the same everywhere by design).
func (s *Store) slotHash(key string) uint32 { return uint32(maphash.String(s.seed, key)) }

// locate returns key's shard and slot hash.
func (s *Store) locate(key string) (*shard, uint32) {
	return s.shardFor(key), s.slotHash(key)
}

// nowMs returns the current unix ms, never less than a value it returned before: if the
// wall clock steps back (an NTP correction), expired entries stay expired.
func (s *Store) nowMs() int64 {
	now := s.cfg.Now().UnixMilli()
	for {
		last := s.lastNowMs.Load()
		if now <= last {
			return last
		}
		if s.lastNowMs.CompareAndSwap(last, now) {
			return now
		}
	}
}

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
	stamp := e.stamp.Load()
	if stamp < s.flushedAt.Load() {
		return dead
	}
	// An entry can be dead by a tag only while that invalidation is being reclaimed:
	// reclaim removes every such entry before the counter drops (docs/store.md). An
	// entry in a table is indexed under each of its tags, so its handles are the states
	// the index holds for them, and their stamps can be read without the tag's lock.
	if e.ntags > 0 && s.reclaiming.Load() > 0 {
		for _, ts := range e.tagList() {
			if stamp < ts.invalidatedAt.Load() {
				return dead
			}
		}
	}
	return live
}

// tagBuf is room for a write's normalised tags that stays on the stack for a few tags.
type tagBuf [4]string

// validate checks a write against the limits and returns its tags sorted, without
// empties or duplicates, in buf if they fit.
func (s *Store) validate(key string, valueLen int, tags []string, buf *tagBuf) ([]string, error) {
	if key == "" {
		return nil, ErrEmptyKey
	}
	if len(key) > s.cfg.MaxKeyBytes {
		return nil, &LimitError{What: "key too long", Limit: int64(s.cfg.MaxKeyBytes), Unit: "bytes"}
	}
	if valueLen > s.cfg.MaxValueBytes {
		return nil, &LimitError{What: "value too large", Limit: int64(s.cfg.MaxValueBytes), Unit: "bytes"}
	}
	return s.normalizeTags(tags, buf)
}

func (s *Store) normalizeTags(tags []string, buf *tagBuf) ([]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := buf[:0]
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

// publishLocked replaces key's entry old (nil if none) by e, carrying tags: it indexes
// e's tags and only then takes e's stamp, so that an invalidation whose snapshot of a
// tag's keys missed key is ordered before e (docs/store.md), then installs e. The caller
// holds sh.mu.
func (s *Store) publishLocked(sh *shard, old, e *entry, tags []string) {
	s.indexTags(e, tags)
	s.installLocked(sh, old, e, s.clock.Next())
}

// indexTags indexes e under tags (sorted, unique), pointing e's tag handles at the tags'
// states (newEntry made room for them). With tags nil, it indexes e under the tags e
// already carries: handles copied from the entry e derives from, which is indexed under
// them, so the states are the ones the index holds.
func (s *Store) indexTags(e *entry, tags []string) {
	if tags == nil {
		for _, ts := range e.tagList() {
			s.tags.add(ts.name, e)
		}
		return
	}
	if len(tags) == 1 {
		ts := s.tags.add(tags[0], e)
		e.tags, e.ntags = &ts.self, 1
		return
	}
	handles := e.tagList() // newEntry made room for len(tags)
	for i, t := range tags {
		handles[i] = s.tags.add(t, e)
	}
}

// stampDerivedLocked indexes e under tags (see indexTags) and takes a stamp for e, a
// write computed from key's entry old (a read-modify-write: INCR, Set, SetTTL). It
// returns the stamp, and whether old is live as of it: killed by every invalidation and
// FLUSH stamped before it, by none stamped after. Judging old before taking the stamp
// would let an invalidation stamped in between spare e although e was computed from the
// value it killed. The caller holds sh.mu, and then installs e with the stamp
// (installLocked) or abandons it (unindexNew).
func (s *Store) stampDerivedLocked(old, e *entry, tags []string) (uint64, bool) {
	s.indexTags(e, tags)
	if old == nil {
		return s.clock.Next(), false
	}
	oldStamp := old.stamp.Load()
retry:
	for {
		stamp := s.clock.Next()
		// A FLUSH takes its stamp and stores it while holding every key shard's lock, ours
		// included, so flushedAt cannot change under us.
		flushedAt := s.flushedAt.Load()
		if flushedAt > stamp {
			continue // a later FLUSH is already visible: judge as of a later stamp
		}
		live := oldStamp >= flushedAt && (old.expireAt == 0 || s.nowMs() < old.expireAt)
		// An invalidation takes its stamp and stores it under its tags' shard locks, so
		// invalidatedAt, read under the same lock, shows every invalidation stamped
		// before ours. The key stays indexed under old's tags until installLocked, so
		// their states, and those stamps, are still there.
		for _, ts := range old.tagList() {
			at := s.tags.invalidatedAt(ts.name)
			if at > stamp {
				continue retry // a later invalidation is already visible
			}
			if oldStamp < at {
				live = false
			}
		}
		return stamp, live
	}
}

// unindexNew undoes stampDerivedLocked's indexing of e when the write is abandoned: where
// a tag's key set holds e, it holds old again if old carries the tag, and nothing
// otherwise.
func (s *Store) unindexNew(old, e *entry) {
	for _, ts := range e.tagList() {
		var back *entry
		if old != nil && old.hasTag(ts.name) {
			back = old
		}
		s.tags.unadd(ts.name, e, back)
	}
}

// installLocked stores stamp in e, indexed, and puts e in place of old (nil if none).
// old is unindexed from the tags e does not carry only now, after e's stamp was taken, so
// that old's tag states, and the invalidation stamps they hold, stay in place until then
// (under the tags e carries too, e has taken old's place). Storing the stamp, after every
// other field of e is final, marks e installed for readers of tag key sets that hold no
// key-shard lock (entry, invalidation.count). The caller holds sh.mu.
func (s *Store) installLocked(sh *shard, old, e *entry, stamp uint64) {
	e.stamp.Store(stamp)
	if old != nil {
		for _, ts := range old.tagList() {
			if !e.hasTag(ts.name) {
				s.tags.remove(ts.name, old)
			}
		}
		if old.expireAt != 0 {
			sh.expiring.Add(-1)
		}
		s.items.Add(-1)
		s.bytes.Add(-entryBytes(old))
	}
	e.access.Store(s.lruClock.Load())
	sh.t.put(e)
	if e.expireAt != 0 {
		sh.expiring.Add(1)
	}
	s.items.Add(1)
	s.bytes.Add(entryBytes(e))
}

// removeLocked deletes e, the current entry of its key, from the shard and the tag
// index. The caller holds sh.mu and has checked that e is the key's entry.
func (s *Store) removeLocked(sh *shard, e *entry) {
	sh.t.delete(e.key(), e.hash)
	s.forgetLocked(sh, e)
}

// forgetLocked does what removeLocked does but for deleting e from the shard's table:
// it unindexes e and uncounts it. The caller holds sh.mu and has taken e out of the
// table.
func (s *Store) forgetLocked(sh *shard, e *entry) {
	for _, ts := range e.tagList() {
		s.tags.remove(ts.name, e)
	}
	if e.expireAt != 0 {
		sh.expiring.Add(-1)
	}
	s.items.Add(-1)
	s.bytes.Add(-entryBytes(e))
}

// Put stores value under key with the given TTL and tags, replacing any entry. ttl 0
// means no TTL; a negative ttl stores an entry that has already expired (ExpireNow). The
// store keeps its own copy of value.
func (s *Store) Put(key string, value []byte, ttl time.Duration, tags []string) error {
	var buf tagBuf
	tags, err := s.validate(key, len(value), tags, &buf)
	if err != nil {
		return err
	}
	sh, h := s.locate(key)
	e := newEntry(key, value, h, s.expireAt(ttl), len(tags))
	sh.mu.Lock()
	s.publishLocked(sh, sh.t.get(key, h), e, tags)
	sh.puts.Add(1)
	sh.mu.Unlock()
	s.evictIfNeeded()
	return nil
}

// Add stores value only if key holds no live entry, and reports whether it did (Set in
// SetIfAbsent mode).
func (s *Store) Add(key string, value []byte, ttl time.Duration, tags []string) (bool, error) {
	res, err := s.Set(key, value, SetOptions{TTL: ttl, Tags: tags, Mode: SetIfAbsent})
	return res.Stored, err
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
	var buf tagBuf
	tags, err := s.validate(key, 0, tags, &buf)
	if err != nil {
		return 0, err
	}
	sh, h := s.locate(key)
	sh.mu.Lock()
	// Deferred in this order, eviction runs after the unlock: it takes shard locks, ours
	// included.
	defer s.evictIfNeeded()
	defer sh.mu.Unlock()
	old := sh.t.get(key, h)
	var digits [20]byte
	if old != nil && s.stateOf(old) == live {
		v := old.value()
		cur, err := strconv.ParseInt(unsafe.String(unsafe.SliceData(v), len(v)), 10, 64)
		if err != nil {
			return 0, ErrNotInteger
		}
		if (delta > 0 && cur > maxInt64-delta) || (delta < 0 && cur < minInt64-delta) {
			return 0, ErrOverflow
		}
		n := cur + delta
		expireAt := old.expireAt
		if ttl != 0 {
			expireAt = s.expireAt(ttl)
		}
		ntags := len(tags)
		if tags == nil { // keep old's tags
			ntags = int(old.ntags)
		}
		e := newEntry(key, strconv.AppendInt(digits[:0], n, 10), h, expireAt, ntags)
		if tags == nil {
			e.copyTags(old)
		}
		if stamp, ok := s.stampDerivedLocked(old, e, tags); ok {
			s.installLocked(sh, old, e, stamp)
			sh.puts.Add(1)
			return n, nil
		}
		// An invalidation or FLUSH stamped before e removed old: as of e, the key is
		// absent. Abandon e and start afresh.
		s.unindexNew(old, e)
	}
	s.countExpired(old)
	e := newEntry(key, strconv.AppendInt(digits[:0], delta, 10), h, s.expireAt(ttl), len(tags))
	s.publishLocked(sh, old, e, tags)
	sh.puts.Add(1)
	return delta, nil
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
	return e.value(), true
}

// lookup returns key's live entry, removing an expired entry it finds; count says
// whether the read counts as a hit or miss.
func (s *Store) lookup(key string, count bool) (*entry, bool) {
	sh, h := s.locate(key)
	sh.mu.RLock()
	e := sh.t.get(key, h)
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
			s.removeIfExpired(sh, e)
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

// removeIfExpired deletes e if it is still its key's entry and still expired, checked
// under the write lock, so a fresh write that landed meanwhile is never lost.
func (s *Store) removeIfExpired(sh *shard, e *entry) {
	sh.mu.Lock()
	if sh.t.get(e.key(), e.hash) == e && s.stateOf(e) == expired {
		s.removeLocked(sh, e)
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

func view(e *entry) Entry {
	return Entry{Key: e.key(), Value: e.value(), Tags: e.tagNames(), Stamp: e.stamp.Load(), ExpireAt: e.expireAt,
		Created: e.created()}
}

// GetEntry returns key's live entry with its metadata. It is an inspection (HTTP
// /keys/{key}, TTL, EXISTS), not a cache read: it counts no hit or miss.
func (s *Store) GetEntry(key string) (Entry, bool) {
	e, ok := s.lookup(key, false)
	if !ok {
		return Entry{}, false
	}
	return view(e), true
}

// Del removes key and reports whether it held a live entry.
func (s *Store) Del(key string) bool {
	sh, h := s.locate(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.t.get(key, h)
	if e == nil {
		return false
	}
	st := s.stateOf(e)
	s.removeLocked(sh, e)
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

// KeysByTag returns the live keys carrying tag, sorted, at most limit of them (limit <= 0:
// all). It is exact at all times, including while invalidations are being reclaimed.
func (s *Store) KeysByTag(tag string, limit int) []string {
	keys := s.tags.keys(tag)
	sort.Strings(keys)
	out := keys[:0]
	for _, k := range keys {
		if limit > 0 && len(out) >= limit {
			break
		}
		sh, h := s.locate(k)
		sh.mu.RLock()
		e := sh.t.get(k, h)
		ok := e != nil && e.hasTag(tag) && s.stateOf(e) == live
		sh.mu.RUnlock()
		if ok {
			out = append(out, k)
		}
	}
	return out
}

// Tags returns every tag that has keys, with its key count, largest first. The counts are
// of keys indexed under the tag: they include entries that are no longer live but not
// yet removed — expired ones until swept, and ones killed by an invalidation of another
// of their tags until its background reclaim has removed them (WaitReclaim).
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

// PartitionLen returns how many entries (live or not yet reclaimed) partition p holds.
func (s *Store) PartitionLen(p int) int {
	sh := &s.shards[p]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.t.len()
}

// RangePartition calls fn for each live entry of partition p, in key order, starting
// after key after ("" for the start), until fn returns false. It works on a snapshot, so
// fn may call the store.
func (s *Store) RangePartition(p int, after string, fn func(Entry) bool) {
	sh := &s.shards[p]
	sh.mu.RLock()
	snap := make([]*entry, 0, sh.t.len())
	for _, e := range sh.t.slots {
		if e != nil && e.key() > after && s.stateOf(e) == live {
			snap = append(snap, e)
		}
	}
	sh.mu.RUnlock()
	slices.SortFunc(snap, func(a, b *entry) int { return strings.Compare(a.key(), b.key()) })
	for _, e := range snap {
		if !fn(view(e)) {
			return
		}
	}
}

// Stats are the store's counters at one instant.
type Stats struct {
	Hits          uint64 // GETs that found a live entry
	Misses        uint64 // GETs that did not
	Puts          uint64 // entries written (PUT, ADD that added, INCR, DECR)
	Imports       uint64 // entries installed by Import (handed over by another node)
	Invalidations uint64 // live entries removed by INV_*, DEL-by-list and FLUSH
	Evictions     uint64 // entries removed to stay under MaxMemory
	Expirations   uint64 // expired entries removed
	// Items, Bytes and Tags count what the store holds, including expired entries not
	// yet swept and entries killed by INV_TAG/INV_TAGS_ANY whose reclaim is still
	// running in the background (and the tags only those entries carry): they lag those
	// invalidations until WaitReclaim would return. FLUSH and the other removals update
	// them before returning.
	Items int64 // entries held
	Bytes int64 // estimated bytes held, entries plus tag index
	Tags  int64 // distinct tags held
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
		Imports:       s.imports.Load(),
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
		var ve *entry
		seen := 0
		sh.t.walk(rand.IntN(max(1, len(sh.t.slots))), func(e *entry) bool {
			if ve == nil || e.access.Load() < ve.access.Load() {
				ve = e
			}
			if s.stateOf(e) != live {
				ve = e
				return false
			}
			seen++
			return seen < evictSamples
		})
		if ve == nil {
			sh.mu.Unlock()
			continue
		}
		st := s.stateOf(ve)
		s.removeLocked(sh, ve)
		sh.mu.Unlock()
		switch st {
		case expired:
			s.expirations.Add(1)
		case live:
			s.evictions.Add(1)
		} // dead: the invalidation that killed it counted it; this only reclaims it
		return true
	}
	return false
}
