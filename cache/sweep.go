package cache

import (
	"math/rand/v2"
	"time"
)

// Sweeper tuning: each tick, every shard holding entries with a TTL is sampled
// sweepSample entries at a time, from a random slot of its table;
// while more than a quarter of a sample had expired, the shard is sampled again, up to
// sweepRounds times. This is Redis's active-expiry idea: memory held by expired entries
// is reclaimed within a few ticks without scanning every entry.
const (
	sweepSample = 32
	sweepRounds = 16
)

func (s *Store) sweepLoop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.lruClock.Add(1)
			s.Sweep()
		}
	}
}

// Sweep removes expired entries from a sample of every shard that holds entries with a
// TTL, and returns how many it removed. The background sweeper calls it every
// SweepInterval; tests call it directly.
func (s *Store) Sweep() int {
	removed := 0
	for p := range s.shards {
		sh := &s.shards[p]
		for round := 0; round < sweepRounds && sh.expiring.Load() > 0; round++ {
			n, sampled := s.sweepShard(sh)
			removed += n
			if sampled < sweepSample || n*4 <= sampled {
				break
			}
		}
	}
	return removed
}

// sweepShard samples up to sweepSample entries with a TTL and removes the expired ones.
// Expiry is checked under the shard's write lock, so a write that replaced an entry is
// never removed in its place.
func (s *Store) sweepShard(sh *shard) (removed, sampled int) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := s.nowMs()
	visited := 0
	var expired [sweepSample]*entry // removed after the walk: removing reshapes the table
	sh.t.walk(rand.IntN(max(1, len(sh.t.slots))), func(e *entry) bool {
		// Bound the walk past entries without a TTL, so a large shard with few
		// expiring entries costs a bounded amount per tick.
		if visited++; visited > 4*sweepSample {
			return false
		}
		if e.expireAt == 0 {
			return true
		}
		if now >= e.expireAt {
			expired[removed] = e
			removed++
		}
		sampled++
		return sampled < sweepSample
	})
	for _, e := range expired[:removed] {
		s.removeLocked(sh, e)
	}
	s.expirations.Add(uint64(removed))
	return removed, sampled
}
