package cache

// Regression tests for the original TagCache server's known defects 2–9
// (PROTOCOL.md, "Known defects of the original server"). Defects 1 and 10 are
// protocol-level and tested in node/.

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runFor runs each fn in its own goroutine, over and over, for d, and waits for all.
func runFor(d time.Duration, fns ...func(worker, iter int)) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w, fn := range fns {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				fn(w, i)
			}
		})
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
}

// Defect 2: INCR with tags held an entry lock while taking the tag-index lock, while
// INV_TAG and KEYS_BY_TAG took them in the opposite order.
func TestIncrWithTagsDoesNotDeadlockWithInvalidateTag(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 2, TagShards: 1})
	tags := []string{"t", "u"}
	incrs := func(w, i int) {
		if _, err := s.Incr(fmt.Sprint("k", i%8), 1, 0, tags); err != nil {
			t.Error(err)
		}
	}
	runWithTimeout(t, 30*time.Second, func() {
		runFor(stressDuration()/2,
			incrs, incrs, incrs, incrs,
			func(int, int) { s.InvalidateTag("t") },
			func(int, int) { s.InvalidateTagsAny(tags) },
			func(int, int) { s.InvalidateTagsAll(tags) },
			func(int, int) { s.KeysByTag("t", 0) },
			func(int, int) { s.Tags() },
			func(_, i int) { s.Decr(fmt.Sprint("k", i%8), 1, time.Hour, []string{"u"}) },
		)
	})
	checkConsistent(t, s)
}

// Defect 3: a PUT racing INV_TAG of one of its tags could stay alive but missing from
// the tag index, so that and every later INV_TAG of the tag missed it.
func TestPutRacingInvalidateTagNeverOrphansEntry(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 4, TagShards: 2})
	var violations atomic.Int64
	writer := func(w, i int) {
		_ = s.Put(fmt.Sprint("k", i%16), []byte("v"), 0, []string{"t", fmt.Sprint("w", w)})
	}
	// Each checker's key is its own: PUT it, then INV_TAG t (invoked after the PUT
	// returned) must remove it, whatever else is racing.
	checker := func(w, i int) {
		key := fmt.Sprint("own", w)
		_ = s.Put(key, []byte(strconv.Itoa(i)), 0, []string{"t"})
		s.InvalidateTag("t")
		if v, ok := s.Get(key); ok {
			violations.Add(1)
			t.Errorf("%s = %q survived an INV_TAG issued after its PUT returned", key, v)
		}
	}
	runFor(stressDuration(),
		writer, writer, writer, writer,
		func(int, int) { s.InvalidateTag("t") },
		func(int, int) { s.InvalidateTag("t") },
		checker, checker,
	)
	if violations.Load() > 0 {
		t.Fatalf("%d violations", violations.Load())
	}
	checkConsistent(t, s)

	// Every live entry carrying t is listed under t...
	listed := s.KeysByTag("t", 0)
	var carrying []string
	for p := range s.Partitions() {
		s.RangePartition(p, "", func(e Entry) bool {
			if slices.Contains(e.Tags, "t") {
				carrying = append(carrying, e.Key)
			}
			return true
		})
	}
	slices.Sort(carrying)
	if !slices.Equal(listed, carrying) {
		t.Fatalf("KeysByTag(t) = %q, live entries carrying t: %q", listed, carrying)
	}
	// ...and a later INV_TAG removes them all.
	if n := s.InvalidateTag("t"); n != len(carrying) {
		t.Fatalf("InvalidateTag removed %d, want %d", n, len(carrying))
	}
	for _, k := range carrying {
		wantMiss(t, s, k)
	}
	checkConsistent(t, s)
}

// Defect 4: deleting an empty tag set raced a concurrent insert into it, orphaning the
// inserted key.
func TestFreeingEmptyTagSetNeverLosesConcurrentInsert(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 8, TagShards: 1})
	// Each worker keeps putting its own key under one of three shared tags, checking it
	// is listed, and deleting it, so the shared tag sets keep emptying, being freed and
	// being recreated under everyone's feet.
	worker := func(w, i int) {
		key, tag := fmt.Sprint("k", w), fmt.Sprint("t", i%3)
		_ = s.Put(key, []byte("v"), 0, []string{tag})
		if !slices.Contains(s.KeysByTag(tag, 0), key) {
			t.Errorf("%s missing from KeysByTag(%s) right after its PUT returned", key, tag)
		}
		s.Del(key)
	}
	runFor(stressDuration()/2, worker, worker, worker, worker, worker, worker)
	checkConsistent(t, s)
	if st := s.Stats(); st.Tags != 0 || st.Bytes != 0 {
		t.Fatalf("after deleting every key: %+v", st)
	}
}

// Defect 5: after INV_TAG, removed keys stayed listed under their other tags, so a later
// INV_TAG of one of those tags deleted an unrelated newer value.
func TestInvalidateTagLeavesNoStaleKeysUnderOtherTags(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "k", "old", 0, "a", "b")
	if n := s.InvalidateTag("a"); n != 1 {
		t.Fatalf("InvalidateTag(a) = %d", n)
	}
	wantKeys(t, s, "b")
	s.WaitReclaim() // Stats().Tags counts b until the reclaim has removed k
	if st := s.Stats(); st.Tags != 0 {
		t.Fatalf("tags left after invalidating the only entry: %v", s.Tags())
	}
	mustPut(t, s, "k", "new", 0, "c")
	if n := s.InvalidateTag("b"); n != 0 {
		t.Fatalf("InvalidateTag(b) removed %d entries", n)
	}
	wantGet(t, s, "k", "new")
	wantKeys(t, s, "c", "k")
	checkConsistent(t, s)

	// The same through INV_TAGS_ANY, INV_TAGS_ALL, DEL and expiry.
	mustPut(t, s, "k", "old", 0, "a", "b")
	s.InvalidateTagsAny([]string{"a"})
	mustPut(t, s, "k", "new", 0, "c")
	if n := s.InvalidateTagsAll([]string{"b"}); n != 0 {
		t.Fatalf("InvalidateTagsAll(b) removed %d", n)
	}
	mustPut(t, s, "k", "old", 0, "a", "b")
	s.InvalidateTagsAll([]string{"a", "b"})
	mustPut(t, s, "k", "new", 0, "c")
	if n := s.InvalidateTagsAny([]string{"b", "a"}); n != 0 {
		t.Fatalf("InvalidateTagsAny(a,b) removed %d", n)
	}
	wantGet(t, s, "k", "new")
	checkConsistent(t, s)
}

// Defect 6: expiry removal checked, released the lock, then deleted, so a PUT landing in
// between was lost.
func TestSweepNeverDeletesFreshWrite(t *testing.T) {
	t.Run("lazy removal rechecks the entry", func(t *testing.T) {
		s, _ := newClockedStore(t, Config{})
		mustPut(t, s, "k", "stale", ExpireNow)
		sh := s.shardFor("k")
		stale := entryOf(s, "k")
		// A GET found the expired entry and released the read lock; a PUT lands before
		// it takes the write lock to remove it.
		mustPut(t, s, "k", "fresh", 0)
		s.removeIfExpired(sh, stale)
		wantGet(t, s, "k", "fresh")
		checkConsistent(t, s)
	})
	t.Run("racing sweeps and reads", func(t *testing.T) {
		s := newTestStore(t, Config{Partitions: 2, SweepInterval: time.Millisecond})
		const keys = 4
		writer := func(w, i int) {
			key := fmt.Sprint("k", w)
			_ = s.Put(key, []byte("stale"), ExpireNow, []string{"t"})
			want := strconv.Itoa(i)
			_ = s.Put(key, []byte(want), 0, []string{"t"})
			if v, ok := s.Get(key); !ok || string(v) != want {
				t.Errorf("fresh write %s=%s lost to expiry (got %q, %v)", key, want, v, ok)
			}
		}
		reaper := func(_, i int) { s.Get(fmt.Sprint("k", i%keys)) }
		sweeper := func(int, int) { s.Sweep() }
		fns := []func(int, int){}
		for range keys {
			fns = append(fns, writer)
		}
		fns = append(fns, reaper, reaper, sweeper, sweeper)
		runFor(stressDuration()/2, fns...)
		s.Close() // no background sweep while the check compares counters with shards
		checkConsistent(t, s)
	})
}

// Defect 7: empty tag sets were never freed, so memory grew with every distinct tag
// ever used.
func TestEmptyTagSetsAreFreed(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	s, clk := newClockedStore(t, Config{})
	for i := range n {
		key, tag := fmt.Sprint("k", i%100), fmt.Sprint("tag-", i)
		mustPut(t, s, key, "v", 0, tag)
		s.Del(key)
	}
	checkConsistent(t, s)
	if st := s.Stats(); st.Tags != 0 || st.Bytes != 0 || st.Items != 0 {
		t.Fatalf("after put+delete of %d distinct tags: %+v", n, st)
	}
	for i := range s.tags.shards {
		if m := s.tags.shards[i].m; len(m) != 0 {
			t.Fatalf("tag shard %d holds %d tag states", i, len(m))
		}
	}

	// Every other way an entry or a tag goes away frees the tag too.
	gone := map[string]func(){
		"overwrite": func() { mustPut(t, s, "k", "v", 0, "x"); mustPut(t, s, "k", "v", 0); s.Del("k") },
		"inv tag":   func() { mustPut(t, s, "k", "v", 0, "x", "y"); s.InvalidateTag("x") },
		"inv any":   func() { mustPut(t, s, "k", "v", 0, "x", "y"); s.InvalidateTagsAny([]string{"y"}) },
		"inv all":   func() { mustPut(t, s, "k", "v", 0, "x", "y"); s.InvalidateTagsAll([]string{"x", "y"}) },
		"inv keys":  func() { mustPut(t, s, "k", "v", 0, "x"); s.InvalidateKeys([]string{"k"}) },
		"flush":     func() { mustPut(t, s, "k", "v", 0, "x"); s.Flush() },
		"drop":      func() { mustPut(t, s, "k", "v", 0, "x"); s.DropPartition(s.PartitionOf("k")) },
		"incr tags": func() { s.Incr("k", 1, 0, []string{"x"}); s.Incr("k", 1, 0, []string{"y"}); s.Del("k") },
		"lazy expiry": func() {
			mustPut(t, s, "k", "v", time.Millisecond, "x")
			clk.Advance(time.Millisecond)
			s.Get("k")
		},
		"sweep": func() {
			mustPut(t, s, "k", "v", time.Millisecond, "x")
			clk.Advance(time.Millisecond)
			s.Sweep()
		},
		"add over expired": func() {
			mustPut(t, s, "k", "v", ExpireNow, "x")
			s.Add("k", []byte("v"), 0, nil)
			s.Del("k")
		},
	}
	for name, fn := range gone {
		fn()
		checkConsistent(t, s)
		if st := s.Stats(); st.Tags != 0 || st.Bytes != 0 || st.Items != 0 {
			t.Fatalf("%s: %+v, want an empty store", name, st)
		}
	}
	// Eviction.
	e := newTestStore(t, Config{MaxMemory: 4096})
	for i := range 1000 {
		mustPut(t, e, fmt.Sprint("k", i), "v", 0, fmt.Sprint("t", i))
	}
	if st := e.Stats(); st.Tags > st.Items || st.Evictions == 0 {
		t.Fatalf("under eviction: %+v; tags must not outnumber entries of one tag each", st)
	}
	checkConsistent(t, e)
}

// Defect 8: one global lock around statistics serialised every operation. Stats takes
// no lock: it returns even while every shard lock is held, and it runs alongside writers
// under the race detector.
func TestStatsTakeNoGlobalLock(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 4, TagShards: 2})
	mustPut(t, s, "k", "v", 0, "t")
	for i := range s.shards {
		s.shards[i].mu.Lock()
	}
	for i := range s.tags.shards {
		s.tags.shards[i].mu.Lock()
	}
	runWithTimeout(t, 5*time.Second, func() {
		if st := s.Stats(); st.Items != 1 || st.Puts != 1 || st.Tags != 1 {
			t.Errorf("Stats = %+v", st)
		}
	})
	for i := range s.tags.shards {
		s.tags.shards[i].mu.Unlock()
	}
	for i := range s.shards {
		s.shards[i].mu.Unlock()
	}

	var puts atomic.Uint64
	var prev sync.Map
	writer := func(w, i int) {
		_ = s.Put(fmt.Sprint("k", w, "-", i%50), []byte("v"), 0, []string{fmt.Sprint("t", i%5)})
		puts.Add(1)
		s.Get(fmt.Sprint("k", w, "-", rand.IntN(50)))
	}
	reader := func(w, _ int) {
		st := s.Stats()
		if p, ok := prev.Load(w); ok && st.Puts < p.(uint64) {
			t.Errorf("Puts went backwards: %d after %d", st.Puts, p)
		}
		prev.Store(w, st.Puts)
	}
	runFor(stressDuration()/4, writer, writer, writer, reader, reader)
	if got, want := s.Stats().Puts, puts.Load()+1; got != want {
		t.Fatalf("Puts = %d, want %d", got, want)
	}
	checkConsistent(t, s)
}

// Defect 9: INCR reset the entry's TTL on every call, so a rate-limit counter hit more
// often than its TTL never expired.
func TestIncrKeepsTTL(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	if _, err := s.Incr("rate:ip", 1, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 10; i++ { // a hit every 100 ms, within the window
		clk.Advance(99 * time.Millisecond)
		if n, err := s.Incr("rate:ip", 1, 0, nil); err != nil || n != int64(i) {
			t.Fatalf("hit %d: Incr = %d, %v", i, n, err)
		}
	}
	clk.Advance(time.Second - 9*99*time.Millisecond - time.Millisecond)
	wantGet(t, s, "rate:ip", "10") // 999 ms after the first hit
	clk.Advance(time.Millisecond)
	wantMiss(t, s, "rate:ip") // the window is over, however often it was hit
	if n, err := s.Incr("rate:ip", 1, time.Second, nil); err != nil || n != 1 {
		t.Fatalf("first hit of the next window = %d, %v; want 1", n, err)
	}
}
