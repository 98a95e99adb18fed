package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/transport"
)

// Moving partitions (docs/cluster.md, "Moving a partition").
//
// The holder of a partition hands it to the partition's owner in its ring: it tells the
// receiver (begin), takes the partition's lock exclusively so that no command runs on it,
// streams its entries with their stamps and expiries, and commits. On the receiver's
// acknowledgement of the commit the receiver holds the partition and the sender forwards
// everything for it there and drops its copy; commands that waited on the lock follow.
//
// Invalidations keep working across the move: the sender relays every invalidation it
// applies while a handoff is in progress to the receiver (applyInvalidation), and the
// receiver records the invalidations it applies (invLog, also shortly before a handoff
// begins) and refuses an imported entry that one of them removed. Recording happens
// before the store applies the invalidation and under importMu, which imports hold
// shared: an entry imported before the record is in the store when the invalidation
// runs; one imported after sees the record.

// receiveTimeout ends a handoff whose sender went silent: the partial copy stays (its
// entries were checked), the record of invalidations is released.
const receiveTimeout = 30 * time.Second

// recordInvalidation records req in the invLog, before the store applies it.
func (r *Router) recordInvalidation(req invalidateReq) {
	r.importMu.Lock()
	defer r.importMu.Unlock()
	r.invLog.add(invRecord{stamp: r.store.Clock().Next(), at: time.Now(), op: req.Op, tags: req.Tags, keys: req.Keys})
}

func (r *Router) handleHandoffBegin(_ context.Context, peer string, req handoffReq) (handoffReply, error) {
	if req.P < 0 || req.P >= len(r.parts) {
		return handoffReply{}, fmt.Errorf("no partition %d", req.P)
	}
	if !r.serving() {
		return handoffReply{}, unavailable("node %s is fenced", r.self)
	}
	if r.leaving.Load() {
		return handoffReply{}, unavailable("node %s is leaving the cluster", r.self)
	}
	r.importMu.Lock()
	r.receiving[req.P] = time.Now()
	r.importMu.Unlock()
	ps := &r.parts[req.P]
	ps.mu.Lock()
	if !ps.held.Load() {
		// Whatever the store still has of a partition this node does not hold is a
		// leftover (an abandoned handoff) that may have missed invalidations.
		r.store.DropPartition(req.P)
	}
	ps.mu.Unlock()
	r.log.Debug("receiving partition", "partition", req.P, "from", peer)
	return handoffReply{}, nil
}

func (r *Router) handleHandoffEntries(_ context.Context, peer string, req handoffReq) (handoffReply, error) {
	r.importMu.RLock()
	defer r.importMu.RUnlock()
	if _, ok := r.receiving[req.P]; !ok {
		return handoffReply{}, fmt.Errorf("partition %d: entries without a handoff in progress", req.P)
	}
	n := 0
	defer func() { r.metrics.handoffImported(n) }()
	for i := range req.Entries {
		e := req.Entries[i].entry()
		if r.store.PartitionOf(e.Key) != req.P {
			return handoffReply{Imported: n}, fmt.Errorf("key %q is not in partition %d", e.Key, req.P)
		}
		if err := checkStamp(e.Stamp); err != nil {
			return handoffReply{Imported: n}, fmt.Errorf("key %q: %w", e.Key, err)
		}
		if r.invLog.covers(&e) {
			continue
		}
		ok, err := r.store.Import(e)
		if err != nil {
			return handoffReply{Imported: n}, err
		}
		if ok {
			n++
		}
	}
	return handoffReply{Imported: n}, nil
}

func (r *Router) handleHandoffCommit(_ context.Context, peer string, req handoffReq) (handoffReply, error) {
	if req.P < 0 || req.P >= len(r.parts) {
		return handoffReply{}, fmt.Errorf("no partition %d", req.P)
	}
	r.importMu.Lock()
	_, ok := r.receiving[req.P]
	delete(r.receiving, req.P)
	r.importMu.Unlock()
	if !ok {
		// A repeated commit (the first reply was lost) finds the partition held.
		if r.parts[req.P].held.Load() {
			return handoffReply{}, nil
		}
		return handoffReply{}, fmt.Errorf("partition %d: commit without a handoff in progress", req.P)
	}
	ps := &r.parts[req.P]
	ps.mu.Lock()
	ps.held.Store(true)
	storeName(&ps.movedTo, "")
	storeName(&ps.holder, "")
	ps.mu.Unlock()
	r.metrics.handoffReceived()
	r.log.Debug("received partition", "partition", req.P, "from", peer)
	return handoffReply{}, nil
}

// expireReceives forgets handoffs whose sender went silent, and the invalidation records
// no handoff needs any more (invLog).
func (r *Router) expireReceives() {
	r.importMu.Lock()
	defer r.importMu.Unlock()
	cutoff := time.Now()
	for p, began := range r.receiving {
		if time.Since(began) > receiveTimeout {
			r.log.Warn("handoff abandoned by its sender", "partition", p)
			delete(r.receiving, p)
			continue
		}
		if began.Before(cutoff) {
			cutoff = began
		}
	}
	r.invLog.prune(cutoff.Add(-r.cfg.InvalidationTimeout))
}

func (r *Router) handleWhoHolds(_ context.Context, _ string, req whoHoldsReq) (whoHoldsReply, error) {
	var held []int
	serving := r.serving()
	rg := r.ring.Load()
	owners := make([]string, len(req.P))
	for i, p := range req.P {
		if p < 0 || p >= len(r.parts) {
			continue
		}
		if serving && r.parts[p].held.Load() {
			held = append(held, p)
		}
		if serving {
			owners[i] = rg.Owner(p)
		}
	}
	return whoHoldsReply{Held: held, Owners: owners, Members: r.view.Load().names}, nil
}

func (r *Router) addOutgoing(to string, d int) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	r.outgoing[to] += d
	if r.outgoing[to] <= 0 {
		delete(r.outgoing, to)
	}
}

// handoffReceivers lists the members partitions are being moved to.
func (r *Router) handoffReceivers() []string {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	return slices.Collect(maps.Keys(r.outgoing))
}

// transfer hands partition p to member to. On an error the partition stays here.
func (r *Router) transfer(p int, to string) error {
	addr, ok := r.view.Load().peer[to]
	if !ok {
		return fmt.Errorf("%s is not a live member", to)
	}
	call := func(kind uint16, req handoffReq) (handoffReply, error) {
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ForwardTimeout)
		defer cancel()
		return transport.CallTyped[handoffReq, handoffReply](ctx, r.tc, addr, kind, req)
	}
	if _, err := call(kindHandoffBegin, handoffReq{P: p}); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	r.addOutgoing(to, 1) // before any entry is read: see applyInvalidation
	defer r.addOutgoing(to, -1)

	ps := &r.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.held.Load() {
		return nil
	}
	sent := 0
	after := ""
	batch := make([]wireEntry, 0, r.cfg.HandoffBatch)
	for {
		batch = batch[:0]
		r.store.RangePartition(p, after, func(e cache.Entry) bool {
			batch = append(batch, toWire(e))
			return len(batch) < r.cfg.HandoffBatch
		})
		if len(batch) == 0 {
			break
		}
		if _, err := call(kindHandoffEntries, handoffReq{P: p, Entries: batch}); err != nil {
			return fmt.Errorf("entries: %w", err)
		}
		sent += len(batch)
		after = batch[len(batch)-1].Key
		if len(batch) < r.cfg.HandoffBatch {
			break
		}
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if _, err = call(kindHandoffCommit, handoffReq{P: p}); err == nil {
			break
		}
		var re *transport.RemoteError
		if errors.As(err, &re) || !r.view.Load().alive(to) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	ps.held.Store(false)
	storeName(&ps.movedTo, to)
	r.store.DropPartition(p)
	r.handedOut.Add(uint64(sent))
	r.metrics.handoffSent(sent)
	return nil
}

// settle decides, for partitions this node owns in its ring but does not hold, who
// holds them: a member that does will hand them over (the node forwards to it
// meanwhile); a partition nobody holds is claimed, empty. It reports whether anything is
// still awaited.
func (r *Router) settle(wanted []int) (waiting bool) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ForwardTimeout)
	defer cancel()
	var mu sync.Mutex
	replies := map[string]whoHoldsReply{}
	err := r.each(ctx, func(ctx context.Context, name, addr string) error {
		if name == r.self {
			return nil
		}
		rep, err := transport.CallTyped[whoHoldsReq, whoHoldsReply](ctx, r.tc, addr, kindWhoHolds, whoHoldsReq{P: wanted})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		replies[name] = rep
		return nil
	})
	if err != nil {
		r.log.Debug("cannot settle partitions yet", "error", err)
		return true
	}
	st := settleFrom(r.self, r.view.Load().names, wanted, replies)
	for p, h := range st.holders {
		storeName(&r.parts[p].holder, h)
	}
	claimed := 0
	for _, p := range st.claim {
		ps := &r.parts[p]
		ps.mu.Lock()
		if !ps.held.Load() {
			r.store.DropPartition(p) // leftovers, see handleHandoffBegin
			ps.held.Store(true)
			storeName(&ps.movedTo, "")
			storeName(&ps.holder, "")
			claimed++
		}
		ps.mu.Unlock()
	}
	if claimed > 0 {
		r.log.Info("claimed partitions nobody held", "count", claimed)
	}
	return st.waiting || len(st.holders) > 0
}

// settlement is what the other members' whoHolds replies say of the partitions this
// node owns in its ring but does not hold.
type settlement struct {
	holders map[int]string // partition → a member that holds it: it will hand it over
	claim   []int          // held by nobody, and safe to claim empty
	waiting bool           // some partition can be neither followed nor claimed yet
}

// settleFrom decides settle's outcome from the replies (by member name) to a whoHolds of
// wanted. A partition nobody holds is claimed only when every member's ring gives it to
// self and every member sees the same members (mine): right after a partition heals a
// member may already see a node this one does not see yet, which may hold the partition
// (it claimed it meanwhile); claiming then would make a second holder (scenario 4).
func settleFrom(self string, mine []string, wanted []int, replies map[string]whoHoldsReply) settlement {
	st := settlement{holders: map[int]string{}}
	disputed := map[int]bool{} // some member's ring gives the partition to another node
	views := false             // some member sees other members than this node
	for _, name := range slices.Sorted(maps.Keys(replies)) {
		rep := replies[name]
		for _, p := range rep.Held {
			st.holders[p] = name
		}
		for i, o := range rep.Owners {
			if i < len(wanted) && o != self {
				disputed[wanted[i]] = true // includes "" from a fenced member
			}
		}
		if rep.Members != nil && !slices.Equal(rep.Members, mine) {
			views = true
		}
	}
	for _, p := range wanted {
		switch {
		case st.holders[p] != "":
		case disputed[p] || views:
			st.waiting = true // wait for the views to converge
		default:
			st.claim = append(st.claim, p)
		}
	}
	return st
}

// reconcile moves the partitions this node holds to their owners and settles the ones
// it owns but does not hold. It reports whether work is left to retry.
func (r *Router) reconcile() (again bool) {
	r.reconcileMu.Lock()
	defer r.reconcileMu.Unlock()
	if !r.serving() {
		return true
	}
	rg := r.ring.Load()
	v := r.view.Load()
	moves := map[string][]int{}
	var wanted []int
	for p := range r.parts {
		owner, held := rg.Owner(p), r.parts[p].held.Load()
		switch {
		case held && owner != r.self && v.alive(owner):
			moves[owner] = append(moves[owner], p)
		case !held && owner == r.self:
			wanted = append(wanted, p)
		}
	}
	if len(wanted) > 0 && (!r.mayClaim() || r.settle(wanted)) {
		again = true
	}
	for to, ps := range moves {
		start, n := time.Now(), 0
		for _, p := range ps {
			if err := r.transfer(p, to); err != nil {
				r.log.Warn("handoff failed; will retry", "partition", p, "to", to, "error", err)
				again = true
				break
			}
			n++
		}
		r.log.Info("handed off partitions", "to", to, "count", n, "of", len(ps), "took", time.Since(start).Round(time.Millisecond))
	}
	return again
}
