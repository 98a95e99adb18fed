package cache

import (
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for Config.Now, safe for concurrent use.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}

func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// newTestStore returns a store closed when the test ends. A nil cfg means defaults.
func newTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// newClockedStore returns a store on a fake clock whose background sweeper never runs
// during the test, so the test decides when anything is swept.
func newClockedStore(t testing.TB, cfg Config) (*Store, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Now = clk.Now
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Hour
	}
	return newTestStore(t, cfg), clk
}

func mustPut(t testing.TB, s *Store, key, value string, ttl time.Duration, tags ...string) {
	t.Helper()
	if err := s.Put(key, []byte(value), ttl, tags); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func wantGet(t testing.TB, s *Store, key, want string) {
	t.Helper()
	got, ok := s.Get(key)
	if !ok {
		t.Fatalf("Get(%q) missed, want %q", key, want)
	}
	if string(got) != want {
		t.Fatalf("Get(%q) = %q, want %q", key, got, want)
	}
}

func wantMiss(t testing.TB, s *Store, key string) {
	t.Helper()
	if got, ok := s.Get(key); ok {
		t.Fatalf("Get(%q) = %q, want a miss", key, got)
	}
}

func wantKeys(t testing.TB, s *Store, tag string, want ...string) {
	t.Helper()
	got := s.KeysByTag(tag, 0)
	if want == nil {
		want = []string{}
	}
	sort.Strings(want)
	if got == nil {
		got = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("KeysByTag(%q) = %q, want %q", tag, got, want)
	}
}

// entryOf returns key's entry, live or not, or nil.
func entryOf(s *Store, key string) *entry {
	sh, h := s.locate(key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.t.get(key, h)
}

// checkConsistent checks the store's internal invariants. The store must be quiescent
// (no operation in flight); it waits for background reclaims first. It checks that:
//   - every partition's table is well formed (checkTable);
//   - every entry lives in its key's partition, has sorted unique tags whose handles are
//     the index's states, and is indexed under each of them;
//   - every key indexed under a tag has an entry carrying that tag, and the tag's set
//     holds that very entry (no stale keys, no superseded entries kept alive), and no
//     empty or pending tag state is left behind;
//   - KeysByTag(t) is exactly the live keys carrying t;
//   - Items, Bytes, Tags and every shard's expiring counter match what is held.
func checkConsistent(t testing.TB, s *Store) {
	t.Helper()
	var errs []string
	fail := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	s.WaitReclaim()
	if n := s.reclaiming.Load(); n != 0 {
		fail("reclaiming = %d with no invalidation in flight", n)
	}
	type held struct {
		e    *entry
		live bool
	}
	entries := map[string]held{}
	var entryBytesSum int64
	for p := range s.shards {
		sh := &s.shards[p]
		sh.mu.RLock()
		expiring := 0
		checkTable(&sh.t, fmt.Sprintf("shard %d", p), s.slotHash, fail)
		for _, e := range sh.t.appendTo(nil) {
			k := e.key()
			if got := s.PartitionOf(k); got != p {
				fail("key %q in shard %d, PartitionOf says %d", k, p, got)
			}
			if _, dup := entries[k]; dup {
				fail("key %q held twice", k)
			}
			names := e.tagNames()
			if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
				fail("key %q has unsorted or duplicate tags %q", k, names)
			}
			for _, ts := range e.tagList() {
				tsh := s.tags.shard(ts.name)
				tsh.mu.RLock()
				if cur := tsh.m[ts.name]; cur != ts {
					fail("key %q has a handle to a tag state %q the index does not hold", k, ts.name)
				}
				tsh.mu.RUnlock()
			}
			if e.expireAt != 0 {
				expiring++
			}
			entries[k] = held{e, s.stateOf(e) == live}
			entryBytesSum += entryBytes(e)
		}
		if got := int(sh.expiring.Load()); got != expiring {
			fail("shard %d expiring = %d, holds %d entries with a TTL", p, got, expiring)
		}
		sh.mu.RUnlock()
	}

	var tagBytesSum int64
	tagStates := 0
	indexed := map[string]map[string]bool{} // tag -> keys
	for i := range s.tags.shards {
		ts := &s.tags.shards[i]
		ts.mu.RLock()
		for name, st := range ts.m {
			tagStates++
			if name != st.name {
				fail("tag state %q is named %q", name, st.name)
			}
			if st.keys.len() == 0 {
				fail("tag %q has an empty key set that was not freed", name)
			}
			if st.self != st {
				fail("tag %q: self does not point at its state", name)
			}
			checkTable(&st.keys, "tag "+name, s.slotHash, fail)
			if len(st.inflight) != 0 {
				fail("tag %q has %d invalidations pending with none in flight", name, len(st.inflight))
			}
			tagBytesSum += tagStateBytes + int64(len(name)) + tagMemberBytes*int64(st.keys.len())
			set := map[string]bool{}
			for _, e := range st.keys.appendTo(nil) {
				k := e.key()
				set[k] = true
				h, ok := entries[k]
				switch {
				case !ok:
					fail("tag %q lists key %q, which has no entry", name, k)
				case !h.e.hasTag(name):
					fail("tag %q lists key %q, whose entry carries only %q", name, k, h.e.tagNames())
				case h.e != e:
					fail("tag %q holds a superseded entry of key %q", name, k)
				}
			}
			indexed[name] = set
		}
		ts.mu.RUnlock()
	}

	wantKeysByTag := map[string][]string{}
	for k, h := range entries {
		for _, tag := range h.e.tagNames() {
			if !indexed[tag][k] {
				fail("key %q carries tag %q but is not indexed under it", k, tag)
			}
			if h.live {
				wantKeysByTag[tag] = append(wantKeysByTag[tag], k)
			}
		}
	}
	for tag := range indexed {
		want := wantKeysByTag[tag]
		sort.Strings(want)
		got := s.KeysByTag(tag, 0)
		if len(want) == 0 && len(got) == 0 {
			continue
		}
		if !slices.Equal(got, want) {
			fail("KeysByTag(%q) = %q, live keys carrying it are %q", tag, got, want)
		}
	}

	st := s.Stats()
	if st.Items != int64(len(entries)) {
		fail("Stats().Items = %d, store holds %d entries", st.Items, len(entries))
	}
	if st.Tags != int64(tagStates) {
		fail("Stats().Tags = %d, index holds %d tags", st.Tags, tagStates)
	}
	if got := s.bytes.Load(); got != entryBytesSum {
		fail("entry bytes = %d, entries held add up to %d", got, entryBytesSum)
	}
	if got := s.tags.bytes.Load(); got != tagBytesSum {
		fail("tag index bytes = %d, tags held add up to %d", got, tagBytesSum)
	}
	if st.Bytes != entryBytesSum+tagBytesSum {
		fail("Stats().Bytes = %d, want %d", st.Bytes, entryBytesSum+tagBytesSum)
	}
	if len(errs) > 0 {
		t.Fatalf("store is inconsistent:\n  %s", strings.Join(errs, "\n  "))
	}
}

// checkTable checks that t counts its entries right, that every entry is reachable from
// its home slot (no empty slot between its home and its slot), that control bytes match
// hashes, that every entry's hash is hashOf its key, and that the load is within bounds.
func checkTable(t *entryTable, what string, hashOf func(string) uint32, fail func(string, ...any)) {
	n := len(t.slots)
	if len(t.ctrl) != n {
		fail("%s: %d control bytes for %d slots", what, len(t.ctrl), n)
		return
	}
	held := 0
	for i, e := range t.slots {
		if e == nil {
			if t.ctrl[i] != 0 {
				fail("%s: empty slot %d has control byte %#x", what, i, t.ctrl[i])
			}
			continue
		}
		held++
		if t.ctrl[i] != ctrlOf(e.hash) {
			fail("%s: slot %d control byte %#x, want %#x", what, i, t.ctrl[i], ctrlOf(e.hash))
		}
		if h := hashOf(e.key()); h != e.hash {
			fail("%s: key %q has hash %#x, want %#x", what, e.key(), e.hash, h)
		}
		for j := homeOf(e.hash, n); j != i; j = (j + 1) % n {
			if t.slots[j] == nil {
				fail("%s: key %q in slot %d is unreachable from its home %d", what, e.key(), i, homeOf(e.hash, n))
				break
			}
		}
		if t.get(e.key(), e.hash) != e {
			fail("%s: get(%q) does not find its entry", what, e.key())
		}
	}
	if held != t.n {
		fail("%s: n = %d, holds %d", what, t.n, held)
	}
	if held*loadDivisor > n*loadMaxNum {
		fail("%s: %d entries in %d slots, above the maximum load", what, held, n)
	}
}

// checkEmptyAfterFlush flushes the store and checks that it is back to the empty
// baseline: no items, no tags, no bytes.
func checkEmptyAfterFlush(t testing.TB, s *Store) {
	t.Helper()
	s.Flush()
	checkConsistent(t, s)
	st := s.Stats()
	if st.Items != 0 || st.Bytes != 0 || st.Tags != 0 {
		t.Fatalf("after Flush: Items=%d Bytes=%d Tags=%d, want all 0", st.Items, st.Bytes, st.Tags)
	}
}

// runWithTimeout runs fn and fails the test with every goroutine's stack if it has not
// returned within d (a deadlock).
func runWithTimeout(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("still running after %s (deadlock?); goroutines:\n%s", d, buf)
	}
}

// stressDuration is how long a race stress test runs.
func stressDuration() time.Duration {
	if testing.Short() {
		return 300 * time.Millisecond
	}
	return 2 * time.Second
}
