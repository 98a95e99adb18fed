package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// --- the routes

func TestDashboardRoutesNeedCredentials(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	for _, r := range [][3]string{
		{"GET", "/cluster/stats", ""},
		{"GET", "/cluster/events", ""},
		{"POST", "/cluster/invalidate-tag", `{"tag":"t"}`},
	} {
		c.want(c.doAuth("", r[0], r[1], r[2]), 401, `{"error":"unauthorized"}`)
	}
}

func TestDashboardRoutesRefuseBadParameters(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	c.expect("GET", "/cluster/stats?since=yesterday", "", 422, `{"error":"invalid field: since: must be a unix time in seconds"}`)
	c.expect("GET", "/cluster/stats?since=-5", "", 422, `{"error":"invalid field: since: must be a unix time in seconds"}`)
	c.expect("GET", "/cluster/events?limit=101", "", 422, `{"error":"invalid field: limit: must be an integer from 1 to 100"}`)
	c.expect("POST", "/cluster/invalidate-tag", `{}`, 422, `{"error":"missing field: tag"}`)
	c.expect("GET", "/cluster/invalidate-tag", "", 405, `{"error":"method not allowed"}`)
}

// clusterStats polls GET /cluster/stats until ok accepts the reply (the node samples
// once a second, and a second is served once it is seriesSettle old).
func clusterStats(t *testing.T, c *httpTestClient, what string, ok func(seriesReply) bool) seriesReply {
	t.Helper()
	var rep seriesReply
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := c.do("GET", "/cluster/stats", "")
		if r.status != 200 {
			t.Fatalf("GET /cluster/stats: %d %s", r.status, r.body)
		}
		rep = seriesReply{}
		c.decode(r, &rep)
		if ok(rep) {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /cluster/stats never showed %s; last reply %s", what, r.body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func commandOf(rep seriesReply, cmd string) *commandSeries {
	for i := range rep.Commands {
		if rep.Commands[i].Command == cmd {
			return &rep.Commands[i]
		}
	}
	return nil
}

func sum(v []uint64) (s uint64) {
	for _, x := range v {
		s += x
	}
	return s
}

// samplingStarted waits until n's sampler has taken its first reading: requests before
// it are in its baseline, not in any second.
func samplingStarted(t *testing.T, n *Node) {
	httpPoll(t, "the first reading of the sampler", func() bool {
		n.series.mu.Lock()
		defer n.series.mu.Unlock()
		return n.series.last != nil
	})
}

func TestClusterStatsCountsEveryRequestOnceWithItsLatency(t *testing.T) {
	n, c := startHTTPNode(t, Config{})
	samplingStarted(t, n)
	for i := range 20 {
		c.do("POST", "/put", fmt.Sprintf(`{"key":"k%d","value":"v"}`, i))
	}
	c.do("POST", "/put", `{"key":"k"}`) // a failure: 422
	rep := clusterStats(t, c, "the 21 PUTs", func(r seriesReply) bool {
		p := commandOf(r, "http put")
		return p != nil && sum(p.Ops) == 21
	})
	if len(rep.T) != seriesDefaultSpan || rep.IntervalMs != 1000 || rep.WindowS != seriesWindow {
		t.Errorf("%d seconds, interval %d ms, window %d s; want %d, 1000, %d", len(rep.T), rep.IntervalMs, rep.WindowS, seriesDefaultSpan, seriesWindow)
	}
	for i := 1; i < len(rep.T); i++ {
		if rep.T[i] != rep.T[i-1]+1 {
			t.Fatalf("seconds %v are not consecutive", rep.T[i-1:i+1])
		}
	}
	if now := time.Now().Unix(); rep.T[len(rep.T)-1] > now-seriesSettle {
		t.Errorf("newest second %d is younger than %d s (now %d)", rep.T[len(rep.T)-1], seriesSettle, now)
	}
	put := commandOf(rep, "http put")
	if sum(put.Errors) != 1 {
		t.Errorf("errors %d, want 1", sum(put.Errors))
	}
	// A request's latency is observed, then it is counted, with no lock around both: the
	// one finishing as a sample is taken may have its latency and its count in adjacent
	// seconds. The client here sends one at a time, so at most one request straddles.
	var withLatency uint64
	for i, n := range put.Ops {
		if (put.P50Ms[i] == nil) != (put.P99Ms[i] == nil) {
			t.Errorf("second %d: p50 %v, p99 %v", rep.T[i], put.P50Ms[i], put.P99Ms[i])
		}
		if put.P50Ms[i] != nil {
			withLatency += n
			if *put.P50Ms[i] <= 0 || *put.P50Ms[i] > *put.P99Ms[i] {
				t.Errorf("second %d: p50 %v ms, p99 %v ms", rep.T[i], *put.P50Ms[i], *put.P99Ms[i])
			}
		}
	}
	if withLatency < 20 {
		t.Errorf("%d of the 21 PUTs fell in seconds with a latency; want at least 20 (ops %v, p99 %v)", withLatency, put.Ops, put.P99Ms)
	}
	if len(rep.Nodes) != 1 || rep.Nodes[0].Name != standaloneName || sum(rep.Nodes[0].Ops) < 21 {
		t.Errorf("nodes %+v, want the standalone node with at least the 21 PUTs", rep.Nodes)
	}
	// Asking for what came after the last second brings nothing old back.
	last := rep.T[len(rep.T)-1]
	r := c.do("GET", fmt.Sprintf("/cluster/stats?since=%d", last), "")
	var next seriesReply
	c.decode(r, &next)
	if len(next.T) > 0 && next.T[0] != last+1 {
		t.Errorf("since=%d starts at %d", last, next.T[0])
	}
	if p := commandOf(next, "http put"); p != nil && sum(p.Ops) > 0 {
		t.Errorf("since=%d counts %d PUTs again", last, sum(p.Ops))
	}
}

func TestClusterInvalidateTagOnAStandaloneNodeReportsItself(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	c.do("POST", "/put", `{"key":"a","value":"v","tags":["t"]}`)
	c.do("POST", "/put", `{"key":"b","value":"v","tags":["t","u"]}`)
	r := c.do("POST", "/cluster/invalidate-tag", `{"tag":"t"}`)
	var rep tagInvalidationReply
	c.decode(r, &rep)
	if r.status != 200 || !rep.Success || rep.Count != 2 || len(rep.Nodes) != 1 || rep.Nodes[0].Name != standaloneName ||
		rep.Nodes[0].Count != 2 || rep.ElapsedMs < rep.Nodes[0].ElapsedMs {
		t.Errorf("got %d %s; want success, count 2, the standalone node with 2", r.status, r.body)
	}
	c.expect("GET", "/keys-by-tag?tag=u", "", 200, `{"keys":[]}`)
}

func TestClusterInvalidateTagThatIsIncompleteIsA503WithTheReport(t *testing.T) {
	fake := &fakeClusterView{invReport: InvalidationReport{Count: 3, Members: []MemberInvalidation{
		{Name: "a", Count: 3, Elapsed: time.Millisecond},
		{Name: "b", Elapsed: 2 * time.Second, Err: errors.New("no answer")},
	}}, invErr: unavailable("invalidation incomplete: not acknowledged by b")}
	_, c := startHTTPNode(t, Config{}, func(n *Node) { n.cluster = fake })
	r := c.do("POST", "/cluster/invalidate-tag", `{"tag":"t"}`)
	body := regexp.MustCompile(`^(.*"elapsed_ms":)[0-9.]+(,"nodes".*)$`).ReplaceAllString(r.body, "${1}X${2}")
	c.want(httpReply{status: r.status, body: body}, 503,
		`{"error":"invalidation incomplete: not acknowledged by b","success":false,"count":3,"elapsed_ms":X,`+
			`"nodes":[{"name":"a","count":3,"elapsed_ms":1},{"name":"b","count":0,"elapsed_ms":2000,"error":"no answer"}]}`)
}

func TestEventLogKeepsTheNewestFirstAndForgetsTheOldest(t *testing.T) {
	l := newEventLog()
	if got := l.recent(maxEvents); len(got) != 0 {
		t.Fatalf("empty log lists %v", got)
	}
	for i := range maxEvents + 50 {
		l.add("join", fmt.Sprintf("m%d", i), "")
	}
	got := l.recent(maxEvents + 10)
	if len(got) != maxEvents || got[0].Member != fmt.Sprintf("m%d", maxEvents+49) || got[maxEvents-1].Member != "m50" {
		t.Fatalf("%d events from %s to %s; want %d from m%d to m50", len(got), got[0].Member, got[len(got)-1].Member, maxEvents, maxEvents+49)
	}
	if got := l.recent(3); len(got) != 3 || got[2].Member != fmt.Sprintf("m%d", maxEvents+47) {
		t.Fatalf("recent(3) = %v", got)
	}
}

// --- in a cluster

func clusterHTTP(t *testing.T, n *Node) *httpTestClient {
	return &httpTestClient{t: t, base: "http://" + n.Addr("http").String(), hc: &http.Client{Timeout: 10 * time.Second}}
}

func TestClusterDashboardRoutesCoverEveryMember(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	// Keys carrying the tag on every member; the report must say how many each held. A
	// node that fences itself in a stall refuses requests and flushes its store: errors
	// and counts short of those written, which end the run as skipped if a fence (or a
	// member declared dead) was logged (failUnlessStalled); any other difference fails.
	written := time.Now()
	want := map[string]int{}
	for i := range 30 {
		key := fmt.Sprintf("k%d", i)
		if err := c.nodes[i%3].router.Put(ctx, key, []byte("v"), 0, []string{"t"}); err != nil {
			failUnlessStalled(t, written, stallCanExplain(err.Error()), "PUT %s: %v", key, err)
		}
		want[c.ownerOf(key).router.self]++
	}
	h0 := clusterHTTP(t, c.nodes[0])
	r := h0.do("POST", "/cluster/invalidate-tag", `{"tag":"t"}`)
	var rep tagInvalidationReply
	h0.decode(r, &rep)
	if r.status != 200 || !rep.Success || rep.Count != 30 || len(rep.Nodes) != 3 {
		short := r.status == 200 && rep.Success && rep.Count < 30 && len(rep.Nodes) == 3
		failUnlessStalled(t, written, short || r.status == 503 && stallCanExplain(r.body),
			"got %d %s; want 200, success, count 30, three nodes", r.status, r.body)
	}
	for _, n := range rep.Nodes {
		if n.Count != want[n.Name] || n.Error != "" || n.ElapsedMs < 0 || n.ElapsedMs > rep.ElapsedMs {
			what := fmt.Sprintf("node %+v; want count %d, no error, answered within the %v ms of the whole", n, want[n.Name], rep.ElapsedMs)
			if n.Count < want[n.Name] && n.Error == "" && n.ElapsedMs >= 0 && n.ElapsedMs <= rep.ElapsedMs {
				skipIfStalled(t, written, what)
			}
			t.Error(what)
		}
	}
	if rep.Nodes[0].Name != "n0" {
		t.Errorf("first node %s, want the coordinator n0", rep.Nodes[0].Name)
	}
	for _, n := range c.nodes {
		if r := clusterHTTP(t, n).do("GET", "/keys-by-tag?tag=t", ""); r.status != 200 || r.body != `{"keys":[]}` {
			failUnlessStalled(t, written, r.status == 503 && stallCanExplain(r.body),
				"GET /keys-by-tag?tag=t through %s: %d %s, want 200 {\"keys\":[]}", n.router.self, r.status, r.body)
		}
	}

	// Requests on every member show in one node's series, per member.
	for _, n := range c.nodes {
		clusterHTTP(t, n).do("GET", "/get/k1", "")
	}
	st := clusterStats(t, h0, "GETs on all three members", func(r seriesReply) bool {
		var names []string
		for _, n := range r.Nodes {
			if n.Error == "" && sum(n.Ops) > 0 {
				names = append(names, n.Name)
			}
		}
		g := commandOf(r, "http get")
		return slices.Equal(names, []string{"n0", "n1", "n2"}) && g != nil && sum(g.Ops) >= 3
	})
	if len(st.Nodes) != 3 {
		t.Errorf("nodes %+v, want three", st.Nodes)
	}

	// The joins of n1 and n2, and the ring versions they made, as n0 saw them.
	var ev struct{ Events []clusterEvent }
	h0.decode(h0.do("GET", "/cluster/events", ""), &ev)
	var kinds []string
	for _, e := range ev.Events {
		kinds = append(kinds, e.Kind+" "+e.Member)
	}
	for _, must := range []string{"join n1", "join n2", "ring ", "start n0"} {
		if !slices.Contains(kinds, must) {
			t.Errorf("events %q lack %q", kinds, must)
		}
	}
	if kinds[len(kinds)-1] != "start n0" {
		t.Errorf("events %q: want the start last (oldest)", kinds)
	}
}

// A member that does not acknowledge is named in the report, with its error, and the
// reply is a 503 (promise 2: never a silent success).
func TestClusterInvalidateTagReportNamesTheMemberThatDidNotAnswer(t *testing.T) {
	c := startCluster(t, 3)
	victim := c.nodes[2]
	victim.router.ts.Close() // its gossip stays, so it is not declared dead
	h0 := clusterHTTP(t, c.nodes[0])
	r := h0.do("POST", "/cluster/invalidate-tag", `{"tag":"t"}`)
	var rep tagInvalidationReply
	h0.decode(r, &rep)
	if r.status != 503 || rep.Success || !strings.Contains(rep.Error, "n2") || len(rep.Nodes) != 3 {
		t.Fatalf("got %d %s; want 503 naming n2, with three nodes", r.status, r.body)
	}
	for _, n := range rep.Nodes {
		if (n.Error != "") != (n.Name == "n2") {
			t.Errorf("node %+v: only n2 should have an error", n)
		}
	}
}

func TestDashboardStandaloneNodeRecordsItsStart(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	var ev struct{ Events []clusterEvent }
	c.decode(c.do("GET", "/cluster/events", ""), &ev)
	if len(ev.Events) != 1 || ev.Events[0].Kind != "start" || ev.Events[0].Member != standaloneName {
		t.Errorf("events %+v, want the start of %s", ev.Events, standaloneName)
	}
}
