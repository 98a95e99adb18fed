package cache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// stampAt returns a stamp of the wall-clock ms ms, logical counter c.
func stampAt(ms int64, c uint64) uint64 { return uint64(ms)<<logicalBits | c }

func mustImport(t testing.TB, s *Store, e Entry, want bool) {
	t.Helper()
	got, err := s.Import(e)
	if err != nil {
		t.Fatalf("Import(%s @%d): %v", e.Key, e.Stamp, err)
	}
	if got != want {
		t.Fatalf("Import(%s @%d) = %v, want %v", e.Key, e.Stamp, got, want)
	}
}

func TestImportNewerWinsOlderLosesEqualKeeps(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	now := clk.Now().UnixMilli()
	mustImport(t, s, Entry{Key: "k", Value: []byte("v2"), Stamp: stampAt(now, 2), Tags: []string{"a"}}, true)
	mustImport(t, s, Entry{Key: "k", Value: []byte("v1"), Stamp: stampAt(now, 1), Tags: []string{"b"}}, false)
	mustImport(t, s, Entry{Key: "k", Value: []byte("v2'"), Stamp: stampAt(now, 2)}, false)
	wantGet(t, s, "k", "v2")
	mustImport(t, s, Entry{Key: "k", Value: []byte("v3"), Stamp: stampAt(now, 3), Tags: []string{"b"}}, true)
	wantGet(t, s, "k", "v3")
	wantKeys(t, s, "a")
	wantKeys(t, s, "b", "k")

	// A local write is newer than everything imported before it (the clock observed
	// them), and an import older than it loses.
	mustPut(t, s, "k", "local", 0, "c")
	mustImport(t, s, Entry{Key: "k", Value: []byte("v4"), Stamp: stampAt(now, 4)}, false)
	wantGet(t, s, "k", "local")
	wantKeys(t, s, "b")
	wantKeys(t, s, "c", "k")

	// A newer write that is no longer live still wins over an older import: the import
	// would resurrect a value it overwrote.
	mustPut(t, s, "gone", "new", time.Millisecond, "c")
	e, _ := s.GetEntry("gone")
	clk.Advance(time.Millisecond)
	mustImport(t, s, Entry{Key: "gone", Value: []byte("old"), Stamp: e.Stamp - 1}, false)
	wantMiss(t, s, "gone")
	mustPut(t, s, "dead", "new", 0, "d")
	e, _ = s.GetEntry("dead")
	release := holdReclaimer(t, s)
	s.InvalidateTag("d")
	mustImport(t, s, Entry{Key: "dead", Value: []byte("old"), Stamp: e.Stamp - 1}, false)
	wantMiss(t, s, "dead")
	release()
	checkConsistent(t, s)
	checkEmptyAfterFlush(t, s)
}

func TestImportKeepsStampExpiryAndCreated(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	now := clk.Now().UnixMilli()
	in := Entry{Key: "k", Value: []byte("v"), Tags: []string{"b", "a", "a", ""}, Stamp: stampAt(now-5000, 7),
		ExpireAt: now + 60_000, Created: 12345}
	mustImport(t, s, in, true)
	got, ok := s.GetEntry("k")
	if !ok {
		t.Fatal("imported entry missing")
	}
	if got.Stamp != in.Stamp || got.ExpireAt != in.ExpireAt || got.Created != now-5000 ||
		!slices.Equal(got.Tags, []string{"a", "b"}) || string(got.Value) != "v" {
		t.Fatalf("GetEntry = %+v; want stamp %d, expiry %d, created %d (the stamp's), tags [a b]",
			got, in.Stamp, in.ExpireAt, now-5000)
	}
	if ttl := got.TTLMillis(now); ttl != 60_000 {
		t.Fatalf("TTL = %d", ttl)
	}
	clk.Advance(60 * time.Second)
	wantMiss(t, s, "k") // expires when it would have on the sender
	checkConsistent(t, s)
}

func TestImportOfAnExpiredEntry(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	now := clk.Now().UnixMilli()
	mustImport(t, s, Entry{Key: "k", Value: []byte("v"), Stamp: stampAt(now, 1), ExpireAt: now}, false)
	mustImport(t, s, Entry{Key: "k", Value: []byte("v"), Stamp: stampAt(now, 1), ExpireAt: now - 1}, false)
	if st := s.Stats(); st.Items != 0 || st.Imports != 0 {
		t.Fatalf("after importing expired entries: %+v", st)
	}
	// It overwrote whatever older entry the key held: that must not stay readable.
	mustImport(t, s, Entry{Key: "k", Value: []byte("older"), Stamp: stampAt(now, 1), Tags: []string{"t"}}, true)
	mustImport(t, s, Entry{Key: "k", Value: []byte("v"), Stamp: stampAt(now, 2), ExpireAt: now}, false)
	wantMiss(t, s, "k")
	wantKeys(t, s, "t")
	checkConsistent(t, s)
	if st := s.Stats(); st.Items != 0 || st.Tags != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestImportAdvancesTheClock(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	ahead := stampAt(clk.Now().UnixMilli()+10_000, 3) // a peer whose clock runs 10 s ahead
	mustImport(t, s, Entry{Key: "k", Value: []byte("v"), Stamp: ahead}, true)
	if last := s.Clock().Last(); last < ahead {
		t.Fatalf("Clock().Last() = %d, below the imported stamp %d", last, ahead)
	}
	mustPut(t, s, "k", "local", 0)
	if e, _ := s.GetEntry("k"); e.Stamp <= ahead {
		t.Fatalf("a write after the import got stamp %d, not above %d", e.Stamp, ahead)
	}
	wantGet(t, s, "k", "local")
	// Even a refused entry moves the clock.
	further := ahead + 100<<logicalBits
	mustImport(t, s, Entry{Key: "x", Value: []byte("v"), Stamp: further, ExpireAt: 1}, false)
	if s.Clock().Next() <= further {
		t.Fatal("the clock did not observe a refused entry's stamp")
	}
}

func TestImportKeepsTheTagIndexExact(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 4})
	now := clk.Now().UnixMilli()
	for i := range 20 {
		tags := []string{"all", fmt.Sprint("m", i%3)}
		mustImport(t, s, Entry{Key: fmt.Sprint("k", i), Value: []byte("v"), Tags: tags, Stamp: stampAt(now, uint64(i+1))}, true)
	}
	mustPut(t, s, "local", "v", 0, "all")
	// A newer import with other tags: the key moves from all and m0 to m9.
	mustImport(t, s, Entry{Key: "k0", Value: []byte("w"), Tags: []string{"m9"}, Stamp: s.Clock().Next()}, true)
	wantKeys(t, s, "m9", "k0")
	wantKeys(t, s, "m0", "k12", "k15", "k18", "k3", "k6", "k9")
	if got := len(s.KeysByTag("all", 0)); got != 20 { // 19 imported, and local
		t.Fatalf("KeysByTag(all) lists %d, want 20", got)
	}
	want := map[string]int{"all": 20, "m0": 6, "m1": 7, "m2": 6, "m9": 1}
	for _, tc := range s.Tags() {
		if want[tc.Tag] != tc.Keys {
			t.Errorf("Tags(): %s has %d keys, want %d", tc.Tag, tc.Keys, want[tc.Tag])
		}
		delete(want, tc.Tag)
	}
	if len(want) != 0 {
		t.Errorf("Tags() misses %v", want)
	}
	if st := s.Stats(); st.Tags != 5 || st.Items != 21 || st.Imports != 21 || st.Puts != 1 {
		t.Fatalf("Stats = %+v, want 5 tags, 21 items, 21 imports, 1 put", st)
	}
	checkConsistent(t, s)
	if n := s.InvalidateTag("all"); n != 20 {
		t.Fatalf("InvalidateTag(all) = %d", n)
	}
	checkConsistent(t, s)
	checkEmptyAfterFlush(t, s)
}

// An entry stamped before an invalidation of one of its tags, or before a FLUSH, that
// the store has seen is not installed; one stamped after is.
func TestImportRespectsInvalidationsTheStoreHasSeen(t *testing.T) {
	s := newTestStore(t, Config{})
	before := s.Clock().Next()
	mustPut(t, s, "killed", "v", 0, "t")
	s.InvalidateTag("t")
	s.InvalidateTag("u")                 // no state: nothing recorded
	mustPut(t, s, "keeper", "v", 0, "t") // keeps t's state, and its stamp, recorded
	s.WaitReclaim()
	after := s.Clock().Next()
	mustImport(t, s, Entry{Key: "a", Value: []byte("v"), Tags: []string{"t", "x"}, Stamp: before}, false)
	mustImport(t, s, Entry{Key: "b", Value: []byte("v"), Tags: []string{"x"}, Stamp: before}, true)
	mustImport(t, s, Entry{Key: "c", Value: []byte("v"), Tags: []string{"t"}, Stamp: after}, true)
	wantMiss(t, s, "a")
	wantKeys(t, s, "x", "b")
	wantKeys(t, s, "t", "c", "keeper")
	// The entry an invalidated import overwrote goes too.
	mustImport(t, s, Entry{Key: "b", Value: []byte("v"), Tags: []string{"t"}, Stamp: before + 1}, false)
	wantMiss(t, s, "b")
	checkConsistent(t, s)

	s.Flush()
	mustImport(t, s, Entry{Key: "d", Value: []byte("v"), Stamp: after}, false)
	mustImport(t, s, Entry{Key: "d", Value: []byte("v"), Stamp: s.Clock().Next()}, true)
	checkConsistent(t, s)
}

// An import racing an invalidation step by step: the invalidation has taken t's keys and
// its stamp; an import stamped before it is refused, one stamped after survives.
func TestImportDuringAnInvalidation(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "k", "v", 0, "t")
	older := s.Clock().Next()
	inv := s.beginInvalidation([]string{"t"})
	mustImport(t, s, Entry{Key: "old", Value: []byte("v"), Tags: []string{"t"}, Stamp: older}, false)
	newer := s.Clock().Next()
	mustImport(t, s, Entry{Key: "new", Value: []byte("v"), Tags: []string{"t"}, Stamp: newer}, true)
	if n := inv.finish(); n != 1 {
		t.Fatalf("invalidation = %d, want 1", n)
	}
	wantMiss(t, s, "old")
	wantGet(t, s, "new", "v")
	wantKeys(t, s, "t", "new")
	checkConsistent(t, s)
}

func TestImportValidatesLikePut(t *testing.T) {
	s := newTestStore(t, Config{MaxKeyBytes: 4, MaxValueBytes: 4, MaxTags: 2, MaxTagBytes: 3})
	stamp := s.Clock().Next()
	for _, c := range []struct {
		e    Entry
		want error
	}{
		{Entry{Key: "", Stamp: stamp}, ErrEmptyKey},
		{Entry{Key: "kkkkk", Stamp: stamp}, ErrLimit},
		{Entry{Key: "k", Value: []byte("vvvvv"), Stamp: stamp}, ErrLimit},
		{Entry{Key: "k", Tags: []string{"a", "b", "c"}, Stamp: stamp}, ErrLimit},
		{Entry{Key: "k", Tags: []string{"tttt"}, Stamp: stamp}, ErrLimit},
		{Entry{Key: "k"}, ErrNoStamp},
	} {
		ok, err := s.Import(c.e)
		if ok || !errors.Is(err, c.want) {
			t.Errorf("Import(%+v) = %v, %v; want %v", c.e, ok, err, c.want)
		}
		// Put gives the same error for the same input.
		if c.want != ErrNoStamp {
			if perr := s.Put(c.e.Key, c.e.Value, 0, c.e.Tags); perr == nil || perr.Error() != err.Error() {
				t.Errorf("Put(%+v) = %v, Import gave %v", c.e, perr, err)
			}
		}
	}
	if st := s.Stats(); st.Items != 0 || st.Imports != 0 {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestImportEvictsUnderTheMemoryLimit(t *testing.T) {
	const limit = 32 << 10
	s := newTestStore(t, Config{MaxMemory: limit, Partitions: 8})
	val := make([]byte, 200)
	for i := range 2000 {
		mustImport(t, s, Entry{Key: fmt.Sprint("k", i), Value: val, Tags: []string{fmt.Sprint("t", i%10)},
			Stamp: s.Clock().Next()}, true)
		if m := s.Stats().Bytes; m > limit {
			t.Fatalf("after import %d: %d bytes held, limit %d", i, m, limit)
		}
	}
	if st := s.Stats(); st.Evictions == 0 || st.Imports != 2000 {
		t.Fatalf("Stats = %+v", st)
	}
	checkConsistent(t, s)
}

// Import racing Put, Get, INV_TAG, FLUSH and DROP on a small key space, under -race; then
// the index must be exact. Promise 2 is checked on each importer's own key: an entry
// imported before an INV_TAG of its tag was issued is never read after it returns.
func TestImportRacingWritesAndInvalidations(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 4, TagShards: 2, SweepInterval: time.Millisecond})
	tags := []string{"t0", "t1", "t2"}
	var violations atomic.Int64
	importer := func(w, i int) {
		rng := rand.New(rand.NewPCG(uint64(w), uint64(i)))
		stamp := s.Clock().Next()
		if rng.IntN(3) == 0 {
			stamp -= uint64(rng.IntN(50)) << logicalBits // from a node whose clock lags
		}
		var expireAt int64
		if rng.IntN(4) == 0 {
			expireAt = time.Now().UnixMilli() + int64(rng.IntN(5)) - 1
		}
		_, err := s.Import(Entry{Key: fmt.Sprint("k", rng.IntN(16)), Value: []byte(strconv.Itoa(i)),
			Tags: randTagsOf(rng, tags), Stamp: stamp, ExpireAt: expireAt})
		if err != nil {
			t.Error(err)
		}
	}
	checker := func(w, i int) {
		own, tag := fmt.Sprint("own", w), tags[i%len(tags)]
		if _, err := s.Import(Entry{Key: own, Value: []byte(strconv.Itoa(i)), Tags: []string{tag},
			Stamp: s.Clock().Next()}); err != nil {
			t.Error(err)
		}
		s.InvalidateTag(tag)
		if v, ok := s.Get(own); ok {
			violations.Add(1)
			t.Errorf("%s = %q survived an INV_TAG %s issued after its import", own, v, tag)
		}
	}
	writer := func(w, i int) {
		rng := rand.New(rand.NewPCG(uint64(w), uint64(i)))
		k := fmt.Sprint("k", rng.IntN(16))
		switch rng.IntN(4) {
		case 0:
			_, _ = s.Incr(k, 1, 0, nil)
		default:
			_ = s.Put(k, []byte("p"), 0, randTagsOf(rng, tags))
		}
	}
	reader := func(w, i int) {
		s.Get(fmt.Sprint("k", i%16))
		if keys := s.KeysByTag(tags[i%len(tags)], 0); !slices.IsSorted(keys) {
			t.Errorf("KeysByTag not sorted: %q", keys)
		}
	}
	invalidator := func(w, i int) {
		switch i % 20 {
		case 0:
			s.Flush()
		case 1:
			s.DropPartition(i % s.Partitions())
		default:
			s.InvalidateTagsAny([]string{tags[i%len(tags)]})
		}
	}
	runWithTimeout(t, 60*time.Second, func() {
		runFor(stressDuration()/2, importer, importer, importer, checker, checker, writer, reader, invalidator)
	})
	if violations.Load() > 0 {
		t.Fatalf("%d violations", violations.Load())
	}
	s.Close()
	checkConsistent(t, s)
	checkEmptyAfterFlush(t, s)
}

func randTagsOf(rng *rand.Rand, tags []string) []string {
	out := make([]string, rng.IntN(3))
	for i := range out {
		out[i] = tags[rng.IntN(len(tags))]
	}
	return out
}

// An imported entry whose stamp equals an invalidation's (stamps from two nodes can
// collide) is not before it: readers serve it, and the invalidation's reclaim keeps it.
func TestImportStampedLikeAnInvalidationSurvivesIt(t *testing.T) {
	s := newTestStore(t, Config{})
	release := holdReclaimer(t, s)
	mustPut(t, s, "k", "old", 0, "t")
	s.InvalidateTag("t")
	at := s.tags.invalidatedAt("t")
	mustImport(t, s, Entry{Key: "k", Value: []byte("v"), Tags: []string{"t"}, Stamp: at}, true)
	wantGet(t, s, "k", "v")
	release()
	s.WaitReclaim()
	wantGet(t, s, "k", "v")
	wantKeys(t, s, "t", "k")
	checkConsistent(t, s)
}
