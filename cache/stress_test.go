package cache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestConcurrentMixedOperationsKeepIndexExact runs every operation at once on a small key
// and tag space, with the background sweeper running and short TTLs expiring, then checks
// the store's internal consistency: the tag index holds exactly the live keys, and memory
// accounting returns to zero. Run it under -race.
func TestConcurrentMixedOperationsKeepIndexExact(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"unbounded", Config{Partitions: 8, TagShards: 4, SweepInterval: time.Millisecond}},
		{"memory limit", Config{Partitions: 8, TagShards: 4, SweepInterval: time.Millisecond, MaxMemory: 8 << 10}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTestStore(t, c.cfg)
			const workers = 12
			fns := make([]func(int, int), workers)
			for w := range fns {
				rng := rand.New(rand.NewPCG(uint64(w), 42))
				fns[w] = func(w, i int) { mixedOp(t, s, rng, w, i) }
			}
			runFor(stressDuration()/2, fns...)
			if t.Failed() {
				return
			}
			// Stop the background sweeper first: the check compares counters with what the
			// shards hold, one shard at a time, and a sweep between the two would differ.
			s.Close()
			checkConsistent(t, s)
			for _, tag := range stressTags {
				s.InvalidateTag(tag)
				wantKeys(t, s, tag)
			}
			checkConsistent(t, s)
			checkEmptyAfterFlush(t, s)
		})
	}
}

var stressTags = []string{"t0", "t1", "t2", "t3", "t4", "t5"}

func randTags(rng *rand.Rand) []string {
	n := rng.IntN(4)
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = stressTags[rng.IntN(len(stressTags))]
	}
	return out
}

func randTTL(rng *rand.Rand) time.Duration {
	switch rng.IntN(10) {
	case 0:
		return ExpireNow
	case 1, 2:
		return time.Duration(1+rng.IntN(5)) * time.Millisecond
	default:
		return 0
	}
}

// mixedOp performs one random operation. Only checks that hold under any concurrency
// are made here; the index is checked once everything has stopped.
func mixedOp(t *testing.T, s *Store, rng *rand.Rand, w, i int) {
	key := fmt.Sprint("k", rng.IntN(32))
	tag := stressTags[rng.IntN(len(stressTags))]
	switch op := rng.IntN(100); {
	case op < 20:
		_ = s.Put(key, []byte(strconv.Itoa(rng.IntN(100))), randTTL(rng), randTags(rng))
	case op < 25:
		_, _ = s.Add(key, []byte("a"), randTTL(rng), randTags(rng))
	case op < 33:
		var tags []string
		if rng.IntN(2) == 0 {
			tags = randTags(rng)
		}
		if rng.IntN(2) == 0 {
			_, _ = s.Incr(key, int64(rng.IntN(5)), randTTL(rng), tags)
		} else {
			_, _ = s.Decr(key, int64(rng.IntN(5)), 0, tags)
		}
	case op < 38:
		s.Del(key)
	case op < 55:
		s.Get(key)
	case op < 60:
		if e, ok := s.GetEntry(key); ok && !slices.IsSorted(e.Tags) {
			t.Errorf("GetEntry(%s) tags unsorted: %q", key, e.Tags)
		}
	case op < 66:
		s.InvalidateTag(tag)
	case op < 69:
		s.InvalidateTagsAny([]string{tag, stressTags[rng.IntN(len(stressTags))]})
	case op < 72:
		s.InvalidateTagsAll([]string{tag, stressTags[rng.IntN(len(stressTags))]})
	case op < 74:
		s.InvalidateKeys([]string{key, fmt.Sprint("k", rng.IntN(32))})
	case op < 80:
		keys := s.KeysByTag(tag, rng.IntN(5))
		if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
			t.Errorf("KeysByTag(%s) not sorted and unique: %q", tag, keys)
		}
	case op < 82:
		s.Tags()
	case op < 84:
		s.Sweep()
	case op < 86:
		if st := s.Stats(); st.Items < 0 || st.Bytes < 0 || st.Tags < 0 {
			t.Errorf("negative Stats: %+v", st)
		}
	case op < 88:
		s.RangePartition(s.PartitionOf(key), "", func(Entry) bool { return rng.IntN(4) != 0 })
	case op < 90:
		_, _ = s.Set(key, []byte("s"), SetOptions{TTL: randTTL(rng), Tags: randTags(rng), KeepTTL: rng.IntN(2) == 0, Mode: SetMode(rng.IntN(3))})
	case op < 91:
		s.SetTTL(key, randTTL(rng))
	case op < 92:
		if rng.IntN(10) == 0 {
			s.Flush()
		} else {
			s.DropPartition(rng.IntN(s.Partitions()))
		}
	case op < 95:
		// An entry handed over by a peer whose clock may lag or lead ours, possibly
		// expired or about to expire.
		stamp := s.Clock().Next()
		if rng.IntN(2) == 0 {
			stamp -= uint64(rng.IntN(20)) << logicalBits
		}
		var expireAt int64
		if rng.IntN(4) == 0 {
			expireAt = time.Now().UnixMilli() + int64(rng.IntN(5)) - 1
		}
		if _, err := s.Import(Entry{Key: key, Value: []byte("i"), Tags: randTags(rng), Stamp: stamp, ExpireAt: expireAt}); err != nil {
			t.Error(err)
		}
	default:
		// Promise 2 under all of the above: a write of this worker's own key, then an
		// invalidation of its tag issued after the write returned, leaves nothing.
		own := fmt.Sprint("own", w)
		_ = s.Put(own, []byte(strconv.Itoa(i)), 0, []string{tag})
		s.InvalidateTagsAny([]string{tag})
		if v, ok := s.Get(own); ok {
			t.Errorf("%s = %q survived INV_TAG %s issued after its PUT returned", own, v, tag)
		}
	}
}
