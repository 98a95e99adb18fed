package node

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClusterView answers the cluster routes with set values and hands on the context
// that Members was given.
type fakeClusterView struct {
	members []MemberInfo
	ring    RingInfo
	ctxs    chan context.Context // receives Members' ctx, if not nil

	invReport InvalidationReport // what InvalidateTagReport answers
	invErr    error

	mu     sync.Mutex // protects ready and reason
	ready  bool
	reason string
}

func (f *fakeClusterView) Members(ctx context.Context) []MemberInfo {
	select {
	case f.ctxs <- ctx:
	default:
	}
	return f.members
}
func (f *fakeClusterView) RingInfo() RingInfo { return f.ring }

func (f *fakeClusterView) Series(context.Context, int64, int64) []memberSeries { return nil }

func (f *fakeClusterView) InvalidateTagReport(context.Context, string) (InvalidationReport, error) {
	return f.invReport, f.invErr
}

func (f *fakeClusterView) Ready() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready, f.reason
}

func (f *fakeClusterView) setReady(ready bool, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready, f.reason = ready, reason
}

func TestHTTPClusterMembersShowsAStandaloneNodeAsItsOnlyAliveMember(t *testing.T) {
	n, c := startHTTPNode(t, Config{})
	c.expect("POST", "/put", `{"key":"k","value":"v","tags":["t"]}`, 200, `{"ok":true,"ttl_ms":null}`)
	c.expect("GET", "/get/k", "", 200, `{"value":"v"}`)
	c.expect("GET", "/get/missing", "", 200, `{"error":"not_found"}`)

	r := c.do("GET", "/cluster/members", "")
	var got struct{ Members []MemberInfo }
	c.decode(r, &got)
	if r.status != 200 || len(got.Members) != 1 {
		t.Fatalf("got %d %s, want one member", r.status, r.body)
	}
	m := got.Members[0]
	if m.Name != standaloneName || m.State != "alive" || !m.Self {
		t.Errorf("member %+v, want name %q, state alive, self", m, standaloneName)
	}
	if m.HTTP != n.Addr("http").String() || m.TCP != "" || m.RESP != "" {
		t.Errorf("client addresses tcp %q http %q resp %q; want only http %q (the one listener)", m.TCP, m.HTTP, m.RESP, n.Addr("http"))
	}
	if m.Partitions != n.Store().Partitions() {
		t.Errorf("partitions %d, want every one of the store's %d", m.Partitions, n.Store().Partitions())
	}
	if m.Stats == nil || m.StatsError != "" {
		t.Fatalf("no stats (stats_error %q)", m.StatsError)
	}
	if m.Stats.Items != 1 || m.Stats.Puts != 1 || m.Stats.Hits != 1 || m.Stats.Misses != 1 || m.Stats.HitRatio != 0.5 {
		t.Errorf("stats %+v, want 1 item, 1 put, 1 hit, 1 miss, hit ratio 0.5", *m.Stats)
	}
}

func TestHTTPClusterRingGivesEveryPartitionToTheStandaloneNode(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	r := c.do("GET", "/cluster/ring", "")
	var ring RingInfo
	c.decode(r, &ring)
	if r.status != 200 || ring.Version != 1 || ring.Partitions != 271 || len(ring.Owners) != 271 ||
		len(ring.Members) != 1 || ring.Members[0] != standaloneName {
		t.Fatalf("got %d version %d, %d partitions, %d owners, members %q; want 200, version 1, 271, 271, [%s]",
			r.status, ring.Version, ring.Partitions, len(ring.Owners), ring.Members, standaloneName)
	}
	for p, owner := range ring.Owners {
		if owner != standaloneName {
			t.Fatalf("partition %d owned by %q, want %q", p, owner, standaloneName)
		}
	}
}

func TestHTTPClusterRoutesNeedCredentials(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	for _, path := range []string{"/cluster/members", "/cluster/ring"} {
		c.want(c.doAuth("", "GET", path, ""), 401, `{"error":"unauthorized"}`)
	}
}

func TestHTTPReadyIsTrueOnAStandaloneNode(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	c.want(c.doAuth("", "GET", "/ready", ""), 200, `{"ready":true}`)
}

func TestHTTPReadyIs503WithTheReasonWhenTheClusterIsNotReady(t *testing.T) {
	view := &fakeClusterView{reason: "joining: no peer answered yet"}
	_, c := startHTTPNode(t, Config{}, func(n *Node) { n.cluster = view })
	c.want(c.doAuth("", "GET", "/ready", ""), 503, `{"ready":false,"reason":"joining: no peer answered yet"}`)
	view.setReady(true, "")
	c.want(c.doAuth("", "GET", "/ready", ""), 200, `{"ready":true}`)
}

func TestHTTPClusterMembersBoundsTheMembersCall(t *testing.T) {
	view := &fakeClusterView{ctxs: make(chan context.Context, 1)}
	_, c := startHTTPNode(t, Config{}, func(n *Node) { n.cluster = view })
	// A view that knows no member still answers with a list.
	c.expect("GET", "/cluster/members", "", 200, `{"members":[]}`)
	ctx := <-view.ctxs
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > clusterMembersTimeout {
		t.Errorf("Members got a context with deadline %v (set: %v), want one within %s", deadline, ok, clusterMembersTimeout)
	}
	c.expect("GET", "/cluster/ring", "", 200, `{"version":0,"partitions":0,"members":[],"owners":[]}`)
}

func TestStandaloneViewWithoutListenersHasNoClientAddresses(t *testing.T) {
	n, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Store().Close()
	m := n.cluster.Members(context.Background())
	if len(m) != 1 || m[0].TCP != "" || m[0].HTTP != "" || m[0].RESP != "" {
		t.Fatalf("members %+v, want one with no client addresses", m)
	}
	if ready, reason := n.cluster.Ready(); !ready || reason != "" {
		t.Errorf("Ready() = %v, %q; want true", ready, reason)
	}
}
