package cache

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func TestNewRejectsNonsenseConfig(t *testing.T) {
	cfgs := []Config{
		{Partitions: -1},
		{TagShards: -1},
		{MaxMemory: -1},
		{MaxKeyBytes: -1},
		{MaxValueBytes: -1},
		{MaxTags: -1},
		{MaxTagBytes: -1},
		{MaxKeyBytes: MaxKeyBytesLimit + 1},
		{MaxTags: MaxTagsLimit + 1},
		{SweepInterval: time.Microsecond},
	}
	if tooLarge := int64(MaxValueBytesLimit) + 1; strconv.IntSize == 64 { // an int holds it
		cfgs = append(cfgs, Config{MaxValueBytes: int(tooLarge)})
	}
	for _, cfg := range cfgs {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) succeeded, want an error", cfg)
		}
	}
}

func TestNewFillsDefaults(t *testing.T) {
	s := newTestStore(t, Config{})
	got, want := s.Config(), DefaultConfig()
	if got.Partitions != want.Partitions || got.TagShards != want.TagShards ||
		got.MaxKeyBytes != want.MaxKeyBytes || got.MaxValueBytes != want.MaxValueBytes ||
		got.MaxTags != want.MaxTags || got.MaxTagBytes != want.MaxTagBytes ||
		got.SweepInterval != want.SweepInterval || got.Now == nil || got.MaxMemory != 0 {
		t.Fatalf("Config() = %+v, want the defaults %+v", got, want)
	}
	if s.Partitions() != DefaultPartitions {
		t.Fatalf("Partitions() = %d, want %d", s.Partitions(), DefaultPartitions)
	}
}

func TestPutThenGetReturnsTheLatestValue(t *testing.T) {
	s := newTestStore(t, Config{})
	wantMiss(t, s, "k")
	mustPut(t, s, "k", "v1", 0)
	wantGet(t, s, "k", "v1")
	mustPut(t, s, "k", "v2", 0, "a")
	wantGet(t, s, "k", "v2")
	checkConsistent(t, s)
}

func TestPutKeepsItsOwnCopyOfTheValue(t *testing.T) {
	s := newTestStore(t, Config{})
	buf := []byte("abc")
	if err := s.Put("k", buf, 0, nil); err != nil {
		t.Fatal(err)
	}
	buf[0] = 'X'
	wantGet(t, s, "k", "abc")
}

func TestPutEmptyValueIsAHit(t *testing.T) {
	s := newTestStore(t, Config{})
	if err := s.Put("k", nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	v, ok := s.Get("k")
	if !ok || v == nil || len(v) != 0 {
		t.Fatalf("Get = %q, %v; want an empty, non-nil value and a hit", v, ok)
	}
}

func TestEmptyKeyIsRejected(t *testing.T) {
	s := newTestStore(t, Config{})
	if err := s.Put("", []byte("v"), 0, nil); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Put: err = %v, want ErrEmptyKey", err)
	}
	if _, err := s.Add("", []byte("v"), 0, nil); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Add: err = %v, want ErrEmptyKey", err)
	}
	if _, err := s.Incr("", 1, 0, nil); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Incr: err = %v, want ErrEmptyKey", err)
	}
	if _, err := s.Decr("", 1, 0, nil); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Decr: err = %v, want ErrEmptyKey", err)
	}
	if ErrEmptyKey.Error() != "missing_key" {
		t.Errorf("ErrEmptyKey = %q, want the protocol reason missing_key", ErrEmptyKey)
	}
	if s.Stats().Items != 0 {
		t.Fatal("a rejected write stored something")
	}
}

func TestGetEntryReportsMetadata(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	now := clk.Now().UnixMilli()
	mustPut(t, s, "k", "v", 1500*time.Millisecond, "b", "a", "", "b")
	e, ok := s.GetEntry("k")
	if !ok {
		t.Fatal("GetEntry missed")
	}
	if e.Key != "k" || string(e.Value) != "v" {
		t.Fatalf("GetEntry = %+v", e)
	}
	if !slices.Equal(e.Tags, []string{"a", "b"}) {
		t.Fatalf("Tags = %q, want sorted, deduplicated, without empties: [a b]", e.Tags)
	}
	if e.ExpireAt != now+1500 {
		t.Fatalf("ExpireAt = %d, want %d", e.ExpireAt, now+1500)
	}
	if e.Created != now {
		t.Fatalf("Created = %d, want %d", e.Created, now)
	}
	if got := e.TTLMillis(now + 500); got != 1000 {
		t.Fatalf("TTLMillis = %d, want 1000", got)
	}
	if got := e.TTLMillis(now + 5000); got != 0 {
		t.Fatalf("TTLMillis after expiry = %d, want 0", got)
	}
	mustPut(t, s, "k", "w", 0)
	e2, _ := s.GetEntry("k")
	if e2.Stamp <= e.Stamp {
		t.Fatalf("rewrite stamp %d is not after %d", e2.Stamp, e.Stamp)
	}
	if e2.ExpireAt != 0 || e2.TTLMillis(now) != -1 || len(e2.Tags) != 0 {
		t.Fatalf("rewrite without TTL or tags = %+v", e2)
	}
	if _, ok := s.GetEntry("nope"); ok {
		t.Fatal("GetEntry of an absent key hit")
	}
}

func TestAddStoresOnlyWhenAbsent(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	add := func(key, value string, ttl time.Duration, want bool) {
		t.Helper()
		got, err := s.Add(key, []byte(value), ttl, []string{"t"})
		if err != nil || got != want {
			t.Fatalf("Add(%q, %q) = %v, %v; want %v", key, value, got, err, want)
		}
	}
	add("k", "1", 0, true)
	add("k", "2", 0, false)
	wantGet(t, s, "k", "1")

	s.Del("k")
	add("k", "3", 10*time.Millisecond, true)
	clk.Advance(10 * time.Millisecond)
	add("k", "4", 0, true) // the expired entry counts as absent
	wantGet(t, s, "k", "4")

	s.InvalidateTag("t")
	add("k", "5", 0, true)
	wantGet(t, s, "k", "5")

	s.Flush()
	add("k", "6", 0, true)
	wantGet(t, s, "k", "6")
	checkConsistent(t, s)
}

func TestDelReportsWhetherAnEntryWasLive(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	if s.Del("k") {
		t.Fatal("Del of an absent key reported true")
	}
	mustPut(t, s, "k", "v", 0, "t")
	if !s.Del("k") {
		t.Fatal("Del of a live key reported false")
	}
	wantMiss(t, s, "k")
	wantKeys(t, s, "t")
	if s.Del("k") {
		t.Fatal("second Del reported true")
	}

	mustPut(t, s, "e", "v", time.Millisecond, "t")
	clk.Advance(time.Millisecond)
	if s.Del("e") {
		t.Fatal("Del of an expired key reported true")
	}
	st := s.Stats()
	if st.Items != 0 || st.Expirations != 1 {
		t.Fatalf("after deleting an expired entry: Items=%d Expirations=%d, want 0 and 1", st.Items, st.Expirations)
	}
	checkEmptyAfterFlush(t, s)
}

func TestInvalidateKeysCountsLiveEntries(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	mustPut(t, s, "a", "1", 0)
	mustPut(t, s, "b", "2", 0, "t")
	mustPut(t, s, "c", "3", time.Millisecond)
	clk.Advance(time.Millisecond)
	if n := s.InvalidateKeys([]string{"a", "b", "c", "missing", "", "a"}); n != 2 {
		t.Fatalf("InvalidateKeys = %d, want 2", n)
	}
	wantMiss(t, s, "a")
	wantMiss(t, s, "b")
	if n := s.InvalidateKeys(nil); n != 0 {
		t.Fatalf("InvalidateKeys(nil) = %d", n)
	}
	if st := s.Stats(); st.Invalidations != 2 || st.Items != 0 {
		t.Fatalf("Stats = %+v, want 2 invalidations and no items", st)
	}
	checkConsistent(t, s)
}

func TestInvalidateTagRemovesEveryEntryCarryingIt(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	mustPut(t, s, "a", "1", 0, "t")
	mustPut(t, s, "b", "2", 0, "t", "u")
	mustPut(t, s, "c", "3", 0, "u")
	mustPut(t, s, "d", "4", 0)
	mustPut(t, s, "x", "5", time.Millisecond, "t")
	clk.Advance(time.Millisecond)

	if n := s.InvalidateTag("t"); n != 2 {
		t.Fatalf("InvalidateTag = %d, want 2 (the expired entry is not counted)", n)
	}
	wantMiss(t, s, "a")
	wantMiss(t, s, "b")
	wantGet(t, s, "c", "3")
	wantGet(t, s, "d", "4")
	wantKeys(t, s, "t")
	wantKeys(t, s, "u", "c")
	if n := s.InvalidateTag("t"); n != 0 {
		t.Fatalf("second InvalidateTag = %d", n)
	}
	if n := s.InvalidateTag("never-used"); n != 0 {
		t.Fatalf("InvalidateTag of an unknown tag = %d", n)
	}
	if n := s.InvalidateTag(""); n != 0 {
		t.Fatalf("InvalidateTag(\"\") = %d", n)
	}
	s.WaitReclaim() // the expired entry is counted when the reclaim removes it
	if st := s.Stats(); st.Invalidations != 2 || st.Expirations != 1 {
		t.Fatalf("Stats = %+v, want 2 invalidations, 1 expiration", st)
	}
	checkConsistent(t, s)
	// Written after the invalidation: unaffected by it.
	mustPut(t, s, "a", "new", 0, "t")
	wantGet(t, s, "a", "new")
	checkEmptyAfterFlush(t, s)
}

func TestInvalidateTagsAnyRemovesTheUnion(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "a", "1", 0, "x")
	mustPut(t, s, "b", "2", 0, "x", "y")
	mustPut(t, s, "c", "3", 0, "y")
	mustPut(t, s, "d", "4", 0, "z")
	if n := s.InvalidateTagsAny([]string{"y", "x", "x", "", "nope"}); n != 3 {
		t.Fatalf("InvalidateTagsAny = %d, want 3 (b counted once)", n)
	}
	for _, k := range []string{"a", "b", "c"} {
		wantMiss(t, s, k)
	}
	wantGet(t, s, "d", "4")
	if n := s.InvalidateTagsAny(nil); n != 0 {
		t.Fatalf("InvalidateTagsAny(nil) = %d", n)
	}
	checkConsistent(t, s)
}

func TestInvalidateTagsAllRemovesTheIntersection(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "a", "1", 0, "x")
	mustPut(t, s, "b", "2", 0, "x", "y")
	mustPut(t, s, "c", "3", 0, "y", "x", "z")
	mustPut(t, s, "d", "4", 0, "y")
	if n := s.InvalidateTagsAll([]string{"x", "y", "y"}); n != 2 {
		t.Fatalf("InvalidateTagsAll = %d, want 2", n)
	}
	wantGet(t, s, "a", "1")
	wantMiss(t, s, "b")
	wantMiss(t, s, "c")
	wantGet(t, s, "d", "4")
	wantKeys(t, s, "x", "a")
	wantKeys(t, s, "y", "d")
	wantKeys(t, s, "z")
	if n := s.InvalidateTagsAll([]string{"x", "nope"}); n != 0 {
		t.Fatalf("InvalidateTagsAll with an unknown tag = %d", n)
	}
	if n := s.InvalidateTagsAll(nil); n != 0 {
		t.Fatalf("InvalidateTagsAll(nil) = %d", n)
	}
	if st := s.Stats(); st.Invalidations != 2 {
		t.Fatalf("Invalidations = %d, want 2", st.Invalidations)
	}
	checkConsistent(t, s)
}

func TestKeysByTagListsLiveKeysSorted(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	for _, k := range []string{"d", "b", "a", "c"} {
		mustPut(t, s, k, "v", 0, "t")
	}
	mustPut(t, s, "e", "v", time.Millisecond, "t")
	mustPut(t, s, "f", "v", 0, "other")
	clk.Advance(time.Millisecond)
	wantKeys(t, s, "t", "a", "b", "c", "d")
	if got := s.KeysByTag("t", 2); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("KeysByTag limit 2 = %q", got)
	}
	if got := s.KeysByTag("t", -1); len(got) != 4 {
		t.Fatalf("KeysByTag limit -1 = %q, want all", got)
	}
	if got := s.KeysByTag("nope", 0); len(got) != 0 {
		t.Fatalf("KeysByTag of an unknown tag = %q", got)
	}
	mustPut(t, s, "b", "v", 0) // rewritten without the tag
	wantKeys(t, s, "t", "a", "c", "d")
	checkConsistent(t, s)
}

func TestTagsCountsKeysLargestFirst(t *testing.T) {
	s := newTestStore(t, Config{})
	mustPut(t, s, "1", "v", 0, "b", "c")
	mustPut(t, s, "2", "v", 0, "b", "a")
	mustPut(t, s, "3", "v", 0, "b", "a")
	mustPut(t, s, "4", "v", 0, "c")
	want := []TagCount{{"b", 3}, {"a", 2}, {"c", 2}}
	if got := s.Tags(); !slices.Equal(got, want) {
		t.Fatalf("Tags = %v, want %v", got, want)
	}
	s.Flush()
	if got := s.Tags(); len(got) != 0 {
		t.Fatalf("Tags after Flush = %v", got)
	}
}

func TestFlushRemovesEverything(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	for i := range 50 {
		mustPut(t, s, fmt.Sprint("k", i), "v", 0, fmt.Sprint("t", i%7), "all")
	}
	mustPut(t, s, "exp", "v", time.Millisecond)
	clk.Advance(time.Millisecond)
	if n := s.Flush(); n != 50 {
		t.Fatalf("Flush = %d, want 50", n)
	}
	wantMiss(t, s, "k1")
	wantKeys(t, s, "all")
	st := s.Stats()
	if st.Items != 0 || st.Bytes != 0 || st.Tags != 0 || st.Invalidations != 50 || st.Expirations != 1 {
		t.Fatalf("Stats after Flush = %+v", st)
	}
	mustPut(t, s, "k1", "after", 0, "all")
	wantGet(t, s, "k1", "after")
	wantKeys(t, s, "all", "k1")
	checkEmptyAfterFlush(t, s)
}

func TestPartitionOfIsXXHashModPartitions(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 7})
	for i := range 100 {
		k := fmt.Sprint("key-", i)
		p := s.PartitionOf(k)
		if want := int(xxhash.Sum64String(k) % 7); p != want {
			t.Fatalf("PartitionOf(%q) = %d, want %d", k, p, want)
		}
		if p != s.PartitionOf(k) {
			t.Fatal("PartitionOf is not stable")
		}
	}
}

// keysInPartition returns n keys of partition p.
func keysInPartition(s *Store, p, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		if k := fmt.Sprint("k", i); s.PartitionOf(k) == p {
			out = append(out, k)
		}
	}
	return out
}

func TestDropPartitionRemovesOnlyThatPartition(t *testing.T) {
	s := newTestStore(t, Config{Partitions: 4})
	in := keysInPartition(s, 2, 5)
	out := keysInPartition(s, 3, 5)
	for _, k := range in {
		mustPut(t, s, k, "v", 0, "t")
	}
	for _, k := range out {
		mustPut(t, s, k, "v", 0, "t")
	}
	if got := s.PartitionLen(2); got != 5 {
		t.Fatalf("PartitionLen(2) = %d", got)
	}
	if n := s.DropPartition(2); n != 5 {
		t.Fatalf("DropPartition = %d, want 5", n)
	}
	if got := s.PartitionLen(2); got != 0 {
		t.Fatalf("PartitionLen(2) after drop = %d", got)
	}
	for _, k := range in {
		wantMiss(t, s, k)
	}
	wantKeys(t, s, "t", out...)
	if n := s.DropPartition(2); n != 0 {
		t.Fatalf("second DropPartition = %d", n)
	}
	checkConsistent(t, s)
}

func TestRangePartitionWalksLiveEntriesInKeyOrder(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 2})
	keys := keysInPartition(s, 1, 10)
	for _, k := range keys {
		mustPut(t, s, k, "v:"+k, 0, "t")
	}
	expiring := keysInPartition(s, 1, 11)[10]
	mustPut(t, s, expiring, "v", time.Millisecond)
	clk.Advance(time.Millisecond)
	slices.Sort(keys)

	var got []string
	s.RangePartition(1, "", func(e Entry) bool {
		if string(e.Value) != "v:"+e.Key || !slices.Equal(e.Tags, []string{"t"}) {
			t.Errorf("entry %+v", e)
		}
		got = append(got, e.Key)
		return true
	})
	if !slices.Equal(got, keys) {
		t.Fatalf("RangePartition = %q, want %q", got, keys)
	}

	got = nil
	s.RangePartition(1, keys[3], func(e Entry) bool {
		got = append(got, e.Key)
		return len(got) < 2
	})
	if !slices.Equal(got, keys[4:6]) {
		t.Fatalf("RangePartition after %q stopping at 2 = %q, want %q", keys[3], got, keys[4:6])
	}

	// fn may call the store, even on the same partition.
	runWithTimeout(t, 5*time.Second, func() {
		s.RangePartition(1, "", func(e Entry) bool {
			_ = s.Put(e.Key, []byte("rewritten"), 0, nil)
			return true
		})
	})
	wantGet(t, s, keys[0], "rewritten")
	checkConsistent(t, s)
}

func TestStatsCountOperations(t *testing.T) {
	s, clk := newClockedStore(t, Config{})
	mustPut(t, s, "a", "1", 0, "t")
	mustPut(t, s, "b", "1", time.Millisecond, "t")
	if _, err := s.Add("a", []byte("x"), 0, nil); err != nil { // not added: not a put
		t.Fatal(err)
	}
	if _, err := s.Add("c", []byte("x"), 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Incr("n", 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Decr("n", 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	s.Get("a")
	s.Get("a")
	s.Get("missing")
	clk.Advance(time.Millisecond)
	s.Get("b") // expired: a miss, and removed
	s.InvalidateTag("t")
	s.WaitReclaim() // Items and Tags count the killed entry until it is reclaimed

	st := s.Stats()
	want := Stats{Hits: 2, Misses: 2, Puts: 5, Invalidations: 1, Expirations: 1, Items: 2, Tags: 0}
	st.Bytes = 0
	if st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	if r := st.HitRatio(); r != 0.5 {
		t.Fatalf("HitRatio = %v, want 0.5", r)
	}
	if r := (Stats{}).HitRatio(); r != 0 {
		t.Fatalf("HitRatio with no reads = %v", r)
	}
	if s.Stats().Bytes <= 0 {
		t.Fatal("Bytes is not positive with entries held")
	}
	checkEmptyAfterFlush(t, s)
}

func TestSweepRemovesOnlyExpiredEntries(t *testing.T) {
	s, clk := newClockedStore(t, Config{Partitions: 3})
	for i := range 300 {
		mustPut(t, s, fmt.Sprint("short", i), "v", 10*time.Millisecond, "t")
		mustPut(t, s, fmt.Sprint("long", i), "v", time.Hour, "t")
		mustPut(t, s, fmt.Sprint("none", i), "v", 0, "t")
	}
	if n := s.Sweep(); n != 0 {
		t.Fatalf("Sweep before anything expired removed %d", n)
	}
	clk.Advance(10 * time.Millisecond)
	removed := 0
	for range 100 {
		removed += s.Sweep()
		if s.Stats().Items == 600 {
			break
		}
	}
	if removed != 300 {
		t.Fatalf("sweeps removed %d, want 300", removed)
	}
	st := s.Stats()
	if st.Items != 600 || st.Expirations != 300 {
		t.Fatalf("after sweeping: Items=%d Expirations=%d", st.Items, st.Expirations)
	}
	wantGet(t, s, "long0", "v")
	wantGet(t, s, "none0", "v")
	if got := len(s.KeysByTag("t", 0)); got != 600 {
		t.Fatalf("KeysByTag lists %d keys, want 600", got)
	}
	checkConsistent(t, s)
}

func TestBackgroundSweeperReclaimsExpiredEntries(t *testing.T) {
	s := newTestStore(t, Config{SweepInterval: time.Millisecond})
	for i := range 100 {
		mustPut(t, s, fmt.Sprint("k", i), "v", time.Millisecond, "t")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Items > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("sweeper left %d expired entries after 5s", s.Stats().Items)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	s.Close() // idempotent
	checkConsistent(t, s)
	if st := s.Stats(); st.Bytes != 0 || st.Tags != 0 {
		t.Fatalf("after sweeping everything: %+v", st)
	}
}

func TestLimitsAreEnforcedWithNamedErrors(t *testing.T) {
	s := newTestStore(t, Config{MaxKeyBytes: 8, MaxValueBytes: 16, MaxTags: 2, MaxTagBytes: 4})
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		name  string
		key   string
		value string
		tags  []string
		want  string
	}{
		{"key", long(9), "v", nil, "key too long (limit 8 bytes)"},
		{"value", "k", long(17), nil, "value too large (limit 16 bytes)"},
		{"tag count", "k", "v", []string{"a", "b", "c"}, "too many tags (limit 2 tags)"},
		{"tag length", "k", "v", []string{long(5)}, "tag too long (limit 4 bytes)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check := func(op string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: no error, want %q", op, c.want)
				}
				if err.Error() != c.want {
					t.Fatalf("%s: error %q, want %q", op, err, c.want)
				}
				if !errors.Is(err, ErrLimit) {
					t.Fatalf("%s: errors.Is(err, ErrLimit) is false", op)
				}
				var le *LimitError
				if !errors.As(err, &le) {
					t.Fatalf("%s: not a *LimitError", op)
				}
			}
			check("Put", s.Put(c.key, []byte(c.value), 0, c.tags))
			_, err := s.Add(c.key, []byte(c.value), 0, c.tags)
			check("Add", err)
			if c.value == "v" { // INCR has no value to limit
				_, err = s.Incr(c.key, 1, 0, c.tags)
				check("Incr", err)
				_, err = s.Decr(c.key, 1, 0, c.tags)
				check("Decr", err)
			}
		})
	}
	if st := s.Stats(); st.Items != 0 || st.Tags != 0 || st.Bytes != 0 {
		t.Fatalf("rejected writes left state behind: %+v", st)
	}

	// At the limits exactly, and duplicates or empties do not count toward MaxTags.
	mustPut(t, s, long(8), long(16), 0, "abcd", "efgh", "abcd", "")
	wantGet(t, s, long(8), long(16))
	if errors.Is(ErrNotInteger, ErrLimit) || errors.Is(ErrOverflow, ErrLimit) {
		t.Fatal("non-limit errors match ErrLimit")
	}
	checkConsistent(t, s)
}

func TestClockStampsStrictlyIncrease(t *testing.T) {
	clk := newFakeClock()
	c := NewClock(clk.Now)
	prev := c.Next()
	for range 1000 {
		next := c.Next()
		if next <= prev {
			t.Fatalf("Next = %d after %d", next, prev)
		}
		prev = next
	}
	if got := StampTime(prev).UnixMilli(); got != clk.ms.Load() {
		t.Fatalf("StampTime = %d, want %d", got, clk.ms.Load())
	}
	c.Observe(prev + 1000)
	if next := c.Next(); next <= prev+1000 {
		t.Fatalf("Next after Observe = %d, want > %d", next, prev+1000)
	}
	c.Observe(1) // an older remote stamp changes nothing
	if c.Last() < prev+1000 {
		t.Fatal("Observe moved the clock backwards")
	}
	clk.Advance(time.Second)
	if next := c.Next(); StampTime(next).UnixMilli() != clk.ms.Load() {
		t.Fatalf("stamp after the wall clock moved: %v", StampTime(next))
	}
}
