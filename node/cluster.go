package node

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/ring"
	"github.com/tagcache/tagcache/transport"
)

// joinGrace is how long a node started with Join waits to find another member before it
// serves alone as a one-node cluster (the first pod of a StatefulSet finds only itself).
const joinGrace = 10 * time.Second

// complete fills the zero fields of cc with defaults and checks it.
func (cc ClusterConfig) complete(bind string) (ClusterConfig, error) {
	if cc.NodeName == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "tagcache"
		}
		var b [3]byte
		_, _ = rand.Read(b[:])
		cc.NodeName = host + "-" + hex.EncodeToString(b[:])
	}
	if cc.Bind == "" {
		cc.Bind = bind
	}
	if cc.Name == "" {
		cc.Name = DefaultClusterName
	}
	if cc.Preset == "" {
		cc.Preset = "lan"
		if isLoopback(cc.Bind) {
			cc.Preset = "local"
		}
	}
	if cc.InvalidationTimeout == 0 {
		cc.InvalidationTimeout = DefaultInvalidationTimeout
	}
	if cc.ForwardTimeout == 0 {
		cc.ForwardTimeout = DefaultForwardTimeout
	}
	if cc.DeadForget == 0 {
		cc.DeadForget = DefaultDeadForget
	}
	if cc.HandoffBatch == 0 {
		cc.HandoffBatch = DefaultHandoffBatch
	}
	switch {
	case len(cc.Key) == 0 && !isLoopback(cc.Bind):
		return cc, fmt.Errorf("cluster: a cluster key is required on non-loopback bind %s (set --cluster-key or TAGCACHE_CLUSTER_KEY)", cc.Bind)
	case cc.InvalidationTimeout < 0 || cc.ForwardTimeout < 0 || cc.DeadForget < 0 || cc.HandoffBatch < 0:
		return cc, fmt.Errorf("cluster: timeouts and the handoff batch must be positive")
	case cc.GossipPort < 0 || cc.GossipPort > 65535 || cc.PeerPort < 0 || cc.PeerPort > 65535:
		return cc, fmt.Errorf("cluster: ports must be 0..65535, got gossip %d, peer %d", cc.GossipPort, cc.PeerPort)
	}
	return cc, nil
}

// newRouter builds the router of a cluster node. Nothing listens before start.
func newRouter(cc ClusterConfig, store *cache.Store, logger hclog.Logger) (*Router, error) {
	r := &Router{
		self: cc.NodeName, cfg: cc, log: logger.Named("cluster"), store: store, t0: time.Now(),
		ringCfg:       ring.Config{Partitions: store.Partitions(), Load: ring.DefaultLoad, VirtualNodes: ring.DefaultVirtualNodes},
		parts:         make([]partition, store.Partitions()),
		failedAt:      map[string]time.Time{},
		receiving:     map[int]time.Time{},
		outgoing:      map[string]int{},
		kick:          make(chan struct{}, 1),
		reconcileKick: make(chan struct{}, 1),
		stop:          make(chan struct{}),
	}
	r.retry = newRetryQueues(r)
	r.metrics = newClusterMetrics(cc.DeadForget)
	r.eventLog = newEventLog()
	r.lease.Store(noLease)
	r.quorum.Store(true)
	// Alone, the node holds everything; started to join a cluster, it holds nothing
	// until its partitions are settled with the members it finds.
	for p := range r.parts {
		r.parts[p].held.Store(len(cc.Join) == 0)
	}
	r.setView([]Member{{Name: r.self, State: "alive"}})
	tcfg := transport.DefaultConfig(r.self, cc.Key)
	tcfg.AllowNoKey = len(cc.Key) == 0
	if runtime.GOMAXPROCS(0) <= 2 {
		// One connection per peer batches more frames per write; with few cores that
		// matters more than parallel readers (docs/performance.md, "Forwarding").
		tcfg.ConnsPerPeer = 1
	}
	tcfg.Logger = logger.Named("transport")
	tcfg.OnCall = r.observePeerCall
	var err error
	if r.ts, err = transport.NewServer(tcfg); err != nil {
		return nil, err
	}
	if r.tc, err = transport.NewClient(tcfg); err != nil {
		return nil, err
	}
	r.handle(r.ts)
	return r, nil
}

// handle registers the router's handler of every message kind on ts.
func (r *Router) handle(ts *transport.Server) {
	for kind, h := range r.handlers() {
		ts.Handle(kind, func(ctx context.Context, peer string, kind uint16, body []byte) ([]byte, error) {
			r.onContact() // a peer reached this node: contact, like a probe
			return h(ctx, peer, kind, body)
		})
	}
}

// handlers are the router's handlers by message kind.
func (r *Router) handlers() map[uint16]transport.Handler {
	return map[uint16]transport.Handler{
		kindKeyOp:          transport.Typed(r.handleKeyOp),
		kindInvalidate:     transport.Typed(r.handleInvalidate),
		kindStats:          transport.Typed(r.handleStats),
		kindKeysByTag:      transport.Typed(r.handleKeysByTag),
		kindTags:           transport.Typed(r.handleTags),
		kindScan:           transport.Typed(r.handleScan),
		kindHandoffBegin:   transport.Typed(r.handleHandoffBegin),
		kindHandoffEntries: transport.Typed(r.handleHandoffEntries),
		kindHandoffCommit:  transport.Typed(r.handleHandoffCommit),
		kindWhoHolds:       transport.Typed(r.handleWhoHolds),
		kindPing:           transport.Typed(r.handlePing),
		kindSeries:         transport.Typed(r.handleSeries),
	}
}

func (r *Router) handlePing(context.Context, string, pingReq) (pingReply, error) {
	return pingReply{Name: r.self, RingVersion: r.ring.Load().Version()}, nil
}

// Ping calls member name over the peer transport and returns the round-trip time.
func (r *Router) Ping(ctx context.Context, name string) (time.Duration, error) {
	addr, ok := r.view.Load().peer[name]
	if !ok || name == r.self {
		return 0, fmt.Errorf("%s is not a live peer", name)
	}
	start := time.Now()
	rep, err := transport.CallTyped[pingReq, pingReply](ctx, r.tc, addr, kindPing, pingReq{})
	if err == nil && rep.Name != name {
		err = fmt.Errorf("%s answered for %s", rep.Name, name)
	}
	return time.Since(start), err
}

// start opens the peer transport and memberlist and joins. clientAddrs are the node's
// client listeners, advertised in the member metadata.
func (r *Router) start(clientAddrs map[string]net.Addr) error {
	cc := r.cfg
	peerAddr, err := r.ts.Listen(net.JoinHostPort(cc.Bind, strconv.Itoa(cc.PeerPort)))
	if err != nil {
		return err
	}
	host := cc.Advertise
	if host == "" {
		host = cc.Bind
	}
	advertised := func(a net.Addr) string {
		if a == nil {
			return ""
		}
		_, port, _ := net.SplitHostPort(a.String())
		return net.JoinHostPort(host, port)
	}
	meta := MemberMeta{Version: transport.Version, Peer: advertised(peerAddr),
		TCP: advertised(clientAddrs["tcp"]), HTTP: advertised(clientAddrs["http"]), RESP: advertised(clientAddrs["resp"])}
	r.ml, err = NewMembership(MembershipConfig{
		NodeName: r.self, Bind: cc.Bind, Port: cc.GossipPort, Advertise: cc.Advertise, Join: cc.Join,
		Key: cc.Key, Label: cc.Name, Preset: cc.Preset, Meta: meta, Logger: r.log.Named("memberlist"),
		OnEvent: r.onEvent, OnContact: r.onContact,
	})
	if err != nil {
		r.ts.Close()
		return err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		// A wildcard bind: advertise the address memberlist picked (a private one).
		host, _, _ = net.SplitHostPort(r.ml.Addr())
		meta = MemberMeta{Version: transport.Version, Peer: advertised(peerAddr),
			TCP: advertised(clientAddrs["tcp"]), HTTP: advertised(clientAddrs["http"]), RESP: advertised(clientAddrs["resp"])}
		if err := r.ml.UpdateMeta(meta); err != nil {
			r.ml.Shutdown()
			r.ts.Close()
			return err
		}
	}
	// The lease must end before the others can declare this node dead, counted from
	// the last contact; 70 % of the earliest time leaves room for scheduling delays.
	r.leaseLen = r.ml.DetectionBound() * 7 / 10
	r.started = time.Now()
	r.eventLog.add("start", r.self, cmp.Or(strings.Join(cc.Join, ", "), "alone"))
	r.log.Info("cluster member started", "name", r.self, "gossip", r.ml.Addr(), "peer", meta.Peer,
		"preset", cc.Preset, "lease", r.leaseLen, "join", cc.Join)
	r.wg.Add(2)
	go r.loop()
	go r.reconciler()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-r.stop; cancel() }()
	r.ml.Start(ctx)
	r.poke()
	return nil
}

// onEvent runs on memberlist's goroutine: note the event and wake the loop.
func (r *Router) onEvent(ev MemberEvent) {
	r.metrics.memberEvent(ev.Kind)
	if ev.Kind == MemberJoin && ev.Meta.Peer != "" {
		// Possibly a restart on the same address: dial it at once, not when the
		// backoff of its predecessor's absence runs out.
		r.tc.Redial(ev.Meta.Peer)
	}
	r.eventLog.add(ev.Kind.String(), ev.Name, "")
	r.evMu.Lock()
	r.events = append(r.events, ev)
	r.evMu.Unlock()
	r.poke()
}

func (r *Router) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Router) pokeReconcile() {
	select {
	case r.reconcileKick <- struct{}{}:
	default:
	}
}

// mayClaim reports whether the node may take partitions nobody holds: it has joined
// the cluster it was told to, or gave up looking (joinGrace).
func (r *Router) mayClaim() bool {
	return r.ml.Joined() || time.Since(r.started) > joinGrace
}

// loop applies membership changes: the member view and ring, the majority and lease,
// recovery from a fence; it wakes the reconciler when partitions may have to move.
func (r *Router) loop() {
	defer r.wg.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-r.kick:
		case <-tick.C:
		}
		r.evMu.Lock()
		events := r.events
		r.events = nil
		r.evMu.Unlock()
		for _, ev := range events {
			switch ev.Kind {
			case MemberFail:
				r.failedAt[ev.Name] = time.Now()
				r.log.Warn("member failed", "name", ev.Name)
			case MemberLeave:
				delete(r.failedAt, ev.Name)
				r.log.Info("member left", "name", ev.Name)
			case MemberJoin:
				delete(r.failedAt, ev.Name)
				r.log.Info("member joined", "name", ev.Name)
			}
		}
		alive := r.ml.Alive()
		changed := r.setView(alive)
		if changed {
			rg := r.ring.Load()
			r.eventLog.add("ring", "", fmt.Sprintf("version %d, members %s", rg.Version(), strings.Join(rg.Members(), ", ")))
		}
		names := r.view.Load().names
		r.updateFence(names)
		wasFenced := r.fenced.Load()
		r.recoverFence()
		if changed || (wasFenced && !r.fenced.Load()) || len(events) > 0 {
			r.pokeReconcile()
		}
		r.expireReceives()
		r.rejoinFailed()
	}
}

// rejoinEvery is how often a node tries to join again the members it declared dead.
const rejoinEvery = 2 * time.Second

// rejoinFailed tries, in the background and one attempt at a time, to join the members
// declared dead within DeadForget: memberlist stops talking to dead members, so without
// this the two sides of a healed partition would stay apart.
func (r *Router) rejoinFailed() {
	if len(r.failedAt) == 0 || time.Since(r.lastRejoin) < rejoinEvery || !r.rejoining.CompareAndSwap(false, true) {
		return
	}
	r.lastRejoin = time.Now()
	var addrs []string
	for _, m := range r.ml.Members() {
		if _, failed := r.failedAt[m.Name]; failed && m.State == "dead" && m.Gossip != "" {
			addrs = append(addrs, m.Gossip)
		}
	}
	if len(addrs) == 0 {
		r.rejoining.Store(false)
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.rejoining.Store(false)
		if n, err := r.ml.JoinAddrs(addrs); n > 0 {
			r.log.Info("rejoined members declared dead", "answered", n, "of", len(addrs))
		} else {
			r.log.Debug("members declared dead still unreachable", "addrs", addrs, "error", err)
		}
	}()
}

// reconciler moves and settles partitions whenever the loop says so, and retries
// unfinished work every 250 ms.
func (r *Router) reconciler() {
	defer r.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	pending := true
	for {
		select {
		case <-r.stop:
			return
		case <-r.reconcileKick:
			pending = r.reconcile()
		case <-tick.C:
			if pending {
				pending = r.reconcile()
			}
		}
	}
}

// Leave hands every partition this node holds to its owner among the other members,
// then leaves memberlist. Commands keep being served (and follow their partitions)
// throughout. It returns when done or when ctx ends.
func (r *Router) Leave(ctx context.Context) error {
	r.leaving.Store(true)
	if err := r.ml.AnnounceLeaving(time.Second); err != nil {
		r.log.Warn("could not announce leaving; handing off anyway", "error", err)
	}
	r.setView(r.ml.Alive()) // a ring without this node
	start := time.Now()
	for r.reconcile() {
		if !r.serving() {
			r.log.Warn("leaving while fenced: nothing this node holds can be handed off")
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leave: handoff unfinished: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	r.log.Info("handed off every partition", "took", time.Since(start).Round(time.Millisecond),
		"entries", r.handedOut.Load())
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(min(time.Until(d), 5*time.Second), 100*time.Millisecond)
	}
	return r.ml.Leave(timeout)
}

func (r *Router) isClosed() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// Close stops the router without leaving: memberlist, the transport and the loops.
func (r *Router) Close() error {
	r.closeOnce.Do(func() { close(r.stop) })
	var err error
	if r.ml != nil {
		err = r.ml.Shutdown()
	}
	r.ts.Close()
	r.tc.Close()
	r.wg.Wait()
	return err
}
