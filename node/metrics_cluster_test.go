package node

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tagcache/tagcache/cache"
)

// samples are the samples of one scrape by series, as exposed:
// `tagcache_forwarded_requests_total{command="get",peer="n1",result="ok"}`.
type samples map[string]float64

// series names a sample: name with the label pairs kv (sorted by label name, as the
// exposition format writes them).
func series(name string, kv ...string) string {
	if len(kv) == 0 {
		return name
	}
	var pairs []string
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	slices.Sort(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

func parseSamples(t testing.TB, r io.Reader) samples {
	t.Helper()
	out := samples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("unparsable sample %q", line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// scrape gathers g as /metrics serves it.
func scrape(t testing.TB, g prometheus.Gatherer) samples {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return parseSamples(t, rec.Body)
}

// scrapeHTTP GETs n's /metrics over HTTP, with no credentials, as Prometheus does.
func scrapeHTTP(t testing.TB, n *Node) samples {
	t.Helper()
	resp, err := http.Get("http://" + n.Addr("http").String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	return parseSamples(t, resp.Body)
}

func (s samples) sum(prefix string) float64 {
	total := 0.0
	for k, v := range s {
		if strings.HasPrefix(k, prefix) {
			total += v
		}
	}
	return total
}

func TestClusterMetricsCountForwardedCommandsByPeerAndCommand(t *testing.T) {
	c := startCluster(t, 3)
	entry, owner := c.nodes[0], c.nodes[1]
	remote, local := c.keyOwnedBy(owner, "fwd"), c.keyOwnedBy(entry, "own")
	before := scrape(t, entry.Metrics().Registry)
	text := dialTextProto(t, entry)
	for _, cmd := range []string{"PUT\t" + remote + "\t-\t-\tv", "PUT\t" + local + "\t-\t-\tv"} {
		if got := text.do(cmd); got != "OK" {
			t.Fatalf("%q: %q", cmd, got)
		}
	}
	for _, key := range []string{remote, local} {
		if got := text.do("GET\t" + key); got != "VALUE\tv" {
			t.Fatalf("GET %s: %q", key, got)
		}
	}
	after := scrape(t, entry.Metrics().Registry)
	delta := func(s string) float64 { return after[s] - before[s] }
	for _, cmd := range []string{"put", "get"} {
		if got := delta(series("tagcache_forwarded_requests_total", "command", cmd, "peer", "n1", "result", "ok")); got != 1 {
			t.Errorf("forwarded %s to n1: counted %v, want 1", cmd, got)
		}
	}
	if got := after.sum("tagcache_forwarded_requests_total") - before.sum("tagcache_forwarded_requests_total"); got != 2 {
		t.Errorf("%v forwarded requests counted in all, want 2 (keys the entry node holds are not forwarded)", got)
	}
	if got := delta(series("tagcache_peer_request_duration_seconds_count", "kind", "forward", "peer", "n1")); got != 2 {
		t.Errorf("forward latency to n1: %v observations, want 2", got)
	}
	if got := delta(series("tagcache_peer_request_duration_seconds_sum", "kind", "forward", "peer", "n1")); got <= 0 {
		t.Errorf("forward latency to n1 sums to %v, want more than 0", got)
	}
	// The owner ran both commands locally: it forwarded nothing.
	if got := scrape(t, owner.Metrics().Registry).sum("tagcache_forwarded_requests_total"); got != 0 {
		t.Errorf("the owner counts %v forwarded requests, want 0", got)
	}
}

// A peer whose transport is gone (its gossip still runs, so it is not declared dead): a
// GET forwarded to it fails (the client sees a miss), an invalidation it does not
// acknowledge is counted against it and queued for retry.
func TestClusterMetricsCountWhatAnUnreachablePeerFailed(t *testing.T) {
	c := startCluster(t, 3)
	entry, victim := c.nodes[0], c.nodes[2]
	key := c.keyOwnedBy(victim, "u")
	text := dialTextProto(t, entry)
	if got := text.do("PUT\t" + key + "\t-\tt\tv"); got != "OK" {
		t.Fatal(got)
	}
	victim.router.ts.Close()
	before := scrape(t, entry.Metrics().Registry)
	if got := text.do("GET\t" + key); got != "NF" {
		t.Fatalf("GET of a key whose owner is unreachable: %q, want a miss", got)
	}
	if got := text.do("INV_TAG\tt"); !strings.Contains(got, "not acknowledged by n2") {
		t.Fatalf("INV_TAG with n2 unreachable: %q", got)
	}
	after := scrape(t, entry.Metrics().Registry)
	delta := func(s string) float64 { return after[s] - before[s] }
	if got := delta(series("tagcache_forwarded_requests_total", "command", "get", "peer", "n2", "result", "error")); got != 1 {
		t.Errorf("failed forwards of GET to n2: %v, want 1", got)
	}
	if got := delta(series("tagcache_invalidation_failures_total", "peer", "n2")); got != 1 {
		t.Errorf("invalidation failures of n2: %v, want 1", got)
	}
	if got := delta(series("tagcache_invalidation_failures_total", "peer", "n1")); got != 0 {
		t.Errorf("invalidation failures of n1, which acknowledged: %v, want 0", got)
	}
	if got := after[series("tagcache_invalidation_retry_queue", "peer", "n2")]; got != 1 {
		t.Errorf("retry queue of n2: %v, want 1", got)
	}
	if got := delta("tagcache_invalidation_fanout_duration_seconds_count"); got != 1 {
		t.Errorf("fan-outs observed: %v, want 1", got)
	}
	if got := delta("tagcache_invalidation_fanout_duration_seconds_sum"); got < invalidationAttempt.Seconds() {
		t.Errorf("a fan-out that waited for an unreachable peer took %vs, less than one attempt (%v)", got, invalidationAttempt)
	}
}

func TestClusterMetricsTimeTheInvalidationFanOut(t *testing.T) {
	c := startCluster(t, 3)
	coord := c.nodes[1]
	text := dialTextProto(t, coord)
	for i := range 30 {
		if got := text.do(fmt.Sprintf("PUT\tk%d\t-\tuser:7\tv", i)); got != "OK" {
			t.Fatal(got)
		}
	}
	before := scrape(t, coord.Metrics().Registry)
	began := time.Now()
	if got := text.do("INV_TAG\tuser:7"); got != "INV_TAG\t30" {
		t.Fatalf("INV_TAG: %q", got)
	}
	after := scrape(t, coord.Metrics().Registry)
	delta := func(s string) float64 { return after[s] - before[s] }
	if got := delta("tagcache_invalidation_fanout_duration_seconds_count"); got != 1 {
		t.Errorf("fan-outs observed by the coordinator: %v, want 1", got)
	}
	if got := delta("tagcache_invalidation_fanout_duration_seconds_sum"); got <= 0 {
		t.Errorf("fan-out took %vs, want more than 0", got)
	}
	// One each; more only if the process stalled (stalls): an attempt slower than
	// invalidationAttempt is retried, and both are observed.
	for _, peer := range []string{"n0", "n2"} {
		if got := delta(series("tagcache_peer_request_duration_seconds_count", "kind", "invalidation", "peer", peer)); got < 1 || got > 1 && !stalledSince(began) {
			t.Errorf("invalidation requests to %s: %v observed, want 1 (more only after a stall)", peer, got)
		}
	}
	if got := after.sum("tagcache_invalidation_failures_total") - before.sum("tagcache_invalidation_failures_total"); got != 0 {
		t.Errorf("%v invalidation failures counted; every peer acknowledged", got)
	}
	// The receivers coordinated nothing.
	for _, n := range []*Node{c.nodes[0], c.nodes[2]} {
		if got := scrape(t, n.Metrics().Registry)["tagcache_invalidation_fanout_duration_seconds_count"]; got != 0 {
			t.Errorf("%s observed %v fan-outs; it only received the invalidation", n.router.self, got)
		}
	}
}

func TestClusterMetricsCountPartitionsAndEntriesMovedByAJoin(t *testing.T) {
	c := startCluster(t, 2)
	ctx := context.Background()
	// A node that fences itself in a stall flushes its store and settles its partitions
	// again: the new node may then claim partitions nobody holds instead of receiving
	// them, or lose what it received, and a member declared dead for a moment moves
	// partitions to and fro. A count that is off ends the run as skipped if that was
	// logged since the first write (skipIfStalled), and fails it if not.
	written := time.Now()
	expect := func(ok bool, format string, args ...any) {
		t.Helper()
		if !ok {
			what := fmt.Sprintf(format, args...)
			skipIfStalled(t, written, what)
			t.Error(what)
		}
	}
	for i := range 600 {
		if err := c.nodes[0].router.Put(ctx, fmt.Sprintf("j%d", i), []byte("v"), 0, nil); err != nil {
			failUnlessStalled(t, written, stallCanExplain(err.Error()), "PUT j%d: %v", i, err)
		}
	}
	before := []samples{scrape(t, c.nodes[0].Metrics().Registry), scrape(t, c.nodes[1].Metrics().Registry)}
	joined := c.add()
	before = append(before, samples{}) // the new node started from nothing
	var after []samples
	moved := func(what, direction string) (total float64) {
		s := series("tagcache_handoff_"+what+"_total", "direction", direction)
		for i := range after {
			total += after[i][s] - before[i][s]
		}
		return total
	}
	owned := len(c.nodes[0].router.ring.Load().Owned(joined.router.self))
	if owned == 0 {
		t.Fatal("the new node owns no partition")
	}
	// Every partition the new node owns came by handoff (all were held): each is counted
	// by the receiver at the commit and by its sender once the commit is acknowledged, a
	// moment later (and the cluster looks settled). At least: a handoff whose commit
	// acknowledgement was lost is done again and counted again by the receiver.
	counted := func() bool {
		after = []samples{scrape(t, c.nodes[0].Metrics().Registry), scrape(t, c.nodes[1].Metrics().Registry), scrape(t, joined.Metrics().Registry)}
		return moved("partitions", "sent") >= float64(owned) && moved("partitions", "received") >= float64(owned)
	}
	for deadline := time.Now().Add(10 * time.Second); !counted() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	expect(counted(), "%v partitions counted as sent and %v as received, want at least the %d the new node owns",
		moved("partitions", "sent"), moved("partitions", "received"), owned)
	newNode := after[2]
	got := newNode[series("tagcache_handoff_partitions_total", "direction", "received")]
	// More than it owns only if the process stalled (a lost acknowledgement, a retry).
	expect(got == float64(owned) || got > float64(owned) && stalledSince(written),
		"the new node received %v partitions, want the %d it owns (all were held, so all came by handoff)", got, owned)
	got = newNode[series("tagcache_handoff_partitions_total", "direction", "sent")]
	expect(got == 0, "the new node sent %v partitions, want 0", got)
	items := joined.store.Stats().Items
	// At least: a handoff retried after a failure imports its entries again.
	got = newNode[series("tagcache_handoff_entries_total", "direction", "received")]
	expect(got >= float64(items) && items > 0, "the new node imported %v entries from handoffs, want the %d it holds", got, items)
	sent := moved("entries", "sent")
	expect(sent >= float64(items), "the old members sent %v entries, fewer than the %d the new node holds", sent, items)
	for _, kind := range []string{"handoff_begin", "handoff_entries", "handoff_commit"} {
		s := series("tagcache_peer_request_duration_seconds_count", "kind", kind, "peer", "n2")
		expect(after[0][s]+after[1][s] > 0, "no %s request to the new node observed", kind)
	}
}

func TestClusterMetricsRingGaugesMatchClusterRing(t *testing.T) {
	c := startCluster(t, 3)
	// /cluster/ring and /metrics are two reads: on a loaded machine a member declared dead
	// for a moment (or a fence) changes the ring between them. So the comparison is made
	// again until it holds, for up to 10 s; a gauge that does not follow the ring never
	// matches.
	for _, n := range c.nodes {
		var mismatch []string
		deadline := time.Now().Add(10 * time.Second)
		for {
			mismatch = mismatch[:0]
			var ri RingInfo
			if code := httpGetJSON(t, n, "/cluster/ring", &ri); code != 200 {
				t.Fatalf("/cluster/ring: %d", code)
			}
			owned := 0
			for _, o := range ri.Owners {
				if o == n.router.self {
					owned++
				}
			}
			m := scrapeHTTP(t, n)
			for name, want := range map[string]float64{
				"tagcache_ring_version":     float64(ri.Version),
				"tagcache_partitions_owned": float64(owned),
				"tagcache_partitions_held":  float64(owned), // settled
				"tagcache_members":          3,
				"tagcache_fenced":           0,
			} {
				if got, ok := m[name]; !ok || got != want {
					mismatch = append(mismatch, fmt.Sprintf("%s = %v (exposed: %v), want %v as /cluster/ring says", name, got, ok, want))
				}
			}
			if _, ok := m["tagcache_memberlist_health_score"]; !ok {
				mismatch = append(mismatch, "no tagcache_memberlist_health_score")
			}
			if ri.Version < 2 {
				mismatch = append(mismatch, fmt.Sprintf("ring version %d after two joins", ri.Version))
			}
			if len(mismatch) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, e := range mismatch {
			t.Errorf("%s: %s", n.router.self, e)
		}
	}
}

func TestClusterMetricsCountMembershipEventsAndShowTheFence(t *testing.T) {
	c := startCluster(t, 3)
	watcher := c.nodes[0]
	events := func() (join, leave, fail float64) {
		m := scrape(t, watcher.Metrics().Registry)
		ev := func(kind string) float64 {
			return m[series("tagcache_membership_events_total", "kind", kind)]
		}
		return ev("join"), ev("leave"), ev("fail")
	}
	// On a loaded machine a member can be declared dead for a moment and come back
	// (memberlist refutes the suspicion): that counts a fail and then a join. So the
	// test checks the balance (joins − leaves − fails = the other members alive) and
	// what each step adds, not absolute totals.
	balance := func(wantAlive float64) {
		t.Helper()
		j, l, f := events()
		if j-l-f != wantAlive {
			t.Errorf("n0 counted joins %v, leaves %v, fails %v: %v alive, want %v", j, l, f, j-l-f, wantAlive)
		}
	}
	if j, _, f := events(); j < 2 || j-f != 2 {
		t.Errorf("n0 counted %v joins and %v fails, want 2 joins (n1 and n2) net of flaps", j, f)
	}
	_, leaves0, _ := events()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[2].Shutdown(ctx); err != nil {
		t.Fatalf("graceful leave of n2: %v", err)
	}
	waitFor(t, 5*time.Second, "n0 counts n2's leave", func() bool { _, l, _ := events(); return l == leaves0+1 })
	c.settled(c.nodes[:2])
	t.Logf("n2 left and the ring settled after %v", time.Since(start).Round(time.Millisecond))
	balance(1)
	// Not fenced with 2 of 2 members alive; a stall may have lapsed n0's lease a moment
	// ago, and the fence lifts once contact returns.
	waitFor(t, 5*time.Second, "n0 is not fenced with 2 of 2 members alive", func() bool {
		return scrape(t, watcher.Metrics().Registry)["tagcache_fenced"] == 0
	})
	// n1 crashes: n0 sees one member of two, no majority, and fences itself.
	joins1, leaves1, fails1 := events()
	c.nodes[1].crash()
	crashed := time.Now()
	waitFor(t, 10*time.Second, "n0 counts n1's failure and fences itself", func() bool {
		_, _, f := events()
		return f == fails1+1 && scrape(t, watcher.Metrics().Registry)["tagcache_fenced"] == 1
	})
	t.Logf("n0 counted n1's failure and fenced itself %v after the crash", time.Since(crashed).Round(time.Millisecond))
	if j, l, _ := events(); j != joins1 || l != leaves1 {
		t.Errorf("a crash counted joins %v→%v, leaves %v→%v: want neither to change", joins1, j, leaves1, l)
	}
	balance(0)
}

// newIdleRouter is a cluster router that is never started: nothing gossips, nothing
// lifts a fence behind the test's back.
func newIdleRouter(t *testing.T) *Router {
	t.Helper()
	store, err := cache.New(cache.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	r, err := newRouter(ClusterConfig{NodeName: "alone", Bind: "127.0.0.1", ForwardTimeout: time.Second,
		InvalidationTimeout: time.Second, DeadForget: time.Minute, HandoffBatch: 8}, store, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestClusterMetricsFencedGaugeFollowsTheFence(t *testing.T) {
	r := newIdleRouter(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(clusterCollectors(r)...)
	m := scrape(t, reg)
	parts := float64(r.store.Partitions())
	for name, want := range map[string]float64{"tagcache_fenced": 0, "tagcache_ring_version": 1,
		"tagcache_partitions_owned": parts, "tagcache_partitions_held": parts, "tagcache_members": 1} {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("%s = %v (exposed: %v), want %v", name, got, ok, want)
		}
	}
	r.fenced.Store(true)
	if got := scrape(t, reg)["tagcache_fenced"]; got != 1 {
		t.Errorf("fenced = %v on a fenced node, want 1", got)
	}
	r.fenced.Store(false)
	r.quorum.Store(false) // sees no majority: serves nothing either
	if got := scrape(t, reg)["tagcache_fenced"]; got != 1 {
		t.Errorf("fenced = %v on a node without a majority, want 1", got)
	}
	r.quorum.Store(true)
	if got := scrape(t, reg)["tagcache_fenced"]; got != 0 {
		t.Errorf("fenced = %v once serving again, want 0", got)
	}
}

// The forwarding path resolves its label children once per peer: counting a forward and
// timing its call allocate nothing.
func TestClusterMetricsCountAForwardWithoutAllocating(t *testing.T) {
	r := newIdleRouter(t)
	r.view.Store(&memberView{names: []string{"alone", "p"}, peer: map[string]string{"alone": "self", "p": "127.0.0.1:1"}})
	allocs := testing.AllocsPerRun(1000, func() {
		r.countForward("p", opGet, nil)
		r.observePeerCall("127.0.0.1:1", kindKeyOp, 50*time.Microsecond, nil)
	})
	if allocs != 0 {
		t.Errorf("counting a forward allocates %v times", allocs)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(clusterCollectors(r)...)
	if got := scrape(t, reg)[series("tagcache_forwarded_requests_total", "command", "get", "peer", "p", "result", "ok")]; got != 1001 {
		t.Errorf("counted %v forwards, want 1001", got)
	}
}

// A peer's series go once it has been gone for DeadForget, so members restarting under
// new names do not grow the registry; a peer back in time keeps them.
func TestClusterMetricsForgetPeersGoneLongerThanDeadForget(t *testing.T) {
	m := newClusterMetrics(time.Minute)
	with := func() *memberView {
		return &memberView{names: []string{"a", "me"}, peer: map[string]string{"a": "addr-a", "me": "self"}}
	}
	without := func() *memberView { return &memberView{names: []string{"me"}, peer: map[string]string{"me": "self"}} }
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.forwarded, m.peerLatency, m.invFailures)
	count := func() (n int) { // series, a histogram counting once
		for k := range scrape(t, reg) {
			if !strings.Contains(k, "_bucket{") && !strings.Contains(k, "_sum{") {
				n++
			}
		}
		return n
	}
	v := with()
	m.peerNamed(v, "a").forwardedCounter(opPut, 0).Inc()
	m.peerIndex(v).byAddr["addr-a"].latencyObserver(kindKeyOp).Observe(.001)
	if got := count(); got != 3 {
		t.Fatalf("%d series for peer a, want 3 (forwarded, latency, invalidation failures)", got)
	}
	t0 := time.Now()
	m.rebuild(without(), t0)
	m.prune(m.index.Load().view, t0.Add(50*time.Second))
	if got := count(); got != 3 {
		t.Fatalf("%d series 50 s after peer a left, want still 3", got)
	}
	m.rebuild(with(), t0.Add(55*time.Second)) // back
	m.prune(m.index.Load().view, t0.Add(10*time.Minute))
	if got := count(); got != 3 {
		t.Fatalf("%d series for peer a back in the view, want 3", got)
	}
	t1 := t0.Add(11 * time.Minute)
	m.rebuild(without(), t1)
	m.prune(m.index.Load().view, t1.Add(61*time.Second))
	if got := count(); got != 0 {
		t.Errorf("%d series 61 s after peer a left for good, want 0", got)
	}
	if len(m.peers) != 0 {
		t.Errorf("peers still tracked: %v", m.peers)
	}
}

func TestStandaloneNodeExposesTheClusterMetricsAsAClusterOfOne(t *testing.T) {
	n := startRESPNode(t, func(c *Config) { c.HTTPPort = 0 })
	m := scrapeHTTP(t, n)
	parts := float64(n.store.Partitions())
	want := map[string]float64{
		"tagcache_ring_version":                               1,
		"tagcache_partitions_owned":                           parts,
		"tagcache_partitions_held":                            parts,
		"tagcache_members":                                    1,
		"tagcache_fenced":                                     0,
		"tagcache_memberlist_health_score":                    0,
		"tagcache_invalidation_fanout_duration_seconds_count": 0,
	}
	for _, d := range []string{"sent", "received"} {
		want[series("tagcache_handoff_partitions_total", "direction", d)] = 0
		want[series("tagcache_handoff_entries_total", "direction", d)] = 0
	}
	for _, k := range []string{"join", "leave", "fail", "update"} {
		want[series("tagcache_membership_events_total", "kind", k)] = 0
	}
	for name, v := range want {
		if got, ok := m[name]; !ok || got != v {
			t.Errorf("%s = %v (exposed: %v), want %v", name, got, ok, v)
		}
	}
}

// BenchmarkClusterMetricsForwardHooks is what the metrics add to one forwarded command:
// counting it and timing its peer call (the transport's two clock reads included).
func BenchmarkClusterMetricsForwardHooks(b *testing.B) {
	store, err := cache.New(cache.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	r, err := newRouter(ClusterConfig{NodeName: "alone", Bind: "127.0.0.1", ForwardTimeout: time.Second,
		InvalidationTimeout: time.Second, DeadForget: time.Minute, HandoffBatch: 8}, store, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	r.view.Store(&memberView{names: []string{"alone", "p"}, peer: map[string]string{"alone": "self", "p": "127.0.0.1:1"}})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			start := time.Now()
			r.countForward("p", opGet, nil)
			r.observePeerCall("127.0.0.1:1", kindKeyOp, time.Since(start), nil)
		}
	})
}

// A cluster node's store metrics are its own figures, not the cluster's totals: the
// series of all members sum to the cluster's, and a scrape asks no peer.
func TestClusterStoreMetricsAreTheNodesOwn(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	for i := range 30 {
		if err := c.nodes[0].Backend().Put(ctx, fmt.Sprintf("own-%d", i), []byte("v"), 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	sum := 0.0
	for _, n := range c.nodes {
		got := scrape(t, n.Metrics().Registry)["tagcache_items"]
		if own := float64(n.Store().Stats().Items); got != own {
			t.Fatalf("%s: tagcache_items = %v, its store holds %v", n.router.self, got, own)
		}
		sum += got
	}
	if sum != 30 {
		t.Fatalf("tagcache_items summed over the nodes = %v, want 30", sum)
	}
}

// A fenced node's store holds what it had before it lost contact: an invalidation removes
// those entries but counts none of them, or a DEL of a key the cluster already deleted
// would answer "deleted" from the stale copy (harness scenario 4 saw it under load).
func TestInvalidationCountsNothingFromAFencedNodesStaleStore(t *testing.T) {
	r := newIdleRouter(t)
	for _, k := range []string{"k", "j"} {
		if err := r.store.Put(k, []byte("v"), 0, []string{"t"}); err != nil {
			t.Fatal(err)
		}
	}
	stamp := func() uint64 { return r.store.Clock().Next() }
	r.fenced.Store(true)
	n, _, err := r.applyInvalidation(context.Background(), invalidateReq{Op: invKeys, Keys: []string{"k"}, Stamp: stamp()}, "peer")
	if err != nil || n != 0 {
		t.Errorf("fenced: DEL of a stale copy counted %d (%v), want 0", n, err)
	}
	if _, ok := r.store.Get("k"); ok {
		t.Errorf("fenced: the stale copy was not removed")
	}
	r.fenced.Store(false)
	n, _, err = r.applyInvalidation(context.Background(), invalidateReq{Op: invTagsAny, Tags: []string{"t"}, Stamp: stamp()}, "peer")
	if err != nil || n != 1 {
		t.Errorf("serving: INV_TAG counted %d (%v), want 1 (j)", n, err)
	}
}
