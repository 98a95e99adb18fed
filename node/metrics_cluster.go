package node

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cluster metrics (docs/metrics.md): what the router forwards, fans out and hands off,
// counted as it happens, and the cluster state (ring, partitions, fence, gossip health),
// read at scrape time. A standalone node exposes the same names with its own state: one
// member owning every partition, never fenced.
//
// The request path does no label lookups: every peer's label children are resolved on
// first use and kept in a peerMetrics, found by name or peer-transport address in an
// index rebuilt only when the member view changes. A peer's series are dropped once it
// has been gone from the view for --dead-forget, so restarts under new names do not grow
// the registry without bound.

// forwardedCommands names the key operations (keyOp.Op) in the command label.
var forwardedCommands = [...]string{
	opGet: "get", opGetEntry: "get_entry", opPut: "put", opAdd: "add", opSet: "set",
	opSetTTL: "set_ttl", opIncr: "incr", opDecr: "decr", opDel: "del",
}

// peerKinds names the peer message kinds in the kind label; 0 stands for any other.
var peerKinds = [...]string{
	0: "other", kindKeyOp: "forward", kindInvalidate: "invalidation", kindStats: "stats",
	kindKeysByTag: "keys_by_tag", kindTags: "tags", kindScan: "scan",
	kindHandoffBegin: "handoff_begin", kindHandoffEntries: "handoff_entries",
	kindHandoffCommit: "handoff_commit", kindWhoHolds: "who_holds", kindPing: "ping",
}

// results are the values of the result label, by index: 0 ok, 1 error.
var results = [2]string{"ok", "error"}

// clusterBuckets span a loopback round trip (tens of µs) to an invalidation that waits
// out its timeout (2 s by default).
var clusterBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// clusterMetrics are a router's counters and histograms. A standalone node registers a
// set that is never incremented.
type clusterMetrics struct {
	forwarded   *prometheus.CounterVec   // command, peer, result
	peerLatency *prometheus.HistogramVec // peer, kind
	fanout      prometheus.Histogram
	invFailures *prometheus.CounterVec // peer
	partitions  *prometheus.CounterVec // direction
	entries     *prometheus.CounterVec // direction
	events      *prometheus.CounterVec // kind

	partsSent, partsReceived     prometheus.Counter
	entriesSent, entriesReceived prometheus.Counter
	eventByKind                  [MemberUpdate + 1]prometheus.Counter // by MemberEventKind

	deadForget time.Duration
	index      atomic.Pointer[peerIndex]
	mu         sync.Mutex              // protects peers; serializes index rebuilds
	peers      map[string]*peerMetrics // by name: live peers and those gone less than deadForget
}

// peerIndex finds a peer's metrics under one member view.
type peerIndex struct {
	view   *memberView
	byName map[string]*peerMetrics
	byAddr map[string]*peerMetrics // by peer-transport address
}

// peerMetrics are one peer's label children, resolved on first use.
type peerMetrics struct {
	m         *clusterMetrics
	name      string
	goneSince time.Time // zero while the peer is in the view; under m.mu
	invFailed prometheus.Counter
	fwd       [len(forwardedCommands)][len(results)]atomic.Pointer[prometheus.Counter]
	latency   [len(peerKinds)]atomic.Pointer[prometheus.Observer]
}

func newClusterMetrics(deadForget time.Duration) *clusterMetrics {
	if deadForget <= 0 {
		deadForget = DefaultDeadForget
	}
	m := &clusterMetrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcache_forwarded_requests_total",
			Help: "Key commands this node forwarded to the peer it routed them to, by command, peer and result (ok: the peer answered, whatever the command's outcome; error: no answer).",
		}, []string{"command", "peer", "result"}),
		peerLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tagcache_peer_request_duration_seconds",
			Help:    "Time from sending a request to a peer over the peer transport to its reply or failure, by peer and message kind.",
			Buckets: clusterBuckets,
		}, []string{"peer", "kind"}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tagcache_invalidation_fanout_duration_seconds",
			Help:    "Time this node, coordinating an invalidation, waited for every peer to acknowledge it or fail (retries included).",
			Buckets: clusterBuckets,
		}),
		invFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcache_invalidation_failures_total",
			Help: "Invalidations this node coordinated that the peer did not acknowledge in time (the client was told; the retry queue keeps sending them).",
		}, []string{"peer"}),
		partitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcache_handoff_partitions_total",
			Help: "Partitions handed off by this node (sent) or to it (received), counted at the commit.",
		}, []string{"direction"}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcache_handoff_entries_total",
			Help: "Entries this node sent in committed handoffs, or imported from handoffs (received; entries it already had newer, or that an invalidation covered, are not imported).",
		}, []string{"direction"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcache_membership_events_total",
			Help: "Membership events this node saw about other members, by kind (join, leave, fail, update).",
		}, []string{"kind"}),
		deadForget: deadForget,
		peers:      map[string]*peerMetrics{},
	}
	m.partsSent, m.partsReceived = m.partitions.WithLabelValues("sent"), m.partitions.WithLabelValues("received")
	m.entriesSent, m.entriesReceived = m.entries.WithLabelValues("sent"), m.entries.WithLabelValues("received")
	for k := MemberJoin; k <= MemberUpdate; k++ {
		m.eventByKind[k] = m.events.WithLabelValues(k.String())
	}
	return m
}

// peerIndex returns the index of view v, rebuilding it if v is newer than the last one.
func (m *clusterMetrics) peerIndex(v *memberView) *peerIndex {
	if idx := m.index.Load(); idx != nil && idx.view == v {
		return idx
	}
	return m.rebuild(v, time.Now())
}

// rebuild indexes the peers of v. The router installs a new view every 50 ms whether or
// not it changed; an unchanged one reuses the maps.
func (m *clusterMetrics) rebuild(v *memberView, now time.Time) *peerIndex {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.index.Load()
	if prev != nil && prev.view == v {
		return prev
	}
	if prev != nil && prev.view != nil && v != nil && maps.Equal(prev.view.peer, v.peer) {
		idx := &peerIndex{view: v, byName: prev.byName, byAddr: prev.byAddr}
		m.index.Store(idx)
		return idx
	}
	idx := &peerIndex{view: v, byName: map[string]*peerMetrics{}, byAddr: map[string]*peerMetrics{}}
	if v != nil {
		for name, addr := range v.peer {
			if addr == "self" {
				continue
			}
			pm := m.peers[name]
			if pm == nil {
				pm = &peerMetrics{m: m, name: name, invFailed: m.invFailures.WithLabelValues(name)}
				m.peers[name] = pm
			}
			pm.goneSince = time.Time{}
			idx.byName[name] = pm
			if addr != "" {
				idx.byAddr[addr] = pm
			}
		}
	}
	m.index.Store(idx)
	m.pruneLocked(idx, now)
	return idx
}

// peerNamed returns the metrics of peer name: a member of view v, or one that left it
// less than deadForget ago (a call to it was under way when it left); nil otherwise.
func (m *clusterMetrics) peerNamed(v *memberView, name string) *peerMetrics {
	if pm := m.peerIndex(v).byName[name]; pm != nil {
		return pm
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peers[name]
}

// prune drops the series of peers gone from the view for longer than deadForget.
func (m *clusterMetrics) prune(v *memberView, now time.Time) {
	idx := m.peerIndex(v)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked(idx, now)
}

func (m *clusterMetrics) pruneLocked(idx *peerIndex, now time.Time) {
	for name, pm := range m.peers {
		switch _, live := idx.byName[name]; {
		case live:
		case pm.goneSince.IsZero():
			pm.goneSince = now
		case now.Sub(pm.goneSince) > m.deadForget:
			delete(m.peers, name)
			gone := prometheus.Labels{"peer": name}
			m.forwarded.DeletePartialMatch(gone)
			m.peerLatency.DeletePartialMatch(gone)
			m.invFailures.DeletePartialMatch(gone)
		}
	}
}

func (pm *peerMetrics) forwardedCounter(op uint8, result int) prometheus.Counter {
	p := &pm.fwd[op][result]
	if c := p.Load(); c != nil {
		return *c
	}
	c := pm.m.forwarded.WithLabelValues(forwardedCommands[op], pm.name, results[result])
	p.Store(&c)
	return c
}

func (pm *peerMetrics) latencyObserver(kind uint16) prometheus.Observer {
	k := int(kind)
	if k >= len(peerKinds) || peerKinds[k] == "" {
		k = 0
	}
	p := &pm.latency[k]
	if o := p.Load(); o != nil {
		return *o
	}
	o := pm.m.peerLatency.WithLabelValues(pm.name, peerKinds[k])
	p.Store(&o)
	return o
}

// --- the hooks the router calls

// countForward counts a key command forwarded to peer; err is the call's error.
func (r *Router) countForward(peer string, op uint8, err error) {
	if int(op) >= len(forwardedCommands) || forwardedCommands[op] == "" {
		return
	}
	if pm := r.metrics.peerNamed(r.view.Load(), peer); pm != nil {
		result := 0
		if err != nil {
			result = 1
		}
		pm.forwardedCounter(op, result).Inc()
	}
}

// observePeerCall is the peer transport's OnCall: it records one call's latency. A call
// to an address that is no member's (it just left the view) is not recorded.
func (r *Router) observePeerCall(addr string, kind uint16, took time.Duration, _ error) {
	if pm := r.metrics.peerIndex(r.view.Load()).byAddr[addr]; pm != nil {
		pm.latencyObserver(kind).Observe(took.Seconds())
	}
}

// observeFanout records an invalidation fan-out to the peers that started at start.
func (m *clusterMetrics) observeFanout(start time.Time) {
	m.fanout.Observe(time.Since(start).Seconds())
}

// invalidationFailed counts an invalidation peer did not acknowledge.
func (r *Router) invalidationFailed(peer string) {
	if pm := r.metrics.peerNamed(r.view.Load(), peer); pm != nil {
		pm.invFailed.Inc()
	}
}

// handoffSent counts one partition handed off with its entries.
func (m *clusterMetrics) handoffSent(entries int) {
	m.partsSent.Inc()
	m.entriesSent.Add(float64(entries))
}

// handoffImported counts entries imported from a handoff.
func (m *clusterMetrics) handoffImported(entries int) { m.entriesReceived.Add(float64(entries)) }

// handoffReceived counts one partition received (committed).
func (m *clusterMetrics) handoffReceived() { m.partsReceived.Inc() }

// memberEvent counts one membership event.
func (m *clusterMetrics) memberEvent(k MemberEventKind) {
	if k >= MemberJoin && k <= MemberUpdate {
		m.eventByKind[k].Inc()
	}
}

// --- registration and the state read at scrape time

// clusterCollectors are the cluster metrics of a node with backend: its router's, or,
// on a standalone node, a cluster of one.
func clusterCollectors(backend Backend) []prometheus.Collector {
	c := clusterCollector{}
	switch b := backend.(type) {
	case *Router:
		c.r, c.m = b, b.metrics
	case Local:
		c.partitions = b.Store.Partitions()
	}
	if c.m == nil {
		c.m = newClusterMetrics(0)
	}
	return []prometheus.Collector{c.m.forwarded, c.m.peerLatency, c.m.fanout, c.m.invFailures,
		c.m.partitions, c.m.entries, c.m.events, c}
}

// clusterCollector reads the cluster state at scrape time.
type clusterCollector struct {
	r          *Router // nil on a standalone node
	m          *clusterMetrics
	partitions int // a standalone node's
}

var (
	descRingVersion     = prometheus.NewDesc("tagcache_ring_version", "Version of this node's ring; it rises by one with every change of the members partitions are placed on.", nil, nil)
	descPartitionsOwned = prometheus.NewDesc("tagcache_partitions_owned", "Partitions this node's ring gives to this node.", nil, nil)
	descPartitionsHeld  = prometheus.NewDesc("tagcache_partitions_held", "Partitions this node holds (serves from its store); below tagcache_partitions_owned while partitions move to it.", nil, nil)
	descMembers         = prometheus.NewDesc("tagcache_members", "Live members in this node's view, itself included.", nil, nil)
	descFenced          = prometheus.NewDesc("tagcache_fenced", "1 while this node serves no local data (fenced: its lease lapsed or it sees no majority), else 0.", nil, nil)
	descHealthScore     = prometheus.NewDesc("tagcache_memberlist_health_score", "memberlist's health score: 0 is healthy; higher means this node misses gossip deadlines (overloaded, or its network drops packets).", nil, nil)
	descRetryQueue      = prometheus.NewDesc("tagcache_invalidation_retry_queue", "Invalidations queued for retry to a peer that did not acknowledge them, by peer (only peers with a queue).", []string{"peer"}, nil)
)

func (clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRingVersion, descPartitionsOwned, descPartitionsHeld, descMembers, descFenced, descHealthScore, descRetryQueue} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	r := c.r
	if r == nil {
		gauge(descRingVersion, 1) // as standaloneView.RingInfo
		gauge(descPartitionsOwned, float64(c.partitions))
		gauge(descPartitionsHeld, float64(c.partitions))
		gauge(descMembers, 1)
		gauge(descFenced, 0)
		gauge(descHealthScore, 0)
		return
	}
	v := r.view.Load()
	c.m.prune(v, time.Now())
	rg := r.ring.Load()
	held := 0
	for p := range r.parts {
		if r.parts[p].held.Load() {
			held++
		}
	}
	fenced := 0.0
	if !r.serving() {
		fenced = 1
	}
	health := 0
	if r.ml != nil {
		health = r.ml.Health()
	}
	gauge(descRingVersion, float64(rg.Version()))
	gauge(descPartitionsOwned, float64(len(rg.Owned(r.self))))
	gauge(descPartitionsHeld, float64(held))
	gauge(descMembers, float64(len(v.names)))
	gauge(descFenced, fenced)
	gauge(descHealthScore, float64(health))
	for peer, n := range r.retry.Pending() {
		gauge(descRetryQueue, float64(n), peer)
	}
}
