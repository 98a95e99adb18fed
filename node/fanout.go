package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/transport"
)

// --- invalidations (promise 2)

func (r *Router) InvalidateTag(ctx context.Context, tag string) (int, error) {
	return r.invalidate(ctx, invalidateReq{Op: invTagsAny, Tags: []string{tag}})
}

func (r *Router) InvalidateTagsAny(ctx context.Context, tags []string) (int, error) {
	return r.invalidate(ctx, invalidateReq{Op: invTagsAny, Tags: tags})
}

func (r *Router) InvalidateTagsAll(ctx context.Context, tags []string) (int, error) {
	return r.invalidate(ctx, invalidateReq{Op: invTagsAll, Tags: tags})
}

func (r *Router) InvalidateKeys(ctx context.Context, keys []string) (int, error) {
	return r.invalidate(ctx, invalidateReq{Op: invKeys, Keys: keys})
}

func (r *Router) Flush(ctx context.Context) (int, error) {
	return r.invalidate(ctx, invalidateReq{Op: invFlush})
}

// invalidate applies req here and on every live member, in parallel. It succeeds only
// when every member applied it or was declared dead meanwhile (a dead member serves
// nothing again before it has flushed: fence.go). Otherwise the error names the members
// that did not acknowledge, and a retry queue keeps sending it to them until they apply
// it or are declared dead. Applying an invalidation twice is harmless.
func (r *Router) invalidate(ctx context.Context, req invalidateReq) (int, error) {
	rep, err := r.invalidateReport(ctx, req)
	return rep.Count, err
}

// InvalidationReport is what one invalidation removed on each member and when each
// acknowledged it.
type InvalidationReport struct {
	Count   int                  // entries removed, on every member together
	Members []MemberInvalidation // by name; the coordinating node first
}

// MemberInvalidation is one member's part of an invalidation. A member's count includes
// what it relayed to members the coordinator did not know of (docs/cluster.md).
type MemberInvalidation struct {
	Name    string
	Count   int
	Elapsed time.Duration // from the start of the invalidation to the member's answer
	Err     error         // why the member did not acknowledge; nil when it did
}

// invalidateReport is invalidate, reporting each member's part (POST /cluster/invalidate-tag).
func (r *Router) invalidateReport(ctx context.Context, req invalidateReq) (InvalidationReport, error) {
	if !r.serving() {
		// A fenced node may be the minority side of a partition: the members it
		// "declared dead" are alive and serving, so it cannot vouch for them.
		return InvalidationReport{}, unavailable("node %s is fenced: it cannot confirm the invalidation reached every member, retry through another node", r.self)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.InvalidationTimeout) // the relays below too
	defer cancel()
	v := r.view.Load()
	req.Members = v.names
	count, stamp, relayErr := r.applyInvalidation(ctx, req, "")
	if stamp == 0 { // refused before it was applied here
		return InvalidationReport{}, relayErr
	}
	rep := InvalidationReport{Members: []MemberInvalidation{{Name: r.self, Count: count, Elapsed: time.Since(start), Err: relayErr}}}
	req.Stamp = stamp
	peers := slices.DeleteFunc(slices.Clone(v.names), func(n string) bool { return n == r.self })
	fanout := time.Now()
	results := parallelEach(peers, func(name string) (int, error) { return r.sendInvalidation(ctx, name, req) })
	r.metrics.observeFanout(fanout)
	var failed []string
	for _, res := range results {
		rep.Members = append(rep.Members, MemberInvalidation{Name: res.name, Count: res.n, Elapsed: res.done.Sub(start), Err: res.err})
		if res.err != nil {
			failed = append(failed, res.name)
			r.log.Warn("invalidation not acknowledged", "peer", res.name, "error", res.err)
			r.invalidationFailed(res.name)
			r.retry.add(res.name, req)
			continue
		}
		count += res.n
	}
	rep.Count = count
	if len(failed) > 0 {
		return rep, unavailable("invalidation incomplete: not acknowledged by %s (retrying in the background until they apply it or are declared dead)", strings.Join(failed, ", "))
	}
	if relayErr != nil {
		// Applied here and by every member the view names; a member it was relayed
		// to (one this view missed) did not acknowledge.
		return rep, unavailable("invalidation incomplete: %v", relayErr)
	}
	return rep, nil
}

// parallel runs fn for every name at once and returns the sum of the counts of those
// that succeeded and the errors of those that failed, by name.
func parallel(names []string, fn func(name string) (int, error)) (total int, errs map[string]error) {
	for _, res := range parallelEach(names, fn) {
		if res.err != nil {
			if errs == nil {
				errs = map[string]error{}
			}
			errs[res.name] = res.err
			continue
		}
		total += res.n
	}
	return total, errs
}

// result is what fn answered for one name in parallelEach, and when.
type result struct {
	name string
	n    int
	err  error
	done time.Time
}

// parallelEach runs fn for every name at once and returns each answer, in the order of
// names.
func parallelEach(names []string, fn func(name string) (int, error)) []result {
	out := make([]result, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := fn(name)
			out[i] = result{name: name, n: n, err: err, done: time.Now()}
		}()
	}
	wg.Wait()
	return out
}

// invalidationAttempt bounds one delivery attempt of an invalidation to one peer.
const invalidationAttempt = 300 * time.Millisecond

// sendInvalidation delivers req to name, retrying until it is acknowledged, name is no
// longer a live member (nil: a dead member needs nothing), or ctx ends.
func (r *Router) sendInvalidation(ctx context.Context, name string, req invalidateReq) (int, error) {
	backoff := 20 * time.Millisecond
	for {
		addr, alive := r.view.Load().peer[name]
		if !alive {
			return 0, nil
		}
		// Short attempts: a paused peer accepts the request and never answers, and it
		// may be declared dead while we wait.
		actx, cancel := context.WithTimeout(ctx, invalidationAttempt)
		rep, err := transport.CallTyped[invalidateReq, invalidateReply](actx, r.tc, addr, kindInvalidate, req)
		cancel()
		if err == nil {
			r.onContact()
			return rep.Count, nil
		}
		var re *transport.RemoteError
		if errors.As(err, &re) && !strings.Contains(re.Msg, ErrUnavailable.Error()) {
			return 0, err // refused for a reason retrying will not change
		}
		if r.view.Load().leaving[name] && errors.Is(err, syscall.ECONNREFUSED) {
			// It announced its leave and its peer port is closed: it has handed its
			// partitions off and left, and serves nothing any more; this node has not
			// heard of the leave yet (a soak run waited 2 s for such a member).
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// handleInvalidate applies an invalidation a peer sent.
func (r *Router) handleInvalidate(ctx context.Context, peer string, req invalidateReq) (invalidateReply, error) {
	n, _, err := r.applyInvalidation(ctx, req, peer)
	return invalidateReply{Count: n}, err
}

// applyInvalidation applies req to the local store, records it for handoffs in progress,
// and relays it to the members the sender did not know of and to the members this node
// is handing partitions to (an entry read for a handoff before the invalidation reached
// this node must die on the receiver too). It returns the entries removed here and by
// the relays, and a stamp taken after it was applied here.
func (r *Router) applyInvalidation(ctx context.Context, req invalidateReq, from string) (int, uint64, error) {
	if err := checkStamp(req.Stamp); err != nil {
		return 0, 0, err
	}
	clock := r.store.Clock()
	clock.Observe(req.Stamp)
	r.recordInvalidation(req) // before the store: see handoff.go
	// A node that is not serving (fenced) removes what it still has too, but counts none
	// of it: its store holds what it had before it lost contact (flushed when it
	// recovers), entries the cluster may have deleted since, so a DEL that removes only
	// such a stale copy must not answer "deleted" (harness scenario 4 under load). Read
	// before applying: a node fenced midway removed entries it served until then.
	live := r.serving()
	var n int
	switch req.Op {
	case invTagsAny:
		n = r.store.InvalidateTagsAny(req.Tags)
	case invTagsAll:
		n = r.store.InvalidateTagsAll(req.Tags)
	case invKeys:
		n = r.store.InvalidateKeys(req.Keys)
	case invFlush:
		n = r.store.Flush()
	default:
		return 0, 0, fmt.Errorf("unknown invalidation %d", req.Op)
	}
	if !live {
		n = 0
	}
	stamp := clock.Next()

	// Relay targets: live members not in req.Members, and handoff receivers.
	var extra, targets []string
	for _, m := range r.view.Load().names {
		if m != r.self && m != from && !slices.Contains(req.Members, m) {
			extra = append(extra, m)
			targets = append(targets, m)
		}
	}
	for _, m := range r.handoffReceivers() {
		switch {
		case m == from, slices.Contains(targets, m), slices.Contains(req.Via, m):
			// The sender applied it before asking; a member that relayed this copy
			// is not asked again, so relays cannot go round in a circle.
		case from == "" && slices.Contains(req.Members, m):
			// This node coordinates: its fan-out reaches the receiver, which records
			// the invalidation for the import whenever it arrives (invLog).
		default:
			targets = append(targets, m)
		}
	}
	if len(targets) == 0 {
		return n, stamp, nil
	}
	relay := req
	relay.Stamp = stamp
	relay.Members = append(slices.Clone(req.Members), targets...)
	relay.Via = append(slices.Clone(req.Via), r.self)
	relayed, errs := parallel(targets, func(m string) (int, error) {
		c, err := r.sendInvalidation(ctx, m, relay)
		if !slices.Contains(extra, m) {
			c = 0 // the sender counts what members it knew of removed
		}
		return c, err
	})
	n += relayed
	if len(errs) > 0 {
		return n, stamp, unavailable("relaying the invalidation to %s failed", strings.Join(slices.Sorted(maps.Keys(errs)), ", "))
	}
	return n, stamp, nil
}

// maxClockSkew bounds how far ahead of this node's wall clock a stamp from a peer may
// be. Observing a stamp moves the clock forward for good, so one absurd stamp (a bug, a
// wild clock, or a crafted message) would otherwise make every later local write look
// older than past invalidations.
const maxClockSkew = time.Minute

func checkStamp(stamp uint64) error {
	if limit := cache.StampOf(time.Now().Add(maxClockSkew)); stamp > limit {
		return fmt.Errorf("stamp %d is more than %v ahead of this node's clock", stamp, maxClockSkew)
	}
	return nil
}

// --- the retry queue

// maxRetries bounds the invalidations queued for one peer; past it the oldest is
// dropped with an error log (the peer will be declared dead or fence itself long before
// this many pile up under any sane load).
const maxRetries = 10000

// retryQueues resend unacknowledged invalidations to each peer, in order, until the peer
// applies them or is no longer a live member.
type retryQueues struct {
	r       *Router
	mu      sync.Mutex
	pending map[string][]invalidateReq
}

func newRetryQueues(r *Router) *retryQueues {
	return &retryQueues{r: r, pending: map[string][]invalidateReq{}}
}

func (q *retryQueues) add(peer string, req invalidateReq) {
	q.mu.Lock()
	defer q.mu.Unlock()
	list := q.pending[peer]
	if len(list) >= maxRetries {
		q.r.log.Error("invalidation retry queue full; dropping the oldest", "peer", peer, "limit", maxRetries)
		list = list[1:]
	}
	start := len(list) == 0
	q.pending[peer] = append(list, req)
	if start {
		q.r.wg.Add(1)
		go q.drain(peer)
	}
}

// Pending returns the number of queued invalidations per peer.
func (q *retryQueues) Pending() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := map[string]int{}
	for p, l := range q.pending {
		out[p] = len(l)
	}
	return out
}

func (q *retryQueues) drain(peer string) {
	defer q.r.wg.Done()
	for {
		q.mu.Lock()
		list := q.pending[peer]
		if len(list) == 0 {
			delete(q.pending, peer)
			q.mu.Unlock()
			return
		}
		req := list[0]
		q.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), q.r.cfg.InvalidationTimeout)
		_, err := q.r.sendInvalidation(ctx, peer, req)
		cancel()
		select {
		case <-q.r.stop:
			return
		default:
		}
		if err != nil {
			select {
			case <-q.r.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		q.mu.Lock()
		q.pending[peer] = q.pending[peer][1:]
		q.mu.Unlock()
	}
}

// --- cluster-wide reads

// each calls fn for every live member in parallel (self included, with addr "self")
// and returns the errors of those that failed, by name.
func (r *Router) each(ctx context.Context, fn func(ctx context.Context, name, addr string) error) error {
	v := r.view.Load()
	_, errs := parallel(v.names, func(name string) (int, error) {
		err := fn(ctx, name, v.peer[name])
		if v.leaving[name] && errors.Is(err, transport.ErrUnreachable) {
			err = nil // it left after handing everything over
		}
		return 0, err
	})
	if len(errs) > 0 {
		var msgs []string
		for name, err := range errs {
			msgs = append(msgs, name+": "+err.Error())
		}
		slices.Sort(msgs)
		return unavailable("not every member answered: %s", strings.Join(msgs, "; "))
	}
	return nil
}

// Stats are the cluster's totals: the sum over the members that answered (a member that
// did not is left out and logged; per-member figures are on /cluster/members).
func (r *Router) Stats(ctx context.Context) (cache.Stats, error) {
	var mu sync.Mutex
	var total cache.Stats
	err := r.each(ctx, func(ctx context.Context, name, addr string) error {
		st, err := r.memberStats(ctx, name, addr)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		total.Hits += st.Hits
		total.Misses += st.Misses
		total.Puts += st.Puts
		total.Invalidations += st.Invalidations
		total.Evictions += st.Evictions
		total.Expirations += st.Expirations
		total.Imports += st.Imports
		total.Items += st.Items
		total.Bytes += st.Bytes
		total.Tags += st.Tags // a tag on two nodes counts twice: an upper bound
		return nil
	})
	if err != nil {
		r.log.Warn("cluster stats are partial", "error", err)
	}
	return total, nil
}

func (r *Router) handleStats(context.Context, string, statsReq) (statsReply, error) {
	return statsReply{Stats: r.localStats()}, nil
}

// KeysByTag merges every member's keys; a member that does not answer makes it fail,
// since the answer must be exact (promise 4).
func (r *Router) KeysByTag(ctx context.Context, tag string, limit int) ([]string, error) {
	var mu sync.Mutex
	var keys []string
	err := r.each(ctx, func(ctx context.Context, name, addr string) error {
		var ks []string
		if name == r.self {
			ks = r.localKeysByTag(tag, limit)
		} else {
			rep, err := transport.CallTyped[keysByTagReq, keysReply](ctx, r.tc, addr, kindKeysByTag, keysByTagReq{Tag: tag, Limit: limit})
			if err != nil {
				return err
			}
			ks = rep.Keys
		}
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	return keys, nil
}

// localKeysByTag lists the keys of tag in the partitions this node holds (an entry of a
// partition it is receiving is not live here yet).
func (r *Router) localKeysByTag(tag string, limit int) []string {
	if !r.serving() {
		return nil
	}
	keys := r.store.KeysByTag(tag, 0)
	keys = slices.DeleteFunc(keys, func(k string) bool { return !r.parts[r.store.PartitionOf(k)].held.Load() })
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	return keys
}

func (r *Router) handleKeysByTag(_ context.Context, _ string, req keysByTagReq) (keysReply, error) {
	return keysReply{Keys: r.localKeysByTag(req.Tag, req.Limit)}, nil
}

// Tags merges every member's tag counts.
func (r *Router) Tags(ctx context.Context, limit int) ([]cache.TagCount, error) {
	var mu sync.Mutex
	counts := map[string]int{}
	err := r.each(ctx, func(ctx context.Context, name, addr string) error {
		var tc []cache.TagCount
		if name == r.self {
			tc = r.store.Tags()
		} else {
			rep, err := transport.CallTyped[tagsReq, tagsReply](ctx, r.tc, addr, kindTags, tagsReq{})
			if err != nil {
				return err
			}
			tc = rep.Tags
		}
		mu.Lock()
		defer mu.Unlock()
		for _, t := range tc {
			counts[t.Tag] += t.Keys
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]cache.TagCount, 0, len(counts))
	for t, c := range counts {
		out = append(out, cache.TagCount{Tag: t, Keys: c})
	}
	slices.SortFunc(out, func(a, b cache.TagCount) int {
		return cmp.Or(cmp.Compare(b.Keys, a.Keys), cmp.Compare(a.Tag, b.Tag))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (r *Router) handleTags(context.Context, string, tagsReq) (tagsReply, error) {
	if !r.serving() {
		return tagsReply{}, nil
	}
	return tagsReply{Tags: r.store.Tags()}, nil
}

// Scan walks the members in name order and each member's held partitions in order. The
// cursor is "<length of name>:<name><member's own cursor>".
func (r *Router) Scan(ctx context.Context, cursor string, limit int, prefix string) ([]cache.Entry, string, error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("scan: limit must be positive, got %d", limit)
	}
	member, local, err := parseClusterCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	v := r.view.Load()
	var out []cache.Entry
	for _, name := range v.names {
		if name < member {
			continue
		}
		if name != member {
			local = ""
		}
		if len(out) >= limit {
			return out, strconv.Itoa(len(name)) + ":" + name, nil
		}
		for len(out) < limit {
			entries, next, err := r.scanMember(ctx, name, v.peer[name], local, limit-len(out), prefix)
			if err != nil {
				return nil, "", err
			}
			out = append(out, entries...)
			if next == "" {
				break
			}
			local = next
			if len(out) >= limit {
				return out, strconv.Itoa(len(name)) + ":" + name + next, nil
			}
		}
	}
	return out, "", nil
}

func parseClusterCursor(c string) (member, local string, err error) {
	if c == "" {
		return "", "", nil
	}
	ls, rest, ok := strings.Cut(c, ":")
	n, err := strconv.Atoi(ls)
	if !ok || err != nil || n < 0 || n > len(rest) {
		return "", "", fmt.Errorf("%w %q", ErrInvalidCursor, c)
	}
	return rest[:n], rest[n:], nil
}

func (r *Router) scanMember(ctx context.Context, name, addr, cursor string, limit int, prefix string) ([]cache.Entry, string, error) {
	if name == r.self {
		return r.localScan(ctx, cursor, limit, prefix)
	}
	rep, err := transport.CallTyped[scanReq, scanReply](ctx, r.tc, addr, kindScan, scanReq{Cursor: cursor, Limit: limit, Prefix: prefix})
	if err != nil {
		return nil, "", unavailable("scan of member %s failed: %v", name, err)
	}
	out := make([]cache.Entry, len(rep.Entries))
	for i := range rep.Entries {
		out[i] = rep.Entries[i].entry()
	}
	return out, rep.Next, nil
}

func (r *Router) localScan(ctx context.Context, cursor string, limit int, prefix string) ([]cache.Entry, string, error) {
	if !r.serving() {
		return nil, "", nil
	}
	return scanPartitions(ctx, r.store, cursor, limit, prefix, func(p int) bool { return r.parts[p].held.Load() })
}

func (r *Router) handleScan(ctx context.Context, _ string, req scanReq) (scanReply, error) {
	entries, next, err := r.localScan(ctx, req.Cursor, req.Limit, req.Prefix)
	if err != nil {
		return scanReply{}, err
	}
	out := make([]wireEntry, len(entries))
	for i, e := range entries {
		out[i] = toWire(e)
	}
	return scanReply{Entries: out, Next: next}, nil
}
