package node

import (
	"math"
	"slices"
	"time"
)

// Fencing (docs/cluster.md, "Fencing"): a node serves local data only while it holds a
// lease and sees a strict majority of the cluster.
//
// The lease is renewed by every probe of another member that is acknowledged (the node
// reached a peer) and every probe a peer sends it (a peer reached the node); it is
// shorter than the earliest time the others can declare the node dead. It is checked on
// the read path itself, against the monotonic clock, so a process resumed after a pause
// cannot answer from its socket buffers with data the cluster has moved on from. A node
// whose lease lapsed or which lost its majority is fenced: GETs miss, writes fail, and
// when contact returns it flushes its store and settles its partitions again, because it
// may have been declared dead and missed invalidations and writes meanwhile.

// noLease marks a node with no peers: nobody can declare it dead, so nothing to renew.
const noLease = math.MaxInt64

// serving reports whether this node may serve local data now.
func (r *Router) serving() bool {
	if r.fenced.Load() || !r.quorum.Load() {
		return false
	}
	l := r.lease.Load()
	return l == noLease || r.now() < l // alone: no clock read on the hot path
}

// onContact renews the lease. A renewal after the lease lapsed fences the node first:
// the lapse may have been long enough for the others to declare it dead.
func (r *Router) onContact() {
	now := r.now()
	for {
		l := r.lease.Load()
		if l == noLease {
			return
		}
		if now >= l && r.fenced.CompareAndSwap(false, true) {
			r.log.Warn("lease lapsed: fencing this node until it has flushed", "late_by", time.Duration(now-l).Round(time.Millisecond))
		}
		if r.lease.CompareAndSwap(l, max(l, now+int64(r.leaseLen))) {
			return
		}
	}
}

// updateFence recomputes the majority and the lease mode after a membership change and
// fences the node when either lapsed. It runs on the event loop only.
func (r *Router) updateFence(alive []string) {
	now := time.Now()
	counted := len(alive)
	for name, at := range r.failedAt {
		switch {
		case now.Sub(at) > r.cfg.DeadForget:
			delete(r.failedAt, name)
		case !slices.Contains(alive, name):
			counted++
		}
	}
	q := 2*len(alive) > counted
	if r.quorum.Swap(q) != q {
		if q {
			r.log.Info("majority regained", "alive", len(alive), "cluster", counted)
		} else {
			r.log.Warn("majority lost: fencing this node", "alive", len(alive), "cluster", counted)
			r.fenced.Store(true)
		}
	}
	switch l := r.lease.Load(); {
	case len(alive) <= 1 && q:
		r.lease.Store(noLease) // alone, and nobody failed recently: nobody to lose
	case l == noLease:
		r.lease.Store(r.now() + int64(r.leaseLen)) // peers appeared: start renewing
	case r.now() >= l && r.fenced.CompareAndSwap(false, true):
		r.log.Warn("lease lapsed: no contact with any peer, fencing this node")
	}
}

// recoverFence ends a fence once the node is in contact with a majority again: it forgets
// every partition and flushes its store, then settles its partitions like a joining node.
func (r *Router) recoverFence() {
	if !r.fenced.Load() || !r.quorum.Load() || r.now() >= r.lease.Load() {
		return
	}
	for p := range r.parts {
		ps := &r.parts[p]
		ps.mu.Lock()
		ps.held.Store(false)
		storeName(&ps.movedTo, "")
		storeName(&ps.holder, "")
		ps.mu.Unlock()
	}
	n := r.store.Flush()
	r.fenced.Store(false)
	r.log.Warn("recovered from fence: flushed the local store", "entries", n)
}
