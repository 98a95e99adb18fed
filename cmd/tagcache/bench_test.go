package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/node"
	"github.com/tagcache/tagcache/ring"
)

// startBenchNode starts a node with every client protocol on free loopback ports.
func startBenchNode(t *testing.T) *node.Node {
	t.Helper()
	t.Setenv("TAGCACHE_PASSWORD", "")
	return startInProcessNode(t, node.Config{Bind: "127.0.0.1", TCPPort: 0, HTTPPort: 0, RESPPort: 0})
}

func TestBenchRunsEveryProtocolWithoutErrorsAndCountsEveryRequest(t *testing.T) {
	n := startBenchNode(t)
	for _, tc := range []struct{ protocol, kind, pipeline string }{
		{"text", "tcp", "1"}, {"text", "tcp", "8"}, {"resp", "resp", "1"}, {"resp", "resp", "8"}, {"http", "http", "1"},
	} {
		t.Run(tc.protocol+"/P"+tc.pipeline, func(t *testing.T) {
			r := tagcache("bench", "--protocol", tc.protocol, "--targets", n.Addr(tc.kind).String(),
				"--connections", "4", "--requests", "2000", "--pipeline", tc.pipeline, "--keys", "50",
				"--mix", "get=60,put=30,inv=10", "--tags-per-key", "2", "--tag-pool", "20", "--json")
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
			}
			var res benchResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("--json output %q: %v", r.stdout, err)
			}
			if res.Requests != 2000 || res.Gets+res.Puts+res.Invalidates != 2000 {
				t.Fatalf("requests %d = gets %d + puts %d + invalidations %d, want 2000", res.Requests, res.Gets, res.Puts, res.Invalidates)
			}
			if res.Errors != 0 || res.Hits == 0 || res.Hits+res.Misses != res.Gets {
				t.Fatalf("errors %d, hits %d, misses %d, gets %d", res.Errors, res.Hits, res.Misses, res.Gets)
			}
			if res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 || res.PerSecond <= 0 {
				t.Fatalf("latency or throughput not measured: %+v", res)
			}
			if res.RingAware || res.Members != nil {
				t.Fatalf("a run without --ring-aware reports ring-aware %v, members %v", res.RingAware, res.Members)
			}
		})
	}
}

// startBenchCluster starts size cluster members in-process, each serving every client
// protocol on free loopback ports, and waits until each serves the partitions it owns.
func startBenchCluster(t *testing.T, size int) []*node.Node {
	t.Helper()
	t.Setenv("TAGCACHE_PASSWORD", "")
	var nodes []*node.Node
	var join []string
	for i := range size {
		n := startInProcessNode(t, node.Config{Bind: "127.0.0.1",
			Cluster: &node.ClusterConfig{NodeName: fmt.Sprintf("b%d", i), Preset: "local", Join: join}})
		if i == 0 {
			for _, m := range n.Router().Members(context.Background()) {
				if m.Self {
					join = []string{m.Gossip}
				}
			}
		}
		nodes = append(nodes, n)
	}
	waitOwnersServe(t, nodes)
	return nodes
}

// waitOwnersServe waits until every node is ready, knows every other and routes by the
// same ring, and a write of a key of each partition, sent to the partition's owner, lands
// in the owner's own store (so the owner holds it: handoffs are over).
func waitOwnersServe(t *testing.T, nodes []*node.Node) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	probes := map[int]string{} // partition -> a key in it
	for j := 0; len(probes) < ring.DefaultPartitions; j++ {
		k := fmt.Sprintf("probe:%d", j)
		if p := ring.PartitionOf(k, ring.DefaultPartitions); probes[p] == "" {
			probes[p] = k
		}
	}
	for {
		why := ownersServe(ctx, nodes, probes)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not settle in 20s: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ownersServe says what is not settled yet, "" when all is.
func ownersServe(ctx context.Context, nodes []*node.Node, probes map[int]string) string {
	ri := nodes[0].Router().RingInfo()
	byName := map[string]*node.Node{}
	for _, n := range nodes {
		if ok, reason := n.Router().Ready(); !ok {
			return "not ready: " + reason
		}
		alive := 0
		for _, m := range n.Router().Members(ctx) {
			if m.State == "alive" {
				alive++
			}
			if m.Self {
				byName[m.Name] = n
			}
		}
		other := n.Router().RingInfo()
		switch {
		case alive != len(nodes):
			return fmt.Sprintf("a node sees %d members alive", alive)
		case len(ri.Members) != len(nodes) || fmt.Sprint(other.Owners) != fmt.Sprint(ri.Owners):
			return "the nodes route by different rings" // versions are each node's own count
		case ri.Partitions != ring.DefaultPartitions:
			return fmt.Sprintf("%d partitions", ri.Partitions)
		}
	}
	before := storeStats(nodes)
	want := map[*node.Node]uint64{}
	for p, key := range probes {
		owner := byName[ri.Owners[p]]
		if err := owner.Router().Put(ctx, key, []byte("x"), 0, nil); err != nil {
			return err.Error()
		}
		want[owner]++
	}
	after := storeStats(nodes)
	for i, n := range nodes {
		if got := after[i].Puts - before[i].Puts; got != want[n] {
			return fmt.Sprintf("node %d stored %d of the %d probes sent to it", i, got, want[n])
		}
	}
	return ""
}

func storeStats(nodes []*node.Node) []cache.Stats {
	out := make([]cache.Stats, len(nodes))
	for i, n := range nodes {
		out[i] = n.Store().Stats()
	}
	return out
}

// A ring-aware run sends every request to its key's owner: each node's own store served
// exactly what the run says it sent to that node, and nothing was forwarded.
func TestBenchRingAwareSendsEveryRequestToItsKeysOwner(t *testing.T) {
	nodes := startBenchCluster(t, 3)
	names := map[string]int{}
	for i := range nodes {
		names[fmt.Sprintf("b%d", i)] = i
	}
	ri := nodes[1].Router().RingInfo() // the node asked
	for _, tc := range []struct{ protocol, kind, pipeline string }{
		{"text", "tcp", "8"}, {"resp", "resp", "1"}, {"http", "http", "1"},
	} {
		t.Run(tc.protocol+"/P"+tc.pipeline, func(t *testing.T) {
			before := storeStats(nodes)
			r := tagcache("bench", "--ring-aware", "--protocol", tc.protocol, "--targets", nodes[1].Addr("http").String(),
				"--connections", "3", "--requests", "2000", "--pipeline", tc.pipeline, "--keys", "300",
				"--mix", "get=60,put=30,inv=10", "--tags-per-key", "2", "--tag-pool", "20", "--json")
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
			}
			after := storeStats(nodes)
			var res benchResult
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
				t.Fatalf("--json output %q: %v", r.stdout, err)
			}
			if !res.RingAware || res.RingVersion != ri.Version || len(res.Members) != len(nodes) {
				t.Fatalf("ring-aware %v, ring version %d (want %d), members %+v", res.RingAware, res.RingVersion, ri.Version, res.Members)
			}
			if res.Requests != 2000 || res.Errors != 0 || res.Hits == 0 || res.Hits+res.Misses != res.Gets {
				t.Fatalf("requests %d, errors %d (first %q), hits %d, misses %d, gets %d", res.Requests, res.Errors, res.FirstError, res.Hits, res.Misses, res.Gets)
			}
			var sum benchMemberResult
			for _, m := range res.Members {
				i, ok := names[m.Name]
				if !ok {
					t.Fatalf("member %q is not a node of the cluster", m.Name)
				}
				n := nodes[i]
				owned := 0
				for _, o := range ri.Owners {
					if o == m.Name {
						owned++
					}
				}
				if m.Address != n.Addr(tc.kind).String() || m.Partitions != owned || m.Requests == 0 {
					t.Errorf("member %s: address %s (want %s), partitions %d (want %d), requests %d",
						m.Name, m.Address, n.Addr(tc.kind), m.Partitions, owned, m.Requests)
				}
				puts, gets := after[i].Puts-before[i].Puts, after[i].Hits+after[i].Misses-before[i].Hits-before[i].Misses
				if puts != m.Puts || gets != m.Gets {
					t.Errorf("member %s was sent %d puts and %d gets, its store served %d puts and %d gets: requests were routed elsewhere",
						m.Name, m.Puts, m.Gets, puts, gets)
				}
				sum.Requests += m.Requests
				sum.Gets += m.Gets
				sum.Puts += m.Puts
				sum.Invalidates += m.Invalidates
			}
			if sum.Requests != res.Requests || sum.Gets != res.Gets || sum.Puts != res.Puts || sum.Invalidates != res.Invalidates {
				t.Errorf("members add up to %+v, the run to requests %d gets %d puts %d invalidations %d",
					sum, res.Requests, res.Gets, res.Puts, res.Invalidates)
			}
		})
	}
}

// --ring-aware needs a node that tells its ring and members with an address for every
// owner; anything else is a clear error before any load.
func TestBenchRingAwareFailsClearlyWithoutAUsableRing(t *testing.T) {
	members := `{"members":[{"name":"a","state":"alive","tcp":"127.0.0.1:1","http":"127.0.0.1:2"}]}`
	for _, tc := range []struct{ name, ring, members, protocol, want string }{
		{"an older node", "", members, "text", "GET /cluster/ring from 127.0.0.1:"},
		{"an empty ring", `{"version":1,"partitions":3,"members":[],"owners":["","",""]}`, `{"members":[]}`, "text", "the ring is empty"},
		{"no address for the protocol", `{"version":1,"partitions":2,"members":["a"],"owners":["a","a"]}`, members, "resp", "member a has no resp address"},
		{"an owner unknown", `{"version":1,"partitions":2,"members":["a","b"],"owners":["a","b"]}`, members, "text", "ring owner b is not in /cluster/members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			if tc.ring != "" {
				mux.HandleFunc("GET /cluster/ring", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, tc.ring) })
			}
			mux.HandleFunc("GET /cluster/members", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, tc.members) })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			// The first target does not answer: the next one is asked.
			target := "127.0.0.1:1," + strings.TrimPrefix(srv.URL, "http://")
			r := tagcache("bench", "--ring-aware", "--protocol", tc.protocol, "--targets", target, "--requests", "10")
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
				t.Fatalf("exit %d, stderr %q, stdout %q; want exit 1 and an error with %q", r.code, r.stderr, r.stdout, tc.want)
			}
			if tc.name == "an older node" && !strings.Contains(r.stderr, "404") {
				t.Fatalf("stderr %q does not say the node has no /cluster/ring", r.stderr)
			}
		})
	}
}

// A reply that is not the value the generator wrote is an error, never a hit.
func TestBenchCountsAWrongValueAsAnError(t *testing.T) {
	n := startBenchNode(t)
	for i := range 20 {
		n.Store().Put(keyName(i), []byte("not what bench writes"), 0, nil)
	}
	r := tagcache("bench", "--protocol", "text", "--targets", n.Addr("tcp").String(), "--connections", "1",
		"--requests", "50", "--keys", "20", "--mix", "get=100,put=0,inv=0", "--json")
	if r.code != 1 {
		t.Fatalf("exit %d with wrong values, want 1; stdout %q", r.code, r.stdout)
	}
	var res benchResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Hits != 0 || !strings.Contains(res.FirstError, "unexpected reply") {
		t.Fatalf("wrong values counted as: errors %d hits %d first %q", res.Errors, res.Hits, res.FirstError)
	}
}

func TestBenchRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--mix", "get=50,put=40"}, {"--mix", "get=100,foo=0"}, {"--protocol", "memcache"},
		{"--pipeline", "2", "--protocol", "http"}, {"--dist", "zipf", "--zipf-s", "1"},
		{"--tags-per-key", "5", "--tag-pool", "2"}, {"--connections", "0"},
	} {
		if r := tagcache(append([]string{"bench"}, args...)...); r.code != 2 || r.stderr == "" {
			t.Errorf("bench %v: exit %d, stderr %q; want a usage error", args, r.code, r.stderr)
		}
	}
}

func TestHistogramPercentilesAreWithinThreePercent(t *testing.T) {
	var h histogram
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := time.Duration(q*100000) * time.Microsecond
		got := h.percentile(q)
		if got < want || float64(got) > float64(want)*1.04 {
			t.Errorf("p%v = %v, want %v (+3%%)", q*100, got, want)
		}
	}
	if h.percentile(1) != 100*time.Millisecond {
		t.Errorf("p100 = %v, want the max", h.percentile(1))
	}
	var other histogram
	other.record(time.Second)
	h.merge(&other)
	if h.max != time.Second || h.n != 100001 {
		t.Errorf("merge: max %v n %d", h.max, h.n)
	}
}

func TestHistogramBucketsCoverEveryDuration(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 31, 32, 33, 1000, time.Millisecond, time.Hour, 1<<62 + 12345} {
		b := bucketOf(d)
		if up := upperOf(b); up < d || (b > 0 && upperOf(b-1) >= max(d, 1)) {
			t.Errorf("%v: bucket %d has upper bound %v (previous %v)", d, b, up, upperOf(b-1))
		}
	}
}
