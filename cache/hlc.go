package cache

import (
	"sync/atomic"
	"time"
)

// Clock is a hybrid logical clock: every stamp is the wall-clock millisecond shifted left
// 16 bits plus a logical counter, and every stamp it hands out is strictly greater than
// the previous one. Writes and invalidations are stamped from one Clock, so "older than
// this invalidation" is a comparison of two integers; Observe lets a cluster node keep its
// clock ahead of stamps it receives from peers, so stamps order events across nodes too.
type Clock struct {
	last atomic.Uint64 // the last stamp handed out or observed
	now  func() time.Time
}

const logicalBits = 16

// NewClock returns a clock reading physical time from now (time.Now when nil).
func NewClock(now func() time.Time) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now}
}

// Next returns a new stamp, greater than every stamp returned or observed before.
func (c *Clock) Next() uint64 {
	phys := uint64(c.now().UnixMilli()) << logicalBits
	for {
		old := c.last.Load()
		next := old + 1
		if phys > next {
			next = phys
		}
		if c.last.CompareAndSwap(old, next) {
			return next
		}
	}
}

// Observe advances the clock so that later stamps are greater than remote.
func (c *Clock) Observe(remote uint64) {
	for {
		old := c.last.Load()
		if remote <= old || c.last.CompareAndSwap(old, remote) {
			return
		}
	}
}

// Last returns the most recent stamp handed out or observed.
func (c *Clock) Last() uint64 { return c.last.Load() }

// StampTime returns the wall-clock time a stamp was taken at (millisecond precision).
func StampTime(stamp uint64) time.Time {
	return time.UnixMilli(int64(stamp >> logicalBits))
}

// StampOf returns the smallest stamp a clock reading t hands out (the inverse of
// StampTime).
func StampOf(t time.Time) uint64 {
	return uint64(t.UnixMilli()) << logicalBits
}
