package main

import (
	"math"
	"math/bits"
	"time"
)

// histogram records latencies in log-linear buckets: each power of two of nanoseconds is
// split into 32 linear sub-buckets, so a percentile is exact to about 3%. It is not safe
// for concurrent use: each load worker keeps its own and they are merged at the end.
type histogram struct {
	counts [64 * subBuckets]uint64
	n      uint64
	max    time.Duration
}

const subBits = 5
const subBuckets = 1 << subBits

func bucketOf(d time.Duration) int {
	v := uint64(max(d, 1))
	if v < subBuckets {
		return int(v)
	}
	exp := bits.Len64(v) - 1 - subBits // how far v is shifted to keep subBits+1 bits
	return (exp+1)*subBuckets + int(v>>uint(exp)) - subBuckets
}

// upperOf is the largest duration that falls in bucket b.
func upperOf(b int) time.Duration {
	if b < subBuckets {
		return time.Duration(b)
	}
	exp := b/subBuckets - 1
	mant := uint64(b%subBuckets + subBuckets)
	return time.Duration((mant+1)<<uint(exp) - 1)
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// percentile returns the latency below which a fraction q (0..1) of samples fall.
func (h *histogram) percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for b, c := range h.counts {
		if seen += c; seen >= rank {
			return min(upperOf(b), h.max)
		}
	}
	return h.max
}
