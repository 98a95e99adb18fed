package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/ring"
	"github.com/tagcache/tagcache/transport"
)

// ErrUnavailable is what a cluster command fails with when the node cannot serve it now:
// the key's owner is unreachable, ownership is moving, the node is fenced, or an
// invalidation was not acknowledged by every member. Retrying later is safe.
var ErrUnavailable = errors.New("unavailable")

type unavailableError struct{ msg string }

func (e *unavailableError) Error() string        { return e.msg }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

func unavailable(format string, args ...any) error {
	return &unavailableError{fmt.Sprintf(format, args...)}
}

// maxHops bounds how often one key command is passed on between nodes whose views of
// the ring disagree; past it the command fails instead of circling.
const maxHops = 4

// Router is the Backend of a cluster node: it runs a key command on the local store when
// this node holds the key's partition and forwards it otherwise, fans cluster-wide
// commands out to every member, moves partitions when the ring changes, and fences the
// node when it may have lost contact with the cluster. docs/cluster.md explains why.
type Router struct {
	self  string
	cfg   ClusterConfig
	log   hclog.Logger
	store *cache.Store
	ml    *Membership
	tc    *transport.Client
	ts    *transport.Server
	t0    time.Time // origin of the monotonic times below

	ringCfg ring.Config
	viewMu  sync.Mutex // serializes setView
	ring    atomic.Pointer[ring.Ring]
	// prevRing is the ring before the last change, ringNoSelf the current members
	// without this node: where an unsettled partition probably still is.
	prevRing   atomic.Pointer[ring.Ring]
	ringNoSelf atomic.Pointer[ring.Ring]
	view       atomic.Pointer[memberView]
	parts      []partition

	// Fencing (fence.go).
	lease      atomic.Int64 // monotonic ns until which local data may be served
	fenced     atomic.Bool  // set when the lease lapsed or quorum was lost; cleared by recovery
	quorum     atomic.Bool  // this node sees a strict majority of the cluster
	leaseLen   time.Duration
	failedAt   map[string]time.Time // members declared dead, for the majority count (loop only)
	lastRejoin time.Time            // loop only
	rejoining  atomic.Bool

	// Incoming handoffs and the invalidations that arrive meanwhile (handoff.go).
	importMu  sync.RWMutex
	receiving map[int]time.Time // partition → when its handoff began
	invLog    invLog            // recent invalidations, for imports

	outMu    sync.Mutex
	outgoing map[string]int // peers partitions are being moved to → transfers in progress

	retry *retryQueues

	evMu   sync.Mutex
	events []MemberEvent // from memberlist, for the loop

	// For the dashboard: the events it lists and this node's request samples (set by New).
	eventLog *eventLog
	series   *seriesRecorder

	reconcileMu   sync.Mutex // one reconcile at a time
	reconcileKick chan struct{}
	kick          chan struct{}
	stop          chan struct{}
	closeOnce     sync.Once
	wg            sync.WaitGroup
	leaving       atomic.Bool
	started       time.Time

	fwdMisses    atomic.Uint64 // GETs answered as misses because the owner was unreachable
	routeRetries atomic.Uint64 // key commands tried again after they found no holder (exec)
	handedOut    atomic.Uint64 // entries sent in handoffs

	metrics *clusterMetrics // forwarding, fan-out, handoff and membership metrics (metrics_cluster.go)
}

// partition is this node's state for one ring partition.
type partition struct {
	// mu is held shared by every local command on the partition and exclusively while
	// the partition is handed off, so a handoff sees no concurrent write and commands
	// that arrive meanwhile wait, then follow the partition to its new holder.
	mu sync.RWMutex
	// held: this node is the partition's authority and serves it from its store.
	held atomic.Bool
	// movedTo names the member the partition was handed to (when not held).
	movedTo atomic.Pointer[string]
	// holder names a member known to hold the partition while this node owns it in its
	// ring but does not hold it yet (it waits for the handoff).
	holder atomic.Pointer[string]
}

// memberView is the set of live members the node routes by.
type memberView struct {
	names   []string          // sorted, self included
	peer    map[string]string // name → peer transport address
	leaving map[string]bool   // members that announced they are leaving
}

func (v *memberView) alive(name string) bool { _, ok := v.peer[name]; return ok }

// alone reports whether this node is the only member it knows of: then no command waits
// for a peer (there is none to forward to or fan out to), so an event loop may run
// commands itself (evloop_linux.go). Before the first view it is false.
func (r *Router) alone() bool {
	v := r.view.Load()
	return v != nil && len(v.peer) <= 1
}

func loadName(p *atomic.Pointer[string]) string {
	if s := p.Load(); s != nil {
		return *s
	}
	return ""
}

func storeName(p *atomic.Pointer[string], name string) {
	if name == "" {
		p.Store(nil)
	} else {
		p.Store(&name)
	}
}

var _ Backend = (*Router)(nil)

// now is the monotonic time since the router started.
func (r *Router) now() int64 { return int64(time.Since(r.t0)) }

// --- key commands

// exec runs op (execOnce). On the node the client sent it to, a command that found no
// holder (no holder settled yet, or the hops ran out between members whose views of the
// ring disagree for a moment while a partition moves: a join, a leave) ran nowhere, so it
// is tried again after a short wait, within the command's forward deadline, instead of
// failing the client during a graceful ring change. A command that runs or fails
// otherwise costs nothing more than before (no clock read).
func (r *Router) exec(ctx context.Context, op keyOp) (keyReply, error) {
	entry := op.Hop == 0
	rep, err := r.execOnce(ctx, &op)
	if !entry || err == nil || !notRouted(err) {
		return rep, err
	}
	if op.Deadline == 0 { // never forwarded: its deadline starts now
		op.Deadline = time.Now().Add(r.cfg.ForwardTimeout).UnixNano()
	}
	deadline := time.Unix(0, op.Deadline) // every attempt's hops share the first's
	for wait := time.Millisecond; time.Now().Add(wait).Before(deadline); wait = min(2*wait, 50*time.Millisecond) {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return rep, err
		case <-t.C:
		}
		r.routeRetries.Add(1)
		op.Hop = 0
		if rep, err = r.execOnce(ctx, &op); err == nil || !notRouted(err) {
			return rep, err
		}
	}
	return rep, err
}

// What a command that found no holder says (it may come back from a peer as text).
const (
	errNoHolderYet = "has no holder yet (ownership is being settled), retry"
	errMoving      = "is moving, retry"
)

// notRouted reports whether err says the command found no holder and ran nowhere.
func notRouted(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, errMoving) || strings.Contains(msg, errNoHolderYet)
}

// execOnce runs op where the key's partition is held: here if this node holds it, else on
// the member that does (or that this node believes does), one hop further. It sets
// op.Hop and, on the first forward, op.Deadline.
func (r *Router) execOnce(ctx context.Context, op *keyOp) (keyReply, error) {
	p := r.store.PartitionOf(op.Key)
	ps := &r.parts[p]
	if ps.held.Load() && (op.Op == opGet || op.Op == opGetEntry) {
		// Reads need not exclude a handoff: until the commit this node's copy is the
		// partition's current state, and a read racing the commit is concurrent with
		// every write the new holder accepts after it.
		return r.execLocal(*op)
	}
	if ps.held.Load() {
		ps.mu.RLock()
		if ps.held.Load() {
			rep, err := r.execLocal(*op)
			ps.mu.RUnlock()
			return rep, err
		}
		ps.mu.RUnlock() // handed off while we waited: follow it
	}
	target := r.routeTarget(p)
	switch {
	case target == "":
		return keyReply{}, unavailable("partition %d "+errNoHolderYet, p)
	case int(op.Hop) >= maxHops:
		return keyReply{}, unavailable("routing: ownership of partition %d "+errMoving, p)
	}
	op.Hop++
	addr, ok := r.view.Load().peer[target]
	if !ok {
		return keyReply{}, unavailable("owner %s of partition %d is not a live member", target, p)
	}
	now := time.Now()
	if op.Deadline == 0 { // the first hop sets it; later hops keep it
		op.Deadline = now.Add(r.cfg.ForwardTimeout).UnixNano()
	}
	ctx, cancel := context.WithDeadline(ctx, time.Unix(0, op.Deadline))
	defer cancel()
	rep, err := transport.CallTyped[keyOp, keyReply](ctx, r.tc, addr, kindKeyOp, *op)
	r.countForward(target, op.Op, err)
	if err == nil {
		r.onContact()
	}
	if err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return keyReply{}, errors.New(re.Msg)
		}
		if errors.Is(err, transport.ErrNotSent) {
			return keyReply{}, unavailable("owner %s unreachable: %v", target, err)
		}
		// Sent, and no answer: the owner may have run it (clients must treat the
		// outcome as unknown; docs/cluster.md, "Routing").
		return keyReply{}, unavailable("owner %s did not answer, the command may have run: %v", target, err)
	}
	return rep, rep.Err.decode()
}

// routeTarget is where a command for partition p goes when this node does not hold it.
func (r *Router) routeTarget(p int) string {
	ps := &r.parts[p]
	v := r.view.Load()
	if m := loadName(&ps.movedTo); m != "" && v.alive(m) {
		return m
	}
	owner := r.ring.Load().Owner(p)
	if owner != r.self {
		return owner
	}
	if h := loadName(&ps.holder); h != "" && h != r.self && v.alive(h) {
		return h
	}
	// Not settled yet: the partition is most likely still with its owner in the
	// previous ring (a member is leaving) or in the ring without this node (it is
	// joining). That node serves it or passes the command on; hops are bounded.
	for _, rg := range []*ring.Ring{r.prevRing.Load(), r.ringNoSelf.Load()} {
		if rg != nil && rg.Partitions() == len(r.parts) {
			if o := rg.Owner(p); o != "" && o != r.self && v.alive(o) {
				return o
			}
		}
	}
	return ""
}

// execLocal runs op on the local store. The caller holds the partition.
func (r *Router) execLocal(op keyOp) (keyReply, error) {
	s := r.store
	if !r.serving() {
		if op.Op == opGet || op.Op == opGetEntry {
			r.fwdMisses.Add(1)
			return keyReply{}, nil
		}
		return keyReply{}, unavailable("node %s is fenced: it lost contact with the cluster and serves no data until it rejoins", r.self)
	}
	var rep keyReply
	var err error
	switch op.Op {
	case opGet:
		rep.Value, rep.OK = s.Get(op.Key)
	case opGetEntry:
		var e cache.Entry
		if e, rep.OK = s.GetEntry(op.Key); rep.OK {
			w := toWire(e)
			rep.Entry = &w
		}
	case opPut:
		err = s.Put(op.Key, op.Value, op.TTL, op.Tags)
		rep.OK = err == nil
	case opAdd:
		rep.OK, err = s.Add(op.Key, op.Value, op.TTL, op.Tags)
	case opSet:
		var res cache.SetResult
		res, err = s.Set(op.Key, op.Value, cache.SetOptions{TTL: op.TTL, KeepTTL: op.KeepTTL, Tags: op.Tags, Mode: cache.SetMode(op.Mode)})
		rep.OK, rep.Value, rep.HadOld = res.Stored, res.Old, res.HadOld
	case opSetTTL:
		rep.OK = s.SetTTL(op.Key, op.TTL)
	case opIncr:
		rep.Int, err = s.Incr(op.Key, op.Delta, op.TTL, op.Tags)
	case opDecr:
		rep.Int, err = s.Decr(op.Key, op.Delta, op.TTL, op.Tags)
	case opDel:
		rep.OK = s.Del(op.Key)
	default:
		err = fmt.Errorf("unknown key operation %d", op.Op)
	}
	if err == nil && op.Op != opGet && op.Op != opGetEntry && !r.serving() {
		// Paused between the check above and the write (SIGSTOP, a long GC): the
		// cluster may have moved on meanwhile, so do not acknowledge a write it will not
		// see; its outcome is unknown, as for any write that fails in flight.
		return keyReply{}, unavailable("node %s lost its lease while writing; the write may not be visible, retry", r.self)
	}
	return rep, err
}

// forwardDeadlineSkew is how far past its deadline, by this node's clock, a forwarded
// command may still start: room for the clocks of two members to differ.
const forwardDeadlineSkew = time.Second

// handleKeyOp answers a key command forwarded by a peer. One that arrives past its
// deadline is refused unrun: the node that forwarded it has answered its client already
// ("did not answer, the command may have run"), and a write must not take effect long
// after that, e.g. when TCP delivers it late after a healed partition. So an unknown
// outcome is settled within ForwardTimeout + forwardDeadlineSkew of the command.
func (r *Router) handleKeyOp(ctx context.Context, _ string, op keyOp) (keyReply, error) {
	if op.Deadline != 0 && time.Now().After(time.Unix(0, op.Deadline).Add(forwardDeadlineSkew)) {
		err := unavailable("forwarded command arrived after its deadline: not run")
		return keyReply{Err: encodeError(err)}, nil
	}
	rep, err := r.exec(ctx, op)
	rep.Err = encodeError(err)
	return rep, nil
}

func (r *Router) Put(ctx context.Context, key string, value []byte, ttl time.Duration, tags []string) error {
	_, err := r.exec(ctx, keyOp{Op: opPut, Key: key, Value: value, TTL: ttl, Tags: tags})
	return err
}

func (r *Router) Add(ctx context.Context, key string, value []byte, ttl time.Duration, tags []string) (bool, error) {
	rep, err := r.exec(ctx, keyOp{Op: opAdd, Key: key, Value: value, TTL: ttl, Tags: tags})
	return rep.OK, err
}

func (r *Router) Set(ctx context.Context, key string, value []byte, o cache.SetOptions) (cache.SetResult, error) {
	rep, err := r.exec(ctx, keyOp{Op: opSet, Key: key, Value: value, TTL: o.TTL, KeepTTL: o.KeepTTL, Tags: o.Tags, Mode: uint8(o.Mode)})
	return cache.SetResult{Stored: rep.OK, Old: rep.Value, HadOld: rep.HadOld}, err
}

func (r *Router) SetTTL(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	rep, err := r.exec(ctx, keyOp{Op: opSetTTL, Key: key, TTL: ttl})
	return rep.OK, err
}

func (r *Router) Incr(ctx context.Context, key string, delta int64, ttl time.Duration, tags []string) (int64, error) {
	rep, err := r.exec(ctx, keyOp{Op: opIncr, Key: key, Delta: delta, TTL: ttl, Tags: tags})
	return rep.Int, err
}

func (r *Router) Decr(ctx context.Context, key string, by int64, ttl time.Duration, tags []string) (int64, error) {
	rep, err := r.exec(ctx, keyOp{Op: opDecr, Key: key, Delta: by, TTL: ttl, Tags: tags})
	return rep.Int, err
}

// Get answers a miss, not an error, when the owner cannot be reached: a cache miss is
// always allowed, and the client falls back to its source of truth.
func (r *Router) Get(ctx context.Context, key string) ([]byte, bool, error) {
	rep, err := r.exec(ctx, keyOp{Op: opGet, Key: key})
	if errors.Is(err, ErrUnavailable) {
		r.fwdMisses.Add(1)
		return nil, false, nil
	}
	return rep.Value, rep.OK, err
}

func (r *Router) GetEntry(ctx context.Context, key string) (cache.Entry, bool, error) {
	rep, err := r.exec(ctx, keyOp{Op: opGetEntry, Key: key})
	if errors.Is(err, ErrUnavailable) {
		r.fwdMisses.Add(1)
		return cache.Entry{}, false, nil
	}
	if err != nil || rep.Entry == nil {
		return cache.Entry{}, false, err
	}
	return rep.Entry.entry(), true, nil
}

func (r *Router) Del(ctx context.Context, key string) (bool, error) {
	rep, err := r.exec(ctx, keyOp{Op: opDel, Key: key})
	return rep.OK, err
}

// --- the ring

// setView installs the live members and, if the members partitions may be placed on
// changed, a new ring. A member that announced it is leaving still gets commands
// forwarded to it but no partitions.
func (r *Router) setView(members []Member) (changed bool) {
	r.viewMu.Lock()
	defer r.viewMu.Unlock()
	v := &memberView{peer: make(map[string]string, len(members)), leaving: map[string]bool{}}
	var placed []string
	for _, m := range members {
		v.names = append(v.names, m.Name)
		if m.Leaving {
			v.leaving[m.Name] = true
		}
		peer := m.Meta.Peer
		if m.Name == r.self {
			peer = "self"
		}
		v.peer[m.Name] = peer
		if !m.Leaving && !(m.Name == r.self && r.leaving.Load()) {
			placed = append(placed, m.Name)
		}
	}
	slices.Sort(v.names)
	slices.Sort(placed)
	r.view.Store(v)
	prev := r.ring.Load()
	if prev != nil && slices.Equal(prev.Members(), placed) {
		return false
	}
	version := uint64(1)
	if prev != nil {
		version = prev.Version() + 1
	}
	rg, err := ring.New(r.ringCfg, placed, version)
	if err != nil {
		r.log.Error("cannot build the ring; keeping the previous one", "members", placed, "error", err)
		return false
	}
	r.ring.Store(rg)
	r.prevRing.Store(prev)
	others := slices.DeleteFunc(slices.Clone(placed), func(n string) bool { return n == r.self })
	if alt, err := ring.New(r.ringCfg, others, version); err == nil {
		r.ringNoSelf.Store(alt)
	}
	gained, lost := prev.Changes(rg, r.self)
	r.log.Info("ring changed", "version", version, "members", placed, "gained", len(gained), "lost", len(lost))
	return true
}

// --- the cluster view (HTTP)

// RingInfo implements clusterView.
func (r *Router) RingInfo() RingInfo {
	rg := r.ring.Load()
	owners := make([]string, rg.Partitions())
	for p := range owners {
		owners[p] = rg.Owner(p)
	}
	return RingInfo{Version: rg.Version(), Partitions: rg.Partitions(), Members: rg.Members(), Owners: owners}
}

// Ready implements clusterView.
func (r *Router) Ready() (bool, string) {
	switch {
	case r.leaving.Load():
		return false, "leaving the cluster"
	case !r.ml.Joined() && time.Since(r.started) < joinGrace:
		return false, "joining the cluster"
	case !r.quorum.Load():
		return false, "fenced: this node sees at most half of the cluster"
	case !r.serving():
		return false, "fenced: lost contact with the cluster, recovering"
	}
	return true, ""
}

// Members implements clusterView.
func (r *Router) Members(ctx context.Context) []MemberInfo {
	rg := r.ring.Load()
	all := r.ml.Members()
	out := make([]MemberInfo, len(all))
	var wg sync.WaitGroup
	for i, m := range all {
		out[i] = MemberInfo{Name: m.Name, State: m.State, Self: m.Name == r.self, Gossip: m.Gossip, Peer: m.Meta.Peer,
			TCP: m.Meta.TCP, HTTP: m.Meta.HTTP, RESP: m.Meta.RESP, Version: m.Meta.Version, Partitions: len(rg.Owned(m.Name))}
		if m.State != "alive" && m.State != "suspect" {
			continue
		}
		wg.Add(1)
		go func(mi *MemberInfo) {
			defer wg.Done()
			st, err := r.memberStats(ctx, mi.Name, mi.Peer)
			if err != nil {
				mi.StatsError = err.Error()
				return
			}
			sr := statsReplyOf(st)
			mi.Stats = &sr
		}(&out[i])
	}
	wg.Wait()
	return out
}

// localStats is this node's own figures: its store plus the misses the router answered.
func (r *Router) localStats() cache.Stats {
	st := r.store.Stats()
	st.Misses += r.fwdMisses.Load()
	return st
}

func (r *Router) memberStats(ctx context.Context, name, addr string) (cache.Stats, error) {
	if name == r.self {
		return r.localStats(), nil
	}
	rep, err := transport.CallTyped[statsReq, statsReply](ctx, r.tc, addr, kindStats, statsReq{})
	return rep.Stats, err
}
