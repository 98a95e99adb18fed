package cache

// Interleavings of an invalidation with writes and other invalidations, driven step by
// step: beginInvalidation stops an INV_TAG after it took its stamp and the tag's key set,
// finish runs its reclaim.

import (
	"fmt"
	"testing"
	"time"
)

// stampNow gives key's entry a fresh stamp, putting the store in the state a write
// reaches when it indexed its tags before a concurrent invalidation took the tag's key
// set but took its stamp after the invalidation's (a write indexes, then stamps).
func stampNow(s *Store, key string) {
	sh, h := s.locate(key)
	sh.mu.Lock()
	sh.t.get(key, h).stamp.Store(s.clock.Next())
	sh.mu.Unlock()
}

func TestWriteConcurrentWithInvalidationSurvivesIt(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "old", "v", 0, "t")
	mustPut(t, s, "k", "v", 0, "t")
	inv := s.beginInvalidation([]string{"t"})
	stampNow(s, "k")
	wantMiss(t, s, "old") // dead the moment the invalidation took its stamp
	wantGet(t, s, "k", "v")
	if n := inv.finish(); n != 1 {
		t.Fatalf("invalidation removed %d, want 1", n)
	}
	wantGet(t, s, "k", "v")
	wantKeys(t, s, "t", "k") // indexed again, so the next INV_TAG finds it
	if n := s.InvalidateTag("t"); n != 1 {
		t.Fatalf("next InvalidateTag = %d", n)
	}
	checkEmptyAfterFlush(t, s)
}

// An INV_TAG issued after a PUT returned must remove it, even while an earlier INV_TAG of
// the same tag, which the PUT was concurrent with, is still reclaiming.
func TestInvalidateTagIsCompleteWhileAnEarlierOneReclaims(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "k", "v", 0, "t")
	first := s.beginInvalidation([]string{"t"})
	stampNow(s, "k") // the PUT is concurrent with the first INV_TAG, and then returns
	s.InvalidateTag("t")
	wantMiss(t, s, "k")
	first.finish()
	wantMiss(t, s, "k")
	wantKeys(t, s, "t")
	checkConsistent(t, s)
}

func TestInvalidateTagsAnyIsCompleteWhileAnEarlierOneReclaims(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "k", "v", 0, "t", "u")
	first := s.beginInvalidation([]string{"t"})
	stampNow(s, "k")
	s.InvalidateTagsAny([]string{"t", "x"})
	wantMiss(t, s, "k")
	first.finish()
	wantMiss(t, s, "k")
	checkConsistent(t, s)
}

func TestInvalidateTagsAllSeesKeysOfAnInvalidationInProgress(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "k", "v", 0, "a", "b")
	first := s.beginInvalidation([]string{"a"})
	stampNow(s, "k")
	if n := s.InvalidateTagsAll([]string{"a", "b"}); n != 1 {
		t.Errorf("InvalidateTagsAll = %d, want 1", n)
	}
	wantMiss(t, s, "k")
	first.finish()
	wantMiss(t, s, "k")
	checkConsistent(t, s)
}

func TestKeysByTagListsASurvivorOfAnInvalidationInProgress(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "k", "v", 0, "t")
	mustPut(t, s, "gone", "v", 0, "t")
	first := s.beginInvalidation([]string{"t"})
	stampNow(s, "k")
	wantKeys(t, s, "t", "k")
	first.finish()
	wantKeys(t, s, "t", "k")
	checkConsistent(t, s)
}

func TestOverlappingInvalidationsOfOneTag(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "a", "v", 0, "t")
	first := s.beginInvalidation([]string{"t"})
	mustPut(t, s, "b", "v", 0, "t")
	second := s.beginInvalidation([]string{"t"})
	mustPut(t, s, "c", "v", 0, "t")
	wantMiss(t, s, "a")
	wantMiss(t, s, "b")
	wantGet(t, s, "c", "v")
	// Finish in the reverse order: the tag stays allocated until both are done.
	if n := second.finish(); n != 1 {
		t.Fatalf("second = %d, want 1", n)
	}
	if n := first.finish(); n != 1 {
		t.Fatalf("first = %d, want 1", n)
	}
	wantKeys(t, s, "t", "c")
	checkConsistent(t, s)
	s.Del("c")
	if st := s.Stats(); st.Tags != 0 || st.Bytes != 0 {
		t.Fatalf("after all: %+v", st)
	}
}

func TestFlushWhileAnInvalidationReclaims(t *testing.T) {
	s := newTestStore(t, Config{})
	for i := range 10 {
		mustPut(t, s, fmt.Sprint("k", i), "v", 0, "t")
	}
	inv := s.beginInvalidation([]string{"t"})
	flushed := s.Flush()
	if n := inv.finish() + flushed; n != 10 {
		t.Fatalf("Flush and the invalidation counted %d removals together, want each entry once: 10", n)
	}
	checkEmptyAfterFlush(t, s)
}

func TestEvictionKeepsMemoryBoundedAndIndexExact(t *testing.T) {
	const limit = 64 << 10
	s := newTestStore(t, Config{MaxMemory: limit, Partitions: 8})
	val := make([]byte, 200)
	for i := range 5000 {
		if err := s.Put(fmt.Sprint("k", i), val, 0, []string{fmt.Sprint("t", i%20), "all"}); err != nil {
			t.Fatal(err)
		}
		if m := s.Stats().Bytes; m > limit {
			t.Fatalf("after write %d: %d bytes held, limit %d", i, m, limit)
		}
	}
	st := s.Stats()
	if st.Evictions == 0 || st.Items == 0 || st.Items > 400 {
		t.Fatalf("Stats = %+v", st)
	}
	checkConsistent(t, s)
	if got := len(s.KeysByTag("all", 0)); int64(got) != st.Items {
		t.Fatalf("KeysByTag(all) lists %d, %d items held", got, st.Items)
	}
	checkEmptyAfterFlush(t, s)
}

func TestEvictionPrefersLeastRecentlyUsed(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 1, SweepInterval: time.Hour})
	val := make([]byte, 100)
	for i := range 100 {
		_ = s.Put(fmt.Sprint("old", i), val, 0, nil)
	}
	s.lruClock.Add(10) // time passes; what follows is more recent
	for i := range 100 {
		_ = s.Put(fmt.Sprint("new", i), val, 0, nil)
	}
	for i := range 50 { // reading an old entry makes it recent
		s.Get(fmt.Sprint("old", i))
	}
	// Now shrink the limit to half of what is held and write once to trigger eviction.
	s.cfg.MaxMemory = s.Stats().Bytes / 2
	_ = s.Put("trigger", val, 0, nil)
	coldLeft, warmLeft := 0, 0
	for i := range 100 {
		if entryOf(s, fmt.Sprint("old", i)) != nil {
			if i < 50 {
				warmLeft++
			} else {
				coldLeft++
			}
		}
	}
	if coldLeft > 25 || warmLeft < 25 {
		t.Fatalf("after evicting half: %d of 50 unread old entries left, %d of 50 read ones; want the unread ones evicted first",
			coldLeft, warmLeft)
	}
	checkConsistent(t, s)
}

// Incr runs eviction after writing; it must not do so while holding its shard lock
// (eviction takes shard locks: with one partition it would wait for itself).
func TestIncrUnderMemoryLimitDoesNotDeadlock(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 1, MaxMemory: 2048})
	runWithTimeout(t, 10*time.Second, func() {
		for i := range 200 {
			if _, err := s.Incr(fmt.Sprint("counter", i), 1, 0, []string{"t"}); err != nil {
				t.Error(err)
			}
		}
	})
	st := s.Stats()
	if st.Evictions == 0 || st.Bytes > 2048 {
		t.Fatalf("Stats = %+v", st)
	}
	checkConsistent(t, s)
}
