package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchKeys = 100_000
	benchTags = 1_000
)

var benchValue = bytes.Repeat([]byte("x"), 100)

func benchKeyNames(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	return keys
}

func benchTagNames(n int) []string {
	tags := make([]string, n)
	for i := range tags {
		tags[i] = "tag:" + strconv.Itoa(i)
	}
	return tags
}

// fillParallel puts keys, each with the tags tagsOf returns, from GOMAXPROCS goroutines.
func fillParallel(b *testing.B, s *Store, keys []string, tagsOf func(i int) []string) {
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(keys); i += workers {
				if err := s.Put(keys[i], benchValue, 0, tagsOf(i)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// benchStore is a store with benchKeys entries of 100 bytes, two tags each.
func benchStore(b *testing.B) (*Store, []string, []string) {
	s := newTestStore(b, Config{})
	keys, tags := benchKeyNames(benchKeys), benchTagNames(benchTags)
	fillParallel(b, s, keys, func(i int) []string {
		return []string{tags[i%benchTags], tags[(i/benchTags)%benchTags]}
	})
	return s, keys, tags
}

var benchSeed atomic.Uint64

func benchRand() *rand.Rand { return rand.New(rand.NewPCG(benchSeed.Add(1), 7)) }

func BenchmarkGetParallel(b *testing.B) {
	s, keys, _ := benchStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := benchRand()
		for pb.Next() {
			if _, ok := s.Get(keys[rng.IntN(len(keys))]); !ok {
				b.Error("miss")
				return
			}
		}
	})
}

func BenchmarkPutParallel(b *testing.B) {
	s, keys, tags := benchStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := benchRand()
		tv := make([]string, 2)
		for pb.Next() {
			tv[0], tv[1] = tags[rng.IntN(len(tags))], tags[rng.IntN(len(tags))]
			if err := s.Put(keys[rng.IntN(len(keys))], benchValue, 0, tv); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMixedParallel: 80% GET, 14% PUT, 5% INCR, 1% INV_TAG (of a tag with about
// 200 keys, written back by the PUTs).
func BenchmarkMixedParallel(b *testing.B) {
	s, keys, tags := benchStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := benchRand()
		tv := make([]string, 2)
		for pb.Next() {
			k := keys[rng.IntN(len(keys))]
			switch r := rng.IntN(100); {
			case r < 80:
				s.Get(k)
			case r < 94:
				tv[0], tv[1] = tags[rng.IntN(len(tags))], tags[rng.IntN(len(tags))]
				_ = s.Put(k, benchValue, 0, tv)
			case r < 99:
				_, _ = s.Incr("counter:"+strconv.Itoa(rng.IntN(1000)), 1, 0, nil)
			default:
				s.InvalidateTag(tags[rng.IntN(len(tags))])
			}
		}
	})
}

// BenchmarkInvalidateTag times one INV_TAG of a tag carried by n keys (each also carrying
// a second tag); filling the store is not timed. ns/op is the call's latency: the
// invalidation is visible and counted when it returns. reclaim-ns/key is the time from
// the call until its background reclaim has removed every entry (WaitReclaim), per key,
// which is not in ns/op.
func BenchmarkInvalidateTag(b *testing.B) {
	for _, n := range []int{10, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			s := newTestStore(b, Config{})
			keys := benchKeyNames(n)
			tags := func(i int) []string { return []string{"t", "other:" + strconv.Itoa(i%100)} }
			// Other entries, which the invalidation must leave alone.
			others := make([]string, min(n, benchKeys/10))
			for i := range others {
				others[i] = "other:" + strconv.Itoa(i)
			}
			fillParallel(b, s, others, func(int) []string { return []string{"u"} })
			b.ReportAllocs()
			b.ResetTimer()
			var call, reclaim time.Duration
			for range b.N {
				b.StopTimer()
				fillParallel(b, s, keys, tags)
				b.StartTimer()
				start := time.Now()
				got := s.InvalidateTag("t")
				call += time.Since(start)
				b.StopTimer()
				if got != n {
					b.Fatalf("InvalidateTag = %d, want %d", got, n)
				}
				s.WaitReclaim()
				reclaim += time.Since(start)
			}
			if got := s.Stats().Items; got != int64(len(others)) {
				b.Fatalf("%d entries left, want the %d others", got, len(others))
			}
			b.ReportMetric(float64(call.Nanoseconds())/float64(b.N)/float64(n), "ns/key")
			b.ReportMetric(float64(reclaim.Nanoseconds())/float64(b.N)/float64(n), "reclaim-ns/key")
		})
	}
}

// BenchmarkMemoryPerEntry inserts 1M entries with 100-byte values and two tags each from
// a pool of 10k, and reports the live heap per entry (after GC) next to the store's own
// estimate (Stats().Bytes per entry), so we see how honest the estimate is.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 1_000_000
	tags := benchTagNames(10_000)
	var heapPer, statsPer float64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := New(Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		tv := make([]string, 2)
		for i := range n {
			tv[0], tv[1] = tags[i%len(tags)], tags[(i+len(tags)/2)%len(tags)]
			if err := s.Put("key:"+strconv.Itoa(i), benchValue, 0, tv); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		heapPer = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		statsPer = float64(s.Stats().Bytes) / n
		if got := s.Stats().Items; got != n {
			b.Fatalf("Items = %d", got)
		}
		runtime.KeepAlive(s)
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(heapPer, "heapB/entry")
	b.ReportMetric(statsPer, "statsB/entry")
}

func BenchmarkStats(b *testing.B) {
	s, _, _ := benchStore(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if s.Stats().Items != benchKeys {
			b.Fatal("wrong Items")
		}
	}
}

// BenchmarkStatsWithWriters: Stats while every other core writes; with a global
// statistics lock (defect 8) the writers would serialise on it.
func BenchmarkStatsWithWriters(b *testing.B) {
	s, keys, _ := benchStore(b)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)-1) {
		wg.Go(func() {
			rng := benchRand()
			for {
				select {
				case <-stop:
					return
				default:
					_ = s.Put(keys[rng.IntN(len(keys))], benchValue, 0, nil)
				}
			}
		})
	}
	b.ResetTimer()
	for range b.N {
		s.Stats()
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
}

// BenchmarkFlush times one FLUSH of a store holding n entries with two tags each (filling
// it is not timed).
func BenchmarkFlush(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			s := newTestStore(b, Config{})
			keys := benchKeyNames(n)
			tags := benchTagNames(benchTags)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				fillParallel(b, s, keys, func(i int) []string {
					return []string{tags[i%benchTags], tags[(i/benchTags)%benchTags]}
				})
				b.StartTimer()
				if got := s.Flush(); got != n {
					b.Fatalf("Flush = %d, want %d", got, n)
				}
			}
			b.StopTimer()
			if st := s.Stats(); st.Items != 0 || st.Bytes != 0 {
				b.Fatalf("after Flush: %+v", st)
			}
		})
	}
}
