package cache

// Invalidations return once they are visible and counted; the reclaim of the entries
// they killed runs in the background. These tests hold the reclaimer (holdReclaimer) to
// look at the store while a reclaim is pending.

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holdReclaimer makes the background reclaimer wait, before each invalidation it
// reclaims, until release is called (once releases every pending and later one). It
// must be called before the store's first invalidation. It also fails the test if two
// reclaims ever run at once.
func holdReclaimer(t *testing.T, s *Store) (release func()) {
	t.Helper()
	gate := make(chan struct{})
	var active atomic.Int32
	s.reclaims.beforeEach = func() {
		<-gate
		if n := active.Add(1); n > 1 {
			t.Errorf("%d reclaims running at once", n)
		}
		runtime.Gosched()
		active.Add(-1)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // so Close, at cleanup, does not wait forever
	return release
}

func keyNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(prefix, i)
	}
	return out
}

func TestInvalidationIsVisibleAndCountedBeforeItsReclaim(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 16})
	release := holdReclaimer(t, s)
	tagged := keyNames("k", 300)
	for i, k := range tagged {
		switch {
		case i%3 == 0:
			mustPut(t, s, k, "v", 0, "t", "u")
		case i%10 == 1:
			mustPut(t, s, k, "v", time.Millisecond, "t") // expired below: not counted
		default:
			mustPut(t, s, k, "v", 0, "t")
		}
	}
	mustPut(t, s, "other", "v", 0, "u")
	clk.Advance(time.Millisecond)
	expired := 0
	for i := range tagged {
		if i%3 != 0 && i%10 == 1 {
			expired++
		}
	}
	before := s.Stats()

	if n := s.InvalidateTag("t"); n != len(tagged)-expired {
		t.Fatalf("InvalidateTag = %d, want %d (live entries carrying t)", n, len(tagged)-expired)
	}
	if s.reclaiming.Load() == 0 {
		t.Fatal("the reclaim is not pending: the test does not test anything")
	}
	// Items and Bytes lag until the reclaim (documented); Invalidations does not.
	if st := s.Stats(); st.Items != before.Items || st.Bytes != before.Bytes ||
		st.Invalidations != uint64(len(tagged)-expired) {
		t.Fatalf("Stats during the reclaim = %+v, before %+v", st, before)
	}
	// Nothing killed is visible, though nothing is reclaimed yet.
	for _, k := range tagged {
		wantMiss(t, s, k)
		if _, ok := s.GetEntry(k); ok {
			t.Fatalf("GetEntry(%s) found a killed entry", k)
		}
	}
	wantKeys(t, s, "t")
	wantKeys(t, s, "u", "other")
	for p := range s.Partitions() {
		s.RangePartition(p, "", func(e Entry) bool {
			if e.Key != "other" {
				t.Errorf("RangePartition lists killed %s", e.Key)
			}
			return true
		})
	}
	// A killed key behaves as a missing one for every write.
	if added, _ := s.Add(tagged[0], []byte("a"), 0, nil); !added {
		t.Fatal("Add over a killed entry did not add")
	}
	if n, err := s.Incr(tagged[1], 5, 0, nil); err != nil || n != 5 {
		t.Fatalf("Incr over a killed entry = %d, %v; want 5", n, err)
	}
	if res, _ := s.Set(tagged[2], []byte("x"), SetOptions{Mode: SetIfPresent}); res.Stored || res.HadOld {
		t.Fatalf("Set XX over a killed entry = %+v", res)
	}
	if res, _ := s.Set(tagged[3], []byte("s"), SetOptions{Mode: SetIfAbsent, Tags: []string{"t"}}); !res.Stored || res.HadOld {
		t.Fatalf("Set NX over a killed entry = %+v", res)
	}
	if s.SetTTL(tagged[4], time.Hour) {
		t.Fatal("SetTTL of a killed entry succeeded")
	}
	if s.Del(tagged[5]) {
		t.Fatal("Del of a killed entry reported a live one")
	}
	mustPut(t, s, tagged[6], "new", 0, "t")
	wantGet(t, s, tagged[0], "a")
	wantGet(t, s, tagged[1], "5")
	wantKeys(t, s, "t", tagged[3], tagged[6])

	// A second invalidation during the reclaim kills only what was written since.
	if n := s.InvalidateTag("t"); n != 2 {
		t.Fatalf("second InvalidateTag = %d, want 2", n)
	}
	wantMiss(t, s, tagged[3])
	wantMiss(t, s, tagged[6])
	wantKeys(t, s, "t")
	// Neither DropPartition nor Flush counts what the invalidations killed.
	p := s.PartitionOf(tagged[0])
	wantDropped := 0
	for _, k := range []string{tagged[0], tagged[1], "other"} {
		if s.PartitionOf(k) == p {
			wantDropped++
		}
	}
	if n := s.DropPartition(p); n != wantDropped {
		t.Fatalf("DropPartition = %d, want %d", n, wantDropped)
	}
	if n := s.Flush(); n != 3-wantDropped {
		t.Fatalf("Flush = %d, want %d", n, 3-wantDropped)
	}
	release()
	checkEmptyAfterFlush(t, s)
}

// The count is exact: expired entries, entries already killed by an earlier invalidation
// of another tag and entries carrying several of the tags named are each counted right.
func TestInvalidationCountIsExact(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 8})
	release := holdReclaimer(t, s)
	defer release()
	mustPut(t, s, "a", "v", 0, "t")
	mustPut(t, s, "b", "v", 0, "t", "u")
	mustPut(t, s, "c", "v", 0, "u")
	mustPut(t, s, "d", "v", 0, "t", "u", "w")
	mustPut(t, s, "e", "v", time.Millisecond, "t", "u")
	mustPut(t, s, "f", "v", 0, "w")
	clk.Advance(time.Millisecond)
	if n := s.InvalidateTagsAny([]string{"t", "u"}); n != 4 { // a b c d, once each
		t.Fatalf("InvalidateTagsAny(t, u) = %d, want 4", n)
	}
	if n := s.InvalidateTag("w"); n != 1 { // f; d is dead already
		t.Fatalf("InvalidateTag(w) = %d, want 1", n)
	}
	if n := s.InvalidateTagsAny([]string{"t", "u", "w"}); n != 0 {
		t.Fatalf("InvalidateTagsAny(t, u, w) = %d, want 0", n)
	}
	if n := s.InvalidateTagsAll([]string{"t", "u"}); n != 0 {
		t.Fatalf("InvalidateTagsAll(t, u) = %d, want 0", n)
	}
	if n := s.Flush(); n != 0 {
		t.Fatalf("Flush = %d, want 0", n)
	}
	release()
	s.WaitReclaim()
	if st := s.Stats(); st.Invalidations != 5 || st.Expirations != 1 {
		t.Fatalf("Stats = %+v, want 5 invalidations and 1 expiration", st)
	}
	checkEmptyAfterFlush(t, s)
}

// An entry killed by an earlier invalidation of one of the tags named, and still indexed
// under another of them while that one reclaims, is not counted again.
func TestInvalidationDoesNotRecountWhatAnEarlierOneOfItsTagsKilled(t *testing.T) {
	s := newTestStore(t, Config{})
	release := holdReclaimer(t, s)
	mustPut(t, s, "k", "v", 0, "t", "u")
	mustPut(t, s, "j", "v", 0, "u")
	if n := s.InvalidateTag("t"); n != 1 {
		t.Fatalf("InvalidateTag(t) = %d, want 1", n)
	}
	if n := s.InvalidateTagsAny([]string{"t", "u"}); n != 1 { // j; k is dead already
		t.Fatalf("InvalidateTagsAny(t, u) = %d, want 1", n)
	}
	release()
	checkConsistent(t, s)
}

// An entry indexed by a write that has not installed it yet (its writer holds the key's
// lock) is counted once the writer is done: counted if installed with a stamp before the
// invalidation's, not counted if abandoned or stamped after.
func TestInvalidationCountWaitsForAWriteInFlight(t *testing.T) {
	// Each case runs with the key's shard locked and e indexed under t; early is a stamp
	// taken before the invalidation started, invStamp waits for the invalidation's.
	for _, c := range []struct {
		name    string
		write   func(s *Store, sh *shard, e *entry, early uint64, invStamp func() uint64)
		counted bool
		lives   bool
	}{
		{"installed before", func(s *Store, sh *shard, e *entry, early uint64, invStamp func() uint64) {
			invStamp()
			s.installLocked(sh, nil, e, early)
		}, true, false},
		{"installed after", func(s *Store, sh *shard, e *entry, _ uint64, invStamp func() uint64) {
			invStamp()
			s.installLocked(sh, nil, e, s.clock.Next())
		}, false, true},
		{"abandoned", func(s *Store, _ *shard, e *entry, _ uint64, invStamp func() uint64) {
			invStamp()
			s.unindexNew(nil, e)
		}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestStore(t, Config{Partitions: 4})
			mustPut(t, s, "settled", "v", 0, "t")
			sh, h := s.locate("k")
			sh.mu.Lock()
			e := newEntry("k", []byte("v"), h, 0, 1)
			s.indexTags(e, []string{"t"})
			early := s.clock.Next()
			got := make(chan int)
			go func() { got <- s.InvalidateTag("t") }()
			invStamp := func() uint64 { // visible once the invalidation took t's keys
				for {
					if at := s.tags.invalidatedAt("t"); at != 0 {
						return at
					}
					runtime.Gosched()
				}
			}
			c.write(s, sh, e, early, invStamp)
			sh.mu.Unlock()
			want := 1
			if c.counted {
				want++
			}
			if n := <-got; n != want {
				t.Fatalf("InvalidateTag = %d, want %d", n, want)
			}
			if c.lives {
				wantGet(t, s, "k", "v")
				wantKeys(t, s, "t", "k")
			} else {
				wantMiss(t, s, "k")
				wantKeys(t, s, "t")
			}
			checkConsistent(t, s)
		})
	}
}

func TestCloseWaitsForReclaims(t *testing.T) {
	s, err := New(Config{Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	release := holdReclaimer(t, s)
	for _, k := range keyNames("k", 200) {
		mustPut(t, s, k, "v", 0, "t")
	}
	if n := s.InvalidateTag("t"); n != 200 {
		t.Fatalf("InvalidateTag = %d", n)
	}
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned with a reclaim pending")
	case <-time.After(50 * time.Millisecond): // only to give Close a chance to be wrong
	}
	release()
	runWithTimeout(t, 10*time.Second, func() { <-closed })
	if s.reclaiming.Load() != 0 || s.Stats().Items != 0 {
		t.Fatalf("after Close: reclaiming %d, %+v", s.reclaiming.Load(), s.Stats())
	}
	// After Close an invalidation reclaims before returning.
	mustPut(t, s, "x", "v", 0, "t")
	if n := s.InvalidateTag("t"); n != 1 {
		t.Fatalf("InvalidateTag after Close = %d", n)
	}
	if st := s.Stats(); st.Items != 0 || st.Tags != 0 || st.Bytes != 0 {
		t.Fatalf("after an invalidation after Close: %+v", st)
	}
	checkConsistent(t, s)
}

// Many invalidations waiting for the reclaimer: one goroutine reclaims them, in order,
// and WaitReclaim waits for all of them.
func TestReclaimsQueueBehindOneReclaimer(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 8})
	release := holdReclaimer(t, s)
	goroutines := runtime.NumGoroutine()
	for i := range 100 {
		tag := fmt.Sprint("t", i%7)
		mustPut(t, s, fmt.Sprint("k", i), "v", 0, tag)
		if n := s.InvalidateTag(tag); n != 1 {
			t.Fatalf("InvalidateTag = %d", n)
		}
	}
	if n := runtime.NumGoroutine() - goroutines; n > 1 {
		t.Fatalf("%d goroutines started for 100 invalidations, want at most 1", n)
	}
	waited := make(chan struct{})
	go func() {
		s.WaitReclaim()
		close(waited)
	}()
	release()
	runWithTimeout(t, 10*time.Second, func() { <-waited })
	if st := s.Stats(); st.Items != 0 || st.Tags != 0 {
		t.Fatalf("after WaitReclaim: %+v", st)
	}
	checkConsistent(t, s)
}

// KeysByTag right after an invalidation of a large tag does not lock every key it took
// (the entries of the taken set are dead by their stamps), and stays exact.
func TestKeysByTagDuringReclaimOfALargeTag(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 8})
	release := holdReclaimer(t, s)
	keys := keyNames("k", 2000)
	for _, k := range keys {
		mustPut(t, s, k, "v", 0, "t", "u")
	}
	s.InvalidateTag("t")
	mustPut(t, s, "k7", "new", 0, "t")
	wantKeys(t, s, "t", "k7")
	wantKeys(t, s, "u")
	if got := s.tags.keys("t"); !slices.Equal(got, []string{"k7"}) {
		t.Fatalf("tag index lists %d keys under t, want only k7", len(got))
	}
	release()
	checkConsistent(t, s)
}

func TestScatteredVisitsEveryIndexOnce(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 6, 8, 9, 13, 16, 100, 1000, 4096, 12345} {
		seen := make([]bool, n)
		count := 0
		for i := range scattered(n) {
			if seen[i] {
				t.Fatalf("n=%d: %d visited twice", n, i)
			}
			seen[i] = true
			count++
		}
		if count != n {
			t.Fatalf("n=%d: %d visited", n, count)
		}
	}
}
