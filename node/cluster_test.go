package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/transport"
)

// In-process clusters: every node on loopback with free ports and the local preset.

type testCluster struct {
	t     testing.TB
	nodes []*Node
	key   []byte
	mut   func(*ClusterConfig) // adjusts the configuration of every member, if not nil
}

func clusterLogger(t testing.TB, name string) hclog.Logger {
	watchStalls()
	w := &testLogWriter{t: t, verbose: testing.Verbose(), trouble: troubleOf(t)}
	// Cleanups run last-registered first, so this one runs after the node's shutdown;
	// memberlist's goroutines may still log after that, and testing panics on a Log
	// after the test has ended.
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	level := hclog.Warn // what a stall causes is logged as a warning: see trouble
	if w.verbose {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: w})
}

type testLogWriter struct {
	t       testing.TB
	verbose bool     // log every line with t.Log
	trouble *trouble // where lines about fences and failed members go
	mu      sync.Mutex
	done    bool // the test has ended: drop further lines
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	w.trouble.note(line)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.verbose && !w.done {
		w.t.Log(line)
	}
	return len(p), nil
}

// trouble collects what the cluster nodes of one test logged that a stalled machine
// causes though the code is correct: a node fencing itself (its lease lapsed during the
// stall, or it saw a member declared dead and lost its majority), recovering from a
// fence (it flushed its store), a member declared dead (memberlist suspected it during
// the stall; it comes back). A test that promises no failed request or exact contents
// tolerates a failure a fence or a false death explains only when one was logged since
// the test wrote what it checks (see stallExplains): on a machine that does not stall,
// none is.
type trouble struct {
	mu    sync.Mutex // protects lines
	lines []troubleLine
}

type troubleLine struct {
	at   time.Time
	line string
}

// troubleByTest holds the trouble of each running test, by its testing.TB.
var troubleByTest sync.Map

func troubleOf(t testing.TB) *trouble {
	v, loaded := troubleByTest.LoadOrStore(t, &trouble{})
	if !loaded {
		t.Cleanup(func() { troubleByTest.Delete(t) })
	}
	return v.(*trouble)
}

// stalls records when the test process was stalled: a goroutine that sleeps 10 ms at a
// time and finds it woke more than stallGap late (the process was descheduled, the VM
// paused, the machine overloaded). A trouble line excuses a failure only if a stall was
// recorded shortly before it (stallWindow: the longest a stall takes to become a fence or
// a false death), so on a machine that does not stall a wrong fence or a death the code
// caused (a leave that crashes, a lease too short) fails the test as before.
var stalls struct {
	once sync.Once
	mu   sync.Mutex
	at   []time.Time // when each stall ended
}

const (
	stallGap    = 150 * time.Millisecond
	stallWindow = 3 * time.Second
)

// watchStalls starts the stall recorder (once per test binary).
func watchStalls() {
	stalls.once.Do(func() {
		go func() {
			last := time.Now()
			for {
				time.Sleep(10 * time.Millisecond)
				now := time.Now()
				if now.Sub(last) > stallGap {
					stalls.mu.Lock()
					stalls.at = append(stalls.at, now)
					stalls.mu.Unlock()
				}
				last = now
			}
		}()
	})
}

// stalledWithin reports whether a stall ended between from and to.
func stalledWithin(from, to time.Time) bool {
	stalls.mu.Lock()
	defer stalls.mu.Unlock()
	for _, at := range stalls.at {
		if !at.Before(from) && !at.After(to) {
			return true
		}
	}
	return false
}

// stalledSince reports whether the process stalled since t0.
func stalledSince(t0 time.Time) bool { return stalledWithin(t0, time.Now()) }

// troubleMarks are the messages (fence.go, cluster.go) the trouble is made of.
var troubleMarks = []string{"fencing this node", "recovered from fence", "member failed"}

func (tr *trouble) note(line string) {
	for _, m := range troubleMarks {
		if strings.Contains(line, m) {
			if _, rest, ok := strings.Cut(line, " ["); ok { // drop the timestamp
				line = "[" + rest
			}
			tr.mu.Lock()
			tr.lines = append(tr.lines, troubleLine{time.Now(), line})
			tr.mu.Unlock()
			return
		}
	}
}

// since returns the lines logged at or after t0 that hold one of marks (none: any) and
// that a stall of the process shortly before explains (stalls).
func (tr *trouble) since(t0 time.Time, marks ...string) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for _, l := range tr.lines {
		if !l.at.Before(t0) && (len(marks) == 0 || slices.ContainsFunc(marks, func(m string) bool { return strings.Contains(l.line, m) })) &&
			stalledWithin(l.at.Add(-stallWindow), l.at) {
			out = append(out, l.line)
		}
	}
	return out
}

// stallExplains reports whether a node of t's cluster fenced itself or saw a member
// declared dead since t0 (only lines holding one of marks, if any), after a stall of the
// process (trouble.since), which explains what (a request that failed with the fence's
// error or missed, a count short of what was written): a node logs the fence a moment
// after it refused its first request, so it waits up to 2 s for the line. When it does,
// it logs what it tolerates and why.
func stallExplains(t testing.TB, t0 time.Time, what string, marks ...string) bool {
	t.Helper()
	tr := troubleOf(t)
	deadline := time.Now().Add(2 * time.Second)
	for len(tr.since(t0, marks...)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	lines := tr.since(t0, marks...)
	if len(lines) == 0 {
		return false
	}
	t.Logf("tolerated, because the machine stalled (the cluster logged %d such lines): %s\n\t%s",
		len(lines), what, strings.Join(lines, "\n\t"))
	return true
}

// fenceExplains is stallExplains counting only fences, for a test that makes a member
// fail on purpose.
func fenceExplains(t testing.TB, t0 time.Time, what string) bool {
	t.Helper()
	return stallExplains(t, t0, what, "fencing this node", "recovered from fence")
}

// skipIfStalled ends the test as skipped when stallExplains(t, t0, what): a fence
// flushed data or refused requests the rest of the test counts on, so this run can prove
// nothing more. Otherwise it returns, and the caller fails the test.
func skipIfStalled(t testing.TB, t0 time.Time, what string) {
	t.Helper()
	if stallExplains(t, t0, what) {
		t.Skip("skipped: a node fenced itself or a member was declared dead (the machine stalled), so this run cannot check the rest")
	}
}

// stallCanExplain reports whether reply is what a client can get because the machine
// stalled: from a node that fenced itself (the fence's errors; a miss, since a fenced node
// misses every GET and one that recovered flushed its store), from one settling its
// partitions again after the fence (no holder yet, moving), or about a member falsely
// declared dead for a moment (not a live member, unreachable, did not answer); and from a
// fan-out to the members, one of those refusing it (not acknowledged, not every member
// answered). A wrong value or any other error is not.
func stallCanExplain(reply string) bool {
	if reply == "NF" || fencedError(reply) {
		return true
	}
	for _, s := range []string{errNoHolderYet, errMoving,
		"is not a live member", "unreachable", "did not answer", "not acknowledged by", "not every member answered"} {
		if strings.Contains(reply, s) {
			return true
		}
	}
	return false
}

// fencedError reports whether reply is a fenced node's refusal.
func fencedError(reply string) bool {
	return strings.Contains(reply, " is fenced") || strings.Contains(reply, "lost its lease")
}

// newClusterNode starts a cluster member named name that joins join (none: alone).
func newClusterNode(t testing.TB, name string, key []byte, join ...string) *Node {
	t.Helper()
	return newClusterNodeWith(t, name, key, nil, join...)
}

// newClusterNodeWith is newClusterNode with mut (if not nil) adjusting the cluster
// configuration first.
func newClusterNodeWith(t testing.TB, name string, key []byte, mut func(*ClusterConfig), join ...string) *Node {
	t.Helper()
	cc := &ClusterConfig{NodeName: name, Key: key, Join: join, Preset: "local"}
	if mut != nil {
		mut(cc)
	}
	cfg := Config{Bind: "127.0.0.1", Logger: clusterLogger(t, name), Cluster: cc}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.router.isClosed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return n
}

func startCluster(t testing.TB, size int) *testCluster {
	t.Helper()
	return startClusterWith(t, size, nil)
}

// startClusterWith is startCluster with mut (if not nil) adjusting the cluster
// configuration of every member, those add starts later too.
func startClusterWith(t testing.TB, size int, mut func(*ClusterConfig)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, key: []byte("test cluster key"), mut: mut}
	c.nodes = append(c.nodes, newClusterNodeWith(t, "n0", c.key, mut))
	for i := 1; i < size; i++ {
		c.add()
	}
	return c
}

// add starts one more member, joined through the first, and waits until settled.
func (c *testCluster) add() *Node {
	c.t.Helper()
	n := newClusterNodeWith(c.t, fmt.Sprintf("n%d", len(c.nodes)), c.key, c.mut, c.nodes[0].router.ml.Addr())
	c.nodes = append(c.nodes, n)
	c.settled(c.nodes)
	return n
}

// settled waits until every node of live has the same members and every partition is
// held by exactly its owner.
func (c *testCluster) settled(live []*Node) {
	c.t.Helper()
	waitSettled(c.t, live)
}

func waitSettled(t testing.TB, live []*Node) {
	t.Helper()
	waitFor(t, 15*time.Second, "the cluster settles", func() bool {
		var names []string
		for _, n := range live {
			names = append(names, n.router.self)
		}
		for _, n := range live {
			if strings.Join(n.router.view.Load().names, ",") != strings.Join(sortedCopy(names), ",") {
				return false
			}
			if ok, _ := n.router.Ready(); !ok {
				return false
			}
		}
		rg := live[0].router.ring.Load()
		for p := 0; p < rg.Partitions(); p++ {
			for _, n := range live {
				if n.router.parts[p].held.Load() != (rg.Owner(p) == n.router.self) {
					return false
				}
			}
		}
		return true
	})
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ownerOf returns the node that holds key.
func (c *testCluster) ownerOf(key string) *Node {
	name := c.nodes[0].router.ring.Load().OwnerOf(key)
	for _, n := range c.nodes {
		if n.router.self == name {
			return n
		}
	}
	c.t.Fatalf("no node named %s", name)
	return nil
}

// text is a minimal text-protocol client.
type textConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialTextProto(t testing.TB, n *Node) *textConn {
	t.Helper()
	c, r := dialListener(t, n, "tcp")
	return &textConn{t: t, c: c, r: r}
}

// dialListener connects to n's listener of kind ("tcp", "resp"); the connection closes
// when t ends.
func dialListener(t testing.TB, n *Node, kind string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.Addr(kind).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func (c *textConn) do(line string) string {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		c.t.Fatal(err)
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("%q: %v", line, err)
	}
	return strings.TrimSuffix(reply, "\n")
}

func httpGetJSON(t testing.TB, n *Node, path string, into any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.Addr("http").String()+path, nil)
	req.SetBasicAuth(DefaultUsername, DefaultPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if into != nil {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// failUnlessStalled fails t with what, unless explainable (by a stall: a fence's error, a
// miss, an entry a fence's flush removed) and a node of the cluster fenced itself or saw
// a member declared dead since t0: then the run ends as skipped (skipIfStalled).
func failUnlessStalled(t testing.TB, t0 time.Time, explainable bool, format string, args ...any) {
	t.Helper()
	what := fmt.Sprintf(format, args...)
	if explainable {
		skipIfStalled(t, t0, what)
	}
	t.Fatal(what)
}

func TestClusterRoutesEveryKeyFromEveryNodeOnEveryProtocol(t *testing.T) {
	c := startCluster(t, 3)
	const keys = 60
	written := time.Now()
	for i := range keys {
		n := c.nodes[i%3]
		if got := dialTextProto(t, n).do(fmt.Sprintf("PUT\tk%d\t-\t-\tv%d", i, i)); got != "OK" {
			failUnlessStalled(t, written, stallCanExplain(got), "PUT through %s: %q", n.router.self, got)
		}
	}
	for _, n := range c.nodes {
		text, resp := dialTextProto(t, n), dialRESP(t, n)
		for i := range keys {
			key, want := fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)
			if got := text.do("GET\t" + key); got != "VALUE\t"+want {
				failUnlessStalled(t, written, stallCanExplain(got), "text GET %s through %s: %q", key, n.router.self, got)
			}
			if got := resp.do("GET", key); got != want {
				e, isErr := got.(respErrReply)
				failUnlessStalled(t, written, got == nil || isErr && stallCanExplain(string(e)),
					"RESP GET %s through %s: %#v", key, n.router.self, got)
			}
			var body struct {
				Value string `json:"value"`
				Error string `json:"error"`
			}
			if code := httpGetJSON(t, n, "/get/"+key, &body); code != 200 || body.Value != want {
				failUnlessStalled(t, written, body.Error == "not_found" || stallCanExplain(body.Error),
					"http GET %s through %s: %d %q %q", key, n.router.self, code, body.Value, body.Error)
			}
		}
	}
	// Each key lives on its owner only.
	for i := range keys {
		key := fmt.Sprintf("k%d", i)
		owner := c.ownerOf(key)
		for _, n := range c.nodes {
			if _, ok := n.store.Get(key); ok != (n == owner) {
				// A fence's flush can remove it from its owner, not put it elsewhere.
				failUnlessStalled(t, written, !ok, "%s in the store of %s: %v (owner %s)", key, n.router.self, ok, owner.router.self)
			}
		}
	}
	// Forwarded writes keep their semantics: ADD, INCR, errors. (A fence's flush removes
	// k1: ADD then adds it, INCR then makes it 1.)
	for _, n := range c.nodes {
		text := dialTextProto(t, n)
		if got := text.do("ADD\tk1\t-\t-\tx"); got != "EXISTS" {
			failUnlessStalled(t, written, got == "OK" || stallCanExplain(got), "ADD through %s: %q", n.router.self, got)
		}
		if got := text.do("INCR\tk1"); got != "ERR value is not an integer" && !strings.HasPrefix(got, "ERR") {
			failUnlessStalled(t, written, got == "VALUE\t1", "INCR of a non-integer through %s: %q", n.router.self, got)
		}
		if got := text.do("INCR\tcounter\t5"); !strings.HasPrefix(got, "VALUE\t") {
			failUnlessStalled(t, written, stallCanExplain(got), "INCR through %s: %q", n.router.self, got)
		}
	}
	if got := dialTextProto(t, c.nodes[0]).do("GET\tcounter"); got != "VALUE\t15" {
		short := got == "VALUE\t5" || got == "VALUE\t10" // a fence's flush removed the counter
		failUnlessStalled(t, written, short || stallCanExplain(got), "counter after three INCR 5 through three nodes: %q", got)
	}
}

func TestClusterInvalidateTagThroughOneNodeRemovesOnAll(t *testing.T) {
	c := startCluster(t, 3)
	const keys = 90
	// A node that fences itself in a stall refuses requests and flushes its store: fewer
	// keys, errors; never a key the INV_TAG removed (failUnlessStalled).
	written := time.Now()
	for i := range keys {
		tags := "other"
		if i%2 == 0 {
			tags = "user:42,other"
		}
		if got := dialTextProto(t, c.nodes[i%3]).do(fmt.Sprintf("PUT\tk%d\t-\t%s\tv", i, tags)); got != "OK" {
			failUnlessStalled(t, written, stallCanExplain(got), "PUT k%d: %q", i, got)
		}
	}
	for _, n := range c.nodes {
		got := dialTextProto(t, n).do("KEYS_BY_TAG\tuser:42")
		if listed := strings.Count(got, ",") + 1; listed != keys/2 {
			failUnlessStalled(t, written, listed < keys/2 || stallCanExplain(got),
				"KEYS_BY_TAG through %s lists %d keys, want %d: %q", n.router.self, listed, keys/2, got)
		}
	}
	if got := dialTextProto(t, c.nodes[1]).do("INV_TAG\tuser:42"); got != fmt.Sprintf("INV_TAG\t%d", keys/2) {
		var removed int
		_, err := fmt.Sscanf(got, "INV_TAG\t%d", &removed)
		failUnlessStalled(t, written, err == nil && removed < keys/2 || stallCanExplain(got), "INV_TAG: %q", got)
	}
	for _, n := range c.nodes {
		text := dialTextProto(t, n)
		for i := range keys {
			got := text.do(fmt.Sprintf("GET\tk%d", i))
			if (i%2 == 0) != (got == "NF") {
				// Serving a key the INV_TAG removed is never explained by a stall.
				failUnlessStalled(t, written, !strings.HasPrefix(got, "VALUE") && stallCanExplain(got),
					"GET k%d through %s after INV_TAG: %q", i, n.router.self, got)
			}
		}
		if got := text.do("KEYS_BY_TAG\tuser:42"); got != "KEYS\t" && got != "KEYS" {
			failUnlessStalled(t, written, strings.HasPrefix(got, "ERR") && stallCanExplain(got),
				"KEYS_BY_TAG after INV_TAG through %s: %q", n.router.self, got)
		}
	}
	// STATS totals the cluster: every PUT and every removal once.
	stats := dialTextProto(t, c.nodes[2]).do("STATS")
	if !strings.Contains(stats, fmt.Sprintf("STATS\t%d\t", 0)) && !strings.Contains(stats, "\t") {
		failUnlessStalled(t, written, stallCanExplain(stats), "STATS: %q", stats)
	}
	for _, n := range c.nodes { // Items counts entries until the background removal ends
		n.store.WaitReclaim()
	}
	var st StatsReply
	if code := httpGetJSON(t, c.nodes[0], "/stats", &st); code != 200 || st.Items != keys/2 || st.Puts != keys || st.Invalidations != keys/2 {
		// A fence's flush removes entries (counted as invalidations); it adds none.
		flushed := code == 200 && st.Puts == keys && st.Items < keys/2 && st.Invalidations > keys/2
		failUnlessStalled(t, written, code != 200 || flushed,
			"cluster stats: %d %+v, want items %d puts %d invalidations %d", code, st, keys/2, keys, keys/2)
	}
	// FLUSH through one node empties all.
	if got := dialTextProto(t, c.nodes[0]).do("FLUSH"); got != fmt.Sprintf("FLUSH\t%d", keys/2) {
		var removed int
		_, err := fmt.Sscanf(got, "FLUSH\t%d", &removed)
		failUnlessStalled(t, written, err == nil && removed < keys/2 || stallCanExplain(got), "FLUSH: %q", got)
	}
	for _, n := range c.nodes {
		if n.store.Stats().Items != 0 {
			t.Fatalf("%s still has entries after FLUSH", n.router.self)
		}
	}
}

func TestClusterViewsAndReadiness(t *testing.T) {
	c := startCluster(t, 3)
	var members struct {
		Members []MemberInfo `json:"members"`
	}
	httpGetJSON(t, c.nodes[1], "/cluster/members", &members)
	if len(members.Members) != 3 {
		t.Fatalf("members: %+v", members)
	}
	total := 0
	for _, m := range members.Members {
		if m.State != "alive" || m.Stats == nil || m.Peer == "" || m.HTTP == "" {
			t.Fatalf("member %+v", m)
		}
		total += m.Partitions
	}
	for _, n := range c.nodes[1:] {
		if rtt, err := c.nodes[0].router.Ping(context.Background(), n.router.self); err != nil {
			t.Fatalf("ping %s: %v", n.router.self, err)
		} else {
			t.Logf("peer transport round trip to %s: %v", n.router.self, rtt)
		}
	}
	var ri RingInfo
	httpGetJSON(t, c.nodes[2], "/cluster/ring", &ri)
	if total != ri.Partitions || len(ri.Owners) != ri.Partitions || len(ri.Members) != 3 {
		t.Fatalf("ring %d partitions, %d owners, members %v; members own %d", ri.Partitions, len(ri.Owners), ri.Members, total)
	}
	if code := httpGetJSON(t, c.nodes[0], "/ready", nil); code != 200 {
		t.Fatalf("/ready: %d", code)
	}
}

// load runs writes and reads of keys through the given nodes until stop, counting
// failures (an error reply or a wrong value; a miss is allowed only for never-written
// keys), and apart those a stall cannot explain (stallCanExplain).
type load struct {
	ops, failures  atomic.Int64
	unexplained    atomic.Int64
	mu             sync.Mutex
	firstFailure   string
	firstUnexplain string
	stop           chan struct{}
	wg             sync.WaitGroup
}

func startLoad(t *testing.T, through []*Node, keys int) *load {
	l := &load{stop: make(chan struct{})}
	for w, n := range through {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			text := dialTextProto(t, n)
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				key := fmt.Sprintf("load%d", (i*7+w)%keys)
				value := fmt.Sprintf("w%d-%d", w, i)
				got := text.do(fmt.Sprintf("PUT\t%s\t-\t-\t%s", key, value))
				explained := stallCanExplain(got)
				if got == "OK" {
					got = text.do("GET\t" + key)
					explained = stallCanExplain(got)
					if !strings.HasPrefix(got, "VALUE\t") {
						got = "GET after PUT: " + got
					} else {
						got = "OK"
					}
				}
				l.ops.Add(1)
				if got != "OK" {
					l.failures.Add(1)
					if !explained {
						l.unexplained.Add(1)
					}
					l.mu.Lock()
					if l.firstFailure == "" {
						l.firstFailure = got
					}
					if !explained && l.firstUnexplain == "" {
						l.firstUnexplain = got
					}
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

func (l *load) finish() (ops, failures int64, first string) {
	close(l.stop)
	l.wg.Wait()
	return l.ops.Load(), l.failures.Load(), l.firstFailure
}

// check fails t if a request of the load failed, unless every failure is one a stall
// explains (stallCanExplain) and a node of the cluster did fence itself or saw a member
// declared dead since t0: a stalled machine, not what the test is about (during, e.g.
// "the join").
func (l *load) check(t *testing.T, t0 time.Time, during string) {
	t.Helper()
	ops, failures, first := l.finish()
	t.Logf("load during %s: %d ops, %d failed (first: %q)", during, ops, failures, first)
	switch {
	case failures == 0:
	case l.unexplained.Load() > 0:
		t.Errorf("%d of %d requests failed during %s, %d not with an error or a miss a stall explains; first of those: %q",
			failures, ops, during, l.unexplained.Load(), l.firstUnexplain)
	case !stallExplains(t, t0, fmt.Sprintf("%d of %d requests failed during %s with an error or a miss a stall explains", failures, ops, during)):
		t.Errorf("%d of %d requests failed during %s, and no node fenced itself or saw a member declared dead; first: %q", failures, ops, during, first)
	}
}

// getAll checks that key i of keys reads as VALUE\tv<i> through text. A miss or an error
// a stall explains is tolerated when a node fenced itself (or saw a member declared dead)
// since t0, the fence's flush having lost the entry: then it logs how many were lost.
func getAll(t *testing.T, text *textConn, t0 time.Time, format string, keys int, after string) {
	t.Helper()
	lost, stalled := 0, false
	for i := range keys {
		key := fmt.Sprintf(format, i)
		got := text.do("GET\t" + key)
		if got == fmt.Sprintf("VALUE\tv%d", i) {
			continue
		}
		if stallCanExplain(got) && (stalled || stallExplains(t, t0, fmt.Sprintf("%s after %s: %q", key, after, got))) {
			stalled = true
			lost++
			continue
		}
		t.Fatalf("%s after %s: %q", key, after, got)
	}
	if lost > 0 {
		t.Logf("%d of %d keys lost to a fence's flush after %s", lost, keys, after)
	}
}

func TestClusterJoinHandsPartitionsOverAndKeepsTheData(t *testing.T) {
	c := startCluster(t, 2)
	const keys = 2000
	written := time.Now()
	text := dialTextProto(t, c.nodes[0])
	for i := range keys {
		if got := text.do(fmt.Sprintf("PUT\tj%d\t-\tjoin\tv%d", i, i)); got != "OK" {
			if stallCanExplain(got) {
				skipIfStalled(t, written, fmt.Sprintf("PUT j%d before the join: %q", i, got))
			}
			t.Fatal(got)
		}
	}
	l := startLoad(t, c.nodes, 50)
	start := time.Now()
	c.add()
	t.Logf("third node settled in %v", time.Since(start))
	l.check(t, start, "the join")
	// Every key is still there, read through the new node, and lives on its owner.
	newText := dialTextProto(t, c.nodes[2])
	getAll(t, newText, written, "j%d", keys, "the join")
	moved := 0
	for i := range keys {
		if c.ownerOf(fmt.Sprintf("j%d", i)) == c.nodes[2] {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("the new node owns none of the keys")
	}
	t.Logf("%d of %d keys moved to the new node", moved, keys)
	got := newText.do("KEYS_BY_TAG\tjoin")
	if n := strings.Count(got, ",") + 1; n != keys {
		if n > keys || !stallExplains(t, written, fmt.Sprintf("KEYS_BY_TAG after the join lists %d keys of %d", n, keys)) {
			t.Fatalf("KEYS_BY_TAG after the join lists %d keys", n)
		}
	}
}

func TestClusterGracefulLeaveFailsNoRequest(t *testing.T) {
	c := startCluster(t, 3)
	const keys = 1000
	written := time.Now()
	text := dialTextProto(t, c.nodes[0])
	for i := range keys {
		if got := text.do(fmt.Sprintf("PUT\tg%d\t-\t-\tv%d", i, i)); got != "OK" {
			if stallCanExplain(got) {
				skipIfStalled(t, written, fmt.Sprintf("PUT g%d before the leave: %q", i, got))
			}
			t.Fatal(got)
		}
	}
	l := startLoad(t, c.nodes[:2], 50)
	loadStart := time.Now()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leaving := c.nodes[2]
	start := time.Now()
	if err := leaving.Shutdown(ctx); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	t.Logf("graceful leave took %v", time.Since(start))
	c.settled(c.nodes[:2])
	// A node whose lease lapsed during a stall fences itself and refuses requests: that
	// is not the leave failing them. Any other failure is.
	l.check(t, loadStart, "a graceful leave")
	getAll(t, text, written, "g%d", keys, "the leave")
}

func TestClusterCrashIsDetectedAndRoutedAround(t *testing.T) {
	c := startCluster(t, 3)
	victim := c.nodes[2]
	var key string
	for i := 0; ; i++ {
		key = fmt.Sprintf("c%d", i)
		if c.ownerOf(key) == victim {
			break
		}
	}
	text := dialTextProto(t, c.nodes[0])
	if got := text.do("PUT\t" + key + "\t-\t-\tbefore"); got != "OK" {
		t.Fatal(got)
	}
	start := time.Now()
	victim.crash()
	// Until the failure is detected a GET misses and a write fails fast; then the new
	// owner serves.
	var firstErr string
	waitFor(t, 10*time.Second, "writes to the crashed node's key succeed again", func() bool {
		got := text.do("PUT\t" + key + "\t-\t-\tafter")
		if got != "OK" && firstErr == "" {
			firstErr = got
		}
		return got == "OK"
	})
	t.Logf("crash routed around after %v (first failed write: %q)", time.Since(start).Round(time.Millisecond), firstErr)
	named := slices.ContainsFunc([]string{"unreachable", "did not answer", "no holder", "not a live member"},
		func(cause string) bool { return strings.Contains(firstErr, cause) })
	// With one of three members gone, a stall can fence n0: its lease lapses, or memberlist
	// declares n1 dead for a moment and n0 sees no majority. The fence's error names that
	// cause; it is accepted only if n0 or n1 did log a fence.
	fenced := strings.Contains(firstErr, " is fenced") || strings.Contains(firstErr, "lost its lease")
	if firstErr != "" && !named && !(fenced && fenceExplains(t, start, fmt.Sprintf("the first failed write: %q", firstErr))) {
		t.Errorf("a write to a crashed owner failed with %q; want an error naming the cause", firstErr)
	}
	c.settled(c.nodes[:2])
	for _, n := range c.nodes[:2] {
		if got := dialTextProto(t, n).do("GET\t" + key); got != "VALUE\tafter" {
			// A fence's flush (after the write succeeded) can remove it; nothing else.
			if stallCanExplain(got) && fenceExplains(t, start, fmt.Sprintf("GET through %s after recovery: %q", n.router.self, got)) {
				t.Skip("skipped: a node fenced itself (the machine stalled) and flushed the key")
			}
			t.Fatalf("GET through %s after recovery: %q", n.router.self, got)
		}
	}
}

func TestClusterNodeWithoutTheKeyIsRefused(t *testing.T) {
	c := startCluster(t, 2)
	intruder := newClusterNode(t, "intruder", []byte("another key"), c.nodes[0].router.ml.Addr())
	time.Sleep(2 * time.Second) // it keeps trying (joinGrace)
	if got := intruder.router.view.Load().names; !slices.Equal(got, []string{"intruder"}) {
		t.Fatalf("the intruder sees members %v", got)
	}
	// Neither member has ever known it, alive or gone (a member of the cluster declared
	// dead for a moment under load may be missing from the views: not the point here).
	for _, n := range c.nodes {
		for _, m := range n.router.ml.Members() {
			if m.Name == "intruder" {
				t.Fatalf("%s knows the intruder as a member (%s)", n.router.self, m.State)
			}
		}
		if slices.Contains(n.router.view.Load().names, "intruder") {
			t.Fatalf("%s has the intruder in its view %v", n.router.self, n.router.view.Load().names)
		}
	}
	// Nor does the transport accept it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	peer := c.nodes[0].router.view.Load().peer[c.nodes[0].router.self]
	_ = peer
	addr := c.nodes[1].router.view.Load().peer["n0"]
	if _, err := intruder.router.tc.Call(ctx, addr, kindStats, nil); err == nil {
		t.Fatal("a peer without the cluster key got a reply from the transport")
	}
}

// keyOwnedBy returns a key with prefix that n owns.
func (c *testCluster) keyOwnedBy(n *Node, prefix string) string {
	for i := 0; ; i++ {
		key := fmt.Sprintf("%s%d", prefix, i)
		if c.ownerOf(key) == n {
			return key
		}
	}
}

// A member that was cut off (declared dead) and comes back with the store it had must
// not serve anything it missed meanwhile: an invalidation, an overwrite, a delete.
func TestClusterRejoinNeverServesWhatItMissed(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	victim := c.nodes[2]
	kStale, kOver, kDel := c.keyOwnedBy(victim, "stale"), c.keyOwnedBy(victim, "over"), c.keyOwnedBy(victim, "del")
	r0 := c.nodes[0].router
	for key, tags := range map[string][]string{kStale: {"t"}, kOver: nil, kDel: nil} {
		if err := r0.Put(ctx, key, []byte("old"), 0, tags); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := victim.store.Get(kStale); !ok {
		t.Fatal("the victim does not hold its key")
	}

	// Cut the victim off: gossip and transport stop, its store stays as it was.
	old := victim.router
	gossip, peer := old.ml.Addr(), r0.view.Load().peer[old.self]
	old.Close()
	c.settled(c.nodes[:2])
	if err := r0.Put(ctx, kOver, []byte("new"), 0, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := c.nodes[1].router.InvalidateTag(ctx, "t"); err != nil || n != 0 {
		// kStale's partition was claimed empty: nothing to remove, but it must succeed.
		t.Fatalf("INV_TAG while the victim is dead: %d, %v", n, err)
	}
	if _, err := r0.Del(ctx, kDel); err != nil {
		t.Fatal(err)
	}

	// The victim comes back on the same ports with its old store.
	cc := old.cfg
	_, gp, _ := net.SplitHostPort(gossip)
	_, pp, _ := net.SplitHostPort(peer)
	fmt.Sscan(gp, &cc.GossipPort)
	fmt.Sscan(pp, &cc.PeerPort)
	cc.Join = []string{r0.ml.Addr()}
	back, err := newRouter(cc, victim.store, clusterLogger(t, "back"))
	if err != nil {
		t.Fatal(err)
	}
	if err := back.start(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	victim.router = back
	c.settled(c.nodes)
	for _, n := range c.nodes {
		r := n.router
		if v, ok, _ := r.Get(ctx, kStale); ok {
			t.Errorf("%s serves %s=%q, invalidated while its owner was away", r.self, kStale, v)
		}
		if v, _, _ := r.Get(ctx, kOver); string(v) != "new" {
			t.Errorf("%s serves %s=%q, overwritten with \"new\" while its owner was away", r.self, kOver, v)
		}
		if v, ok, _ := r.Get(ctx, kDel); ok {
			t.Errorf("%s serves %s=%q, deleted while its owner was away", r.self, kDel, v)
		}
	}
}

// An invalidation a member did not acknowledge fails with an error naming it, and the
// retry queue delivers it once the member is reachable again.
//
// Whether the member applied the invalidation is read from two of its entries: one with
// the tag, and one without (bystander). The invalidation removes the first only; a node
// that fenced itself in a stall flushes its store when it recovers and so removes both,
// which tells nothing either way: then, if a fence was logged, the entries are written
// again to see the retry land, or the test ends as skipped.
func TestClusterUnacknowledgedInvalidationNamesThePeerAndIsRetried(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	victim := c.nodes[2]
	key, bystander := c.keyOwnedBy(victim, "k"), c.keyOwnedBy(victim, "other")
	r0 := c.nodes[0].router
	written := time.Now()
	for k, tags := range map[string][]string{key: {"t"}, bystander: {"u"}} {
		if err := r0.Put(ctx, k, []byte("v"), 0, tags); err != nil {
			failUnlessStalled(t, written, stallCanExplain(err.Error()), "PUT %s: %v", k, err)
		}
	}
	has := func(k string) bool { _, ok := victim.store.Get(k); return ok }
	// flushed returns if the victim still holds the bystander; else it skips the test if
	// a fence (whose flush removes both) was logged since seeded, and fails it if not.
	seeded := written
	flushed := func(what string) {
		t.Helper()
		if !has(bystander) {
			what = fmt.Sprintf("%s, and the victim lost %s too (not tagged t)", what, bystander)
			if fenceExplains(t, seeded, what) {
				t.Skip("skipped: a node fenced itself (the machine stalled) and flushed its store")
			}
			t.Fatal(what)
		}
	}
	// The victim's peer transport goes away; its gossip stays, so it is not declared dead.
	peer := r0.view.Load().peer[victim.router.self]
	victim.router.ts.Close()
	start := time.Now()
	_, err := r0.InvalidateTag(ctx, "t")
	if err == nil || !strings.Contains(err.Error(), victim.router.self) {
		failUnlessStalled(t, written, err != nil && stallCanExplain(err.Error()),
			"INV_TAG with an unreachable member: %v, want an error naming %s", err, victim.router.self)
	}
	t.Logf("INV_TAG failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !has(key) {
		if has(bystander) {
			t.Fatal("the unreachable member applied the invalidation")
		}
		what := fmt.Sprintf("the victim lost %s and %s (not tagged t): it flushed its store", key, bystander)
		if !fenceExplains(t, written, what) {
			t.Fatal(what + ", and no node fenced itself")
		}
		// Whether it applied the invalidation cannot be told. Write both to its store again
		// to see the retry remove the tagged one only.
		for k, tag := range map[string]string{key: "t", bystander: "u"} {
			if err := victim.store.Put(k, []byte("v"), 0, []string{tag}); err != nil {
				t.Fatal(err)
			}
		}
		seeded = time.Now()
	}
	if got := r0.retry.Pending()[victim.router.self]; got != 1 {
		// A member declared dead (for a moment, in a stall) needs no retry: it is dropped.
		failUnlessStalled(t, written, got == 0, "retry queue for the victim holds %d invalidations, want 1", got)
	}
	// The transport comes back on the same port: the retry lands.
	ts, err := transport.NewServer(transport.Config{Name: victim.router.self, ClusterKey: c.key})
	if err != nil {
		t.Fatal(err)
	}
	victim.router.handle(ts)
	if _, err := ts.Listen(peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.Close() })
	waitFor(t, 10*time.Second, "the retried invalidation reaches the member", func() bool { return !has(key) })
	flushed("the retried invalidation reached the member")
	waitFor(t, 5*time.Second, "the retry queue empties", func() bool { return len(r0.retry.Pending()) == 0 })
}

// A fenced node (its lease lapsed, or it sees only a minority) serves no data and vouches
// for no invalidation: the members it cannot reach may be alive and serving (promises 2
// and 3). The router is not started, so nothing lifts the fence behind the test's back.
func TestClusterFencedNodeServesNothingAndRefusesInvalidations(t *testing.T) {
	store, err := cache.New(cache.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r, err := newRouter(ClusterConfig{NodeName: "alone", Bind: "127.0.0.1", ForwardTimeout: time.Second,
		InvalidationTimeout: time.Second, DeadForget: time.Minute, HandoffBatch: 8}, store, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if err := r.Put(ctx, "k", []byte("v"), 0, []string{"t"}); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := r.Get(ctx, "k"); !ok || string(v) != "v" {
		t.Fatalf("GET before the fence: %q %v", v, ok)
	}

	r.fenced.Store(true)
	if v, ok, err := r.Get(ctx, "k"); ok || err != nil {
		t.Errorf("GET on a fenced node: %q %v %v, want a miss", v, ok, err)
	}
	if err := r.Put(ctx, "k", []byte("w"), 0, nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("PUT on a fenced node: %v, want ErrUnavailable", err)
	}
	for name, inv := range map[string]func() (int, error){
		"INV_TAG":  func() (int, error) { return r.InvalidateTag(ctx, "t") },
		"INV_KEYS": func() (int, error) { return r.InvalidateKeys(ctx, []string{"k"}) },
		"FLUSH":    func() (int, error) { return r.Flush(ctx) },
	} {
		if _, err := inv(); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s on a fenced node: %v, want ErrUnavailable", name, err)
		}
	}
}

// A member can apply an invalidation before a handoff to it begins (it coordinated the
// invalidation, or got it first) and then import an entry the sender read before the
// invalidation reached the sender. The member remembers the invalidations it applied
// recently, not only those during a handoff, and refuses such an entry. Scenario 3
// (pause, resume) found the read of one after its INV_TAG had returned.
func TestHandoffRefusesAnEntryAnInvalidationBeforeItBeganRemoved(t *testing.T) {
	c := startCluster(t, 3)
	coord := c.nodes[2]
	key := c.keyOwnedBy(coord, "imported")
	p := coord.store.PartitionOf(key)
	old := coord.store.Clock().Next() // the entry's stamp: written before the invalidation
	if _, err := coord.Backend().InvalidateTag(context.Background(), "rb"); err != nil {
		t.Fatalf("INV_TAG: %v", err)
	}
	// The handoff begins after the invalidation was applied here.
	ctx := context.Background()
	r := coord.router
	if _, err := r.handleHandoffBegin(ctx, "n0", handoffReq{P: p}); err != nil {
		t.Fatal(err)
	}
	other := ""
	for i := 0; other == ""; i++ {
		if k := fmt.Sprintf("fresh%d", i); coord.store.PartitionOf(k) == p {
			other = k
		}
	}
	stale := toWire(cache.Entry{Key: key, Value: []byte("stale"), Tags: []string{"rb"}, Stamp: old})
	fresh := toWire(cache.Entry{Key: other, Value: []byte("new"), Tags: []string{"rb"}, Stamp: coord.store.Clock().Next()})
	rep, err := r.handleHandoffEntries(ctx, "n0", handoffReq{P: p, Entries: []wireEntry{stale, fresh}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Imported != 1 {
		t.Fatalf("imported %d entries, want 1: the one written after the invalidation", rep.Imported)
	}
	if v, ok := coord.store.Get(stale.Key); ok {
		t.Fatalf("an entry the invalidation removed was imported: %q", v)
	}
	if _, ok := coord.store.Get(fresh.Key); !ok {
		t.Fatal("the entry written after the invalidation was refused")
	}
}

// A forwarded command that arrives past its deadline is refused unrun: the forwarding
// node has told its client the outcome is unknown, and the write must not land later
// (TCP can deliver it late, after a healed partition).
func TestForwardedCommandPastItsDeadlineIsNotRun(t *testing.T) {
	c := startCluster(t, 2)
	n := c.nodes[1]
	key := c.keyOwnedBy(n, "late")
	late := time.Now().Add(-forwardDeadlineSkew - time.Second).UnixNano()
	rep, err := n.router.handleKeyOp(context.Background(), "n0", keyOp{Op: opPut, Key: key, Value: []byte("late"), Hop: 1, Deadline: late})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err.decode(); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not run") {
		t.Fatalf("a late forwarded PUT: %v, want unavailable, not run", err)
	}
	if _, ok := n.store.Get(key); ok {
		t.Fatal("the late forwarded PUT was run")
	}
	onTime := time.Now().Add(time.Second).UnixNano()
	rep, _ = n.router.handleKeyOp(context.Background(), "n0", keyOp{Op: opPut, Key: key, Value: []byte("ok"), Hop: 1, Deadline: onTime})
	if err := rep.Err.decode(); err != nil {
		t.Fatalf("an on-time forwarded PUT: %v", err)
	}
	if v, ok := n.store.Get(key); !ok || string(v) != "ok" {
		t.Fatalf("the on-time forwarded PUT: %q %v", v, ok)
	}
}

// A member that announced its leave and whose peer port refuses connections has left,
// whether or not this node has heard of the leave itself: an invalidation does not wait
// for it (it serves nothing any more).
// slowInvalidations is the InvalidationTimeout of the tests that check an invalidation
// ends well before it (half of it): long, so that a stalled machine cannot stretch a
// quick one that far, while waiting for the timeout still fails them.
func slowInvalidations(cc *ClusterConfig) { cc.InvalidationTimeout = 10 * time.Second }

func TestInvalidationDoesNotWaitForAMemberThatLeftUnheard(t *testing.T) {
	c := startClusterWith(t, 3, slowInvalidations)
	coord, gone := c.nodes[0], c.nodes[2]
	if err := gone.router.ml.AnnounceLeaving(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the coordinator sees the leave intent", func() bool {
		return coord.router.view.Load().leaving[gone.router.self]
	})
	gone.router.ts.Close() // the peer port closes; memberlist has not said it left
	start := time.Now()
	_, err := coord.Backend().InvalidateTag(context.Background(), "bye")
	// The time first: waiting for the member that left is the bug this test is about.
	if el := time.Since(start); el > coord.router.cfg.InvalidationTimeout/2 {
		t.Fatalf("INV_TAG waited %s for a member that left (%v)", el, err)
	}
	if err != nil {
		failUnlessStalled(t, start, fencedError(err.Error()), "INV_TAG: %v", err)
	}
}

// Handoffs in a circle (n0 to n1, n1 to n2, n2 to n0) make each node relay every
// invalidation to the next: relayed copies name their relayers, so the relays stop
// instead of going round until the invalidation times out.
func TestInvalidationRelaysAroundACircleOfHandoffsStop(t *testing.T) {
	c := startClusterWith(t, 3, slowInvalidations)
	for i, n := range c.nodes {
		next := c.nodes[(i+1)%3].router.self
		n.router.addOutgoing(next, 1)
		t.Cleanup(func() { n.router.addOutgoing(next, -1) })
	}
	start := time.Now()
	_, err := c.nodes[0].Backend().InvalidateTag(context.Background(), "circle")
	if el := time.Since(start); el > c.nodes[0].router.cfg.InvalidationTimeout/2 {
		t.Fatalf("INV_TAG took %s: relays went round the circle (%v)", el, err)
	}
	if err != nil {
		failUnlessStalled(t, start, fencedError(err.Error()), "INV_TAG: %v", err)
	}
}

// A command whose hops run out between members that disagree about a partition for a
// moment (each thinks the other has it, as during a handoff) ran nowhere: the node the
// client sent it to tries it again, within the forward deadline, instead of failing it.
func TestClusterCommandThatFoundNoHolderIsTriedAgain(t *testing.T) {
	c := startCluster(t, 3)
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	key := ""
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("k%d", i); c.ownerOf(k) == n2 {
			key = k
		}
	}
	p := n0.store.PartitionOf(key)
	// n0 sends p's commands to n1 and n1 back to n0 (moved to), until the hops run out.
	storeName(&n0.router.parts[p].movedTo, n1.router.self)
	storeName(&n1.router.parts[p].movedTo, n0.router.self)
	healed := make(chan struct{})
	go func() {
		time.Sleep(150 * time.Millisecond)
		storeName(&n0.router.parts[p].movedTo, "")
		storeName(&n1.router.parts[p].movedTo, "")
		close(healed)
	}()
	err := n0.router.Put(context.Background(), key, []byte("v"), 0, nil)
	<-healed
	if err != nil {
		t.Fatalf("PUT while the members disagreed for 150 ms: %v", err)
	}
	if got := n0.router.routeRetries.Load(); got == 0 {
		t.Errorf("the PUT succeeded without being tried again (routeRetries 0): the disagreement was not seen")
	}
	if v, ok := n2.store.Get(key); !ok || string(v) != "v" {
		t.Errorf("the owner holds %q, %v; want v", v, ok)
	}
	// Past the deadline it still fails, and says so.
	storeName(&n0.router.parts[p].movedTo, n1.router.self)
	storeName(&n1.router.parts[p].movedTo, n0.router.self)
	defer storeName(&n0.router.parts[p].movedTo, "")
	defer storeName(&n1.router.parts[p].movedTo, "")
	start := time.Now()
	err = n0.router.Put(context.Background(), key, []byte("w"), 0, nil)
	if err == nil || !strings.Contains(err.Error(), "is moving, retry") {
		t.Fatalf("PUT while the members disagree for good: %v, want the moving error", err)
	}
	if el := time.Since(start); el > n0.router.cfg.ForwardTimeout+time.Second {
		t.Errorf("gave up after %v, past the forward timeout %v", el, n0.router.cfg.ForwardTimeout)
	}
}
