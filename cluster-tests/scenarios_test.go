package clustertests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fault scenarios of issue 5. Each starts a cluster of 3, runs the workload against
// every node while it injects one kind of fault, checks the history, and prints one
// table row: operations, successes, errors, misses, stale reads, resurrections,
// linearizability violations, the time the others took to drop the failed node (detect),
// the time until every node routed correctly again (reroute), the requests that failed
// around graceful leaves, and the hit ratio.
//
// They start processes, so they run only with TAGCACHE_CLUSTER_TESTS=1 (make
// cluster-test); the partition scenario also needs root (network namespaces).

// workloadConfig is the workload every scenario runs against c while it injects faults:
// 8 clients over every node and protocol, 20 keys, 5 tags.
func workloadConfig(c *Cluster, seed uint64) WorkloadConfig {
	user, pass := c.Credentials()
	return WorkloadConfig{
		Endpoints: c.Endpoints,
		Clients:   8,
		Keys:      20,
		Tags:      5,
		Duration:  10 * time.Minute, // stopped by the scenario when its faults are done
		Username:  user,
		Password:  pass,
		Seed:      seed,
		OpTimeout: 5 * time.Second,
	}
}

// load is a workload running in the background.
type load struct {
	cancel context.CancelFunc
	done   chan struct{}
	hist   *History
	start  time.Time
}

// startLoad starts the workload against c; t's cleanup stops it if the scenario did not.
func startLoad(t *testing.T, c *Cluster, seed uint64) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{}), start: time.Now()}
	cfg := workloadConfig(c, seed)
	go func() {
		defer close(l.done)
		l.hist = RunWorkload(ctx, cfg)
	}()
	t.Cleanup(l.wait)
	return l
}

func (l *load) wait() {
	l.cancel()
	<-l.done
}

// stop ends the workload and checks its history.
func (l *load) stop(t *testing.T) (*History, Report) {
	l.wait()
	ran := time.Since(l.start)
	start := time.Now()
	rep := Check(l.hist)
	t.Logf("workload ran %s (%d operations); checked in %s", ran.Round(time.Millisecond), l.hist.Len(), time.Since(start).Round(time.Millisecond))
	return l.hist, rep
}

// seedFor returns the workload seed: $TAGCACHE_CLUSTER_SEED, or a random one (logged,
// so that a failure can be replayed).
func seedFor(t *testing.T) uint64 {
	if s := os.Getenv("TAGCACHE_CLUSTER_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TAGCACHE_CLUSTER_SEED: %v", err)
		}
		return seed
	}
	seed := rand.Uint64() >> 1
	t.Logf("workload seed %d (TAGCACHE_CLUSTER_SEED=%d replays it)", seed, seed)
	return seed
}

// result is one scenario's table row.
type result struct {
	Scenario string
	Report
	// HarnessStale counts the stale reads of the scenario's own probes (a tagged key
	// invalidated during the fault), on top of the checker's.
	HarnessStale int
	// Detect is the time from the fault until every other node had dropped the node
	// from its ring; Reroute until every node routed a key of the node's partitions
	// correctly again. 0: no such fault.
	Detect, Reroute time.Duration
	// LeaveFailed is the requests that failed in a scenario of graceful leaves (all of
	// its failed requests, leaves or not); -1 when the scenario has no leave.
	LeaveFailed int
	// HitRatio is the share of the workload's GETs that found a value; -1: not shown.
	HitRatio float64
	Took     time.Duration
	// Failures summarizes the failed operations: each distinct error with its count
	// and one operation that got it.
	Failures []string
}

var (
	resultsMu sync.Mutex
	results   []result // every scenario's row, for TestScenarioSummary
)

const tableHeader = "| scenario | ops | ok | errors | unknown | misses | stale reads | resurrections | lin. violations | check timeouts | detect | reroute | failed in leave | hit ratio | took |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"

func (r result) row() string {
	dur := func(d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return d.Round(10 * time.Millisecond).String()
	}
	leave, hit := "-", "-"
	if r.LeaveFailed >= 0 {
		leave = strconv.Itoa(r.LeaveFailed)
	}
	if r.HitRatio >= 0 {
		hit = fmt.Sprintf("%.1f%%", 100*r.HitRatio)
	}
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s | %s | %s |",
		r.Scenario, r.Ops, r.OK, r.Errors, r.Unknown, r.Misses, r.StaleReads+r.HarnessStale,
		r.Resurrections, r.LinearizabilityViolations, r.CheckTimeouts,
		dur(r.Detect), dur(r.Reroute), leave, hit, dur(r.Took))
}

// publish prints r's table and keeps the row for the summary.
func publish(t *testing.T, r result) {
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
	fmt.Printf("\n%s\n%s\n\n", tableHeader, r.row())
	for _, f := range r.Failures {
		t.Logf("failed: %s", f)
	}
}

// checkConsistent fails t on any stale read, resurrection, linearizability violation or
// key the checker could not finish, printing the checker's evidence and the nodes'
// warnings.
func checkConsistent(t *testing.T, c *Cluster, r result) {
	t.Helper()
	if r.StaleReads+r.HarnessStale == 0 && r.Resurrections == 0 && r.LinearizabilityViolations == 0 && r.CheckTimeouts == 0 {
		return
	}
	// A key whose linearizability check timed out was not checked: that is not a pass.
	t.Errorf("%s: %d stale reads (%d seen by the harness's probes), %d resurrections, %d linearizability violations, %d keys not checked (porcupine timed out)",
		r.Scenario, r.StaleReads+r.HarnessStale, r.HarnessStale, r.Resurrections, r.LinearizabilityViolations, r.CheckTimeouts)
	printEvidence(t, c, r)
}

// checkNoFailedRequest fails t if any request failed (errors or unknown outcomes).
func checkNoFailedRequest(t *testing.T, c *Cluster, r result) {
	t.Helper()
	if failed := r.Errors + r.Unknown; failed > 0 {
		t.Errorf("%s: %d requests failed (%d errors, %d unknown outcomes); a graceful leave or a join must fail none (failures listed above)", r.Scenario, failed, r.Errors, r.Unknown)
		printEvidence(t, c, r)
	}
}

// printEvidence logs the checker's evidence and the last warnings and errors of every
// node's log.
func printEvidence(t *testing.T, c *Cluster, r result) {
	t.Helper()
	// The first few of each kind (stale read, resurrection, linearizability…).
	shown := map[string]int{}
	for _, e := range r.Evidence {
		kind, _, _ := strings.Cut(e, ":")
		if shown[kind]++; shown[kind] <= 8 {
			t.Logf("evidence: %s", e)
		}
	}
	for kind, n := range shown {
		if n > 8 {
			t.Logf("evidence: %d more of kind %q (see evidence.txt in the logs)", n-8, kind)
		}
	}
	for i := range c.Size() {
		lines := c.LogLines(i, "[WARN]", "[ERROR]", "panic")
		lines = slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "Failed to send") })
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		for _, l := range lines {
			t.Logf("%s log: %s", c.Node(i).Name, l)
		}
	}
}

// opClient runs the functional scenario's commands over one of the workload's
// connections (text, RESP or HTTP), so the scenario and the workload speak the
// protocols through the same code.
type opClient struct{ conn wlConn }

// run performs op; an error answer or a broken connection is an error.
func (c opClient) run(op Op) (Op, error) {
	if state := c.conn.do(&op); state != connUsable || op.Status != StatusOK {
		return op, fmt.Errorf("%s: %s (status %d)", op.Kind, op.Err, op.Status)
	}
	return op, nil
}

func (c opClient) put(key, value string, tags ...string) error {
	_, err := c.run(Op{Kind: OpPut, Key: key, Value: value, Tags: tags})
	return err
}

func (c opClient) get(key string) (string, bool, error) {
	op, err := c.run(Op{Kind: OpGet, Key: key})
	return op.Result, op.Found, err
}

func (c opClient) del(key string) error {
	_, err := c.run(Op{Kind: OpDel, Key: key})
	return err
}

func (c opClient) invalidateTag(tag string) (int, error) {
	op, err := c.run(Op{Kind: OpInvTag, Tag: tag})
	return op.Count, err
}

func (c opClient) keysByTag(tag string) ([]string, error) {
	op, err := c.run(Op{Kind: OpKeysByTag, Tag: tag})
	return op.Keys, err
}

var protocols = []string{"text", "resp", "http"}

// dialAll opens one client per node and protocol: clients[node][protocol].
func dialAll(t *testing.T, c *Cluster) [][]opClient {
	t.Helper()
	user, pass := c.Credentials()
	cfg := WorkloadConfig{Username: user, Password: pass, OpTimeout: 5 * time.Second}
	ctx := context.Background()
	var all [][]opClient
	for _, i := range c.Up() {
		ep := c.Node(i).Endpoint()
		tc, err := dialWLText(ctx, ep.Text, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := dialWLRESP(ctx, ep.RESP, cfg)
		if err != nil {
			t.Fatal(err)
		}
		hc := newWLHTTP(ep.HTTP, cfg)
		t.Cleanup(func() { tc.close(); rc.close(); hc.close() })
		all = append(all, []opClient{{tc}, {rc}, {hc}})
	}
	return all
}

// TestScenario1RoutingAndInvalidationFromEveryNode writes a key through every node over
// every protocol and reads each back through every node over every protocol; then
// invalidates tags through one node and checks that no node serves an invalidated key;
// then runs the workload with no fault.
func TestScenario1RoutingAndInvalidationFromEveryNode(t *testing.T) {
	began := time.Now()
	c := startCluster(t, 3, Options{})
	clients := dialAll(t, c)
	type written struct{ key, value, proto string }
	var keys []written
	for i, byProto := range clients {
		for p, cl := range byProto {
			w := written{fmt.Sprintf("s1:%s:n%d", protocols[p], i), fmt.Sprintf("v-%s-%d", protocols[p], i), protocols[p]}
			if err := cl.put(w.key, w.value, "s1:all", "s1:"+w.proto); err != nil {
				t.Fatalf("PUT %s through n%d over %s: %v", w.key, i, w.proto, err)
			}
			keys = append(keys, w)
		}
	}
	// readAll checks every key through every node and protocol: present when want
	// says so, with its value.
	readAll := func(stage string, want func(written) bool) {
		t.Helper()
		for i, byProto := range clients {
			for p, cl := range byProto {
				for _, w := range keys {
					v, found, err := cl.get(w.key)
					switch {
					case err != nil:
						t.Errorf("%s: GET %s through n%d over %s: %v", stage, w.key, i, protocols[p], err)
					case want(w) && (!found || v != w.value):
						t.Errorf("%s: GET %s through n%d over %s: %q found=%v, want %q", stage, w.key, i, protocols[p], v, found, w.value)
					case !want(w) && found:
						t.Errorf("%s: GET %s through n%d over %s: %q, want a miss (stale read)", stage, w.key, i, protocols[p], v)
					}
				}
			}
		}
	}
	readAll("after the writes", func(written) bool { return true })
	var all []string
	for _, w := range keys {
		all = append(all, w.key)
	}
	slices.Sort(all)
	for i, byProto := range clients {
		for p, cl := range byProto {
			got, err := cl.keysByTag("s1:all")
			slices.Sort(got)
			if err != nil || !slices.Equal(got, all) {
				t.Errorf("KEYS_BY_TAG s1:all through n%d over %s: %v %v, want %v", i, protocols[p], got, err, all)
			}
		}
	}

	// INV_TAG through n0 over RESP: the keys written over text are gone everywhere.
	if n, err := clients[0][1].invalidateTag("s1:text"); err != nil || n != len(clients) {
		t.Errorf("TAG.INVALIDATE s1:text through n0: %d %v, want %d", n, err, len(clients))
	}
	readAll("after INV_TAG s1:text", func(w written) bool { return w.proto != "text" })
	// DEL through n1 over text of a key written over HTTP through n2.
	gone := fmt.Sprintf("s1:http:n%d", len(clients)-1)
	if err := clients[1][0].del(gone); err != nil {
		t.Errorf("DEL %s through n1: %v", gone, err)
	}
	readAll("after DEL", func(w written) bool { return w.proto != "text" && w.key != gone })
	// INV_TAG through the last node over HTTP: everything is gone everywhere.
	if n, err := clients[len(clients)-1][2].invalidateTag("s1:all"); err != nil || n != len(keys)-len(clients)-1 {
		t.Errorf("invalidate-tag s1:all through the last node: %d %v, want %d", n, err, len(keys)-len(clients)-1)
	}
	readAll("after INV_TAG s1:all", func(written) bool { return false })
	for i, byProto := range clients {
		for p, cl := range byProto {
			if got, err := cl.keysByTag("s1:all"); err != nil || len(got) != 0 {
				t.Errorf("KEYS_BY_TAG s1:all through n%d over %s after the invalidation: %v %v, want none", i, protocols[p], got, err)
			}
		}
	}

	// The workload with no fault: nothing may fail.
	l := startLoad(t, c, seedFor(t))
	time.Sleep(5 * time.Second)
	r := result{Scenario: "1 routing and invalidation from every node", LeaveFailed: -1}
	finish(t, c, l, began, &r)
	checkConsistent(t, c, r)
	checkNoFailedRequest(t, c, r)
}

// TestScenario2KillOwnerAndRestartNoResurrection kills an owner with SIGKILL under load,
// measures detection and rerouting, restarts it under the same name and checks that no
// value came back.
func TestScenario2KillOwnerAndRestartNoResurrection(t *testing.T) {
	began := time.Now()
	ctx := testContext(t)
	c := startCluster(t, 3, Options{})
	const victim = 1
	probes, err := c.KeysOwnedBy(ctx, 0, c.Node(victim).Name, 3)
	if err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, c, seedFor(t))
	time.Sleep(3 * time.Second)

	r := result{Scenario: "2 kill -9 an owner, restart", LeaveFailed: -1}
	fault := time.Now()
	if step(t, "kill", c.Kill(victim)) {
		m := measureFailure(ctx, c, victim, fault, probes)
		r.Detect, r.Reroute = m.wait(t)
		time.Sleep(3 * time.Second)
		if step(t, "restart", c.Restart(ctx, victim)) {
			step(t, "converge after the restart", c.WaitConverged(ctx))
		}
		time.Sleep(4 * time.Second)
	}
	finish(t, c, l, began, &r)
	checkConsistent(t, c, r)
}

// TestScenario3PauseThroughInvalidationNoStaleRead pauses a node (SIGSTOP) and
// invalidates a tag it holds an entry of: the invalidation must fail naming the node or
// succeed only once the node was declared dead. A read queued in the paused node's
// socket, answered at resume, and every read after must miss.
func TestScenario3PauseThroughInvalidationNoStaleRead(t *testing.T) {
	began := time.Now()
	ctx := testContext(t)
	c := startCluster(t, 3, Options{})
	const victim, via = 2, 0
	probes, err := c.KeysOwnedBy(ctx, via, c.Node(victim).Name, 3)
	if err != nil {
		t.Fatal(err)
	}
	tp := writeTagProbe(t, ctx, c, victim, via)
	l := startLoad(t, c, seedFor(t))
	time.Sleep(3 * time.Second)

	r := result{Scenario: "3 pause a node through INV_TAG, resume", LeaveFailed: -1}
	fault := time.Now()
	if step(t, "pause", c.Pause(victim)) {
		m := measureFailure(ctx, c, victim, fault, probes, 0, 1)
		time.Sleep(200 * time.Millisecond)
		invalidateThroughFault(t, ctx, c, tp, via, victim)
		r.Detect, r.Reroute = m.wait(t)
		time.Sleep(time.Until(fault.Add(4 * time.Second)))

		// A read sent to the paused node waits in its socket; it is answered at
		// resume, before any background goroutine of the node ran.
		type answer struct {
			value string
			found bool
			err   error
		}
		queued := make(chan answer, 1)
		go func() {
			v, found, err := c.Get(ctx, victim, tp.key)
			queued <- answer{v, found, err}
		}()
		time.Sleep(300 * time.Millisecond)
		if step(t, "resume", c.Resume(victim)) {
			a := <-queued
			t.Logf("read queued in the paused node's socket, answered at resume: %q found=%v err=%v", a.value, a.found, a.err)
			if a.found && a.value == tp.value {
				r.HarnessStale++
				t.Errorf("the resumed node answered a queued read with the value invalidated while it was paused")
			}
			if step(t, "converge after the resume", c.WaitConverged(ctx)) {
				r.HarnessStale += readsAfterInvalidation(t, ctx, c, tp)
			}
		}
		time.Sleep(3 * time.Second)
	}
	finish(t, c, l, began, &r)
	checkConsistent(t, c, r)
}

// TestScenario4PartitionMinorityNoStaleRead cuts one node of three away from the other
// two under load (network namespaces; root), invalidates a tag meanwhile, heals, and
// checks that neither side served a stale value and that the cluster merges again.
func TestScenario4PartitionMinorityNoStaleRead(t *testing.T) {
	began := time.Now()
	ctx := testContext(t)
	c := startCluster(t, 3, Options{Namespaces: true})
	const victim, via = 2, 0
	probes, err := c.KeysOwnedBy(ctx, via, c.Node(victim).Name, 3)
	if err != nil {
		t.Fatal(err)
	}
	tp := writeTagProbe(t, ctx, c, victim, via)
	l := startLoad(t, c, seedFor(t))
	time.Sleep(3 * time.Second)

	r := result{Scenario: "4 partition 1 of 3 away, heal", LeaveFailed: -1}
	fault := time.Now()
	if step(t, "partition", c.Partition([][]int{{0, 1}, {victim}})) {
		m := measureFailure(ctx, c, victim, fault, probes, 0, 1)
		time.Sleep(200 * time.Millisecond)
		invalidateThroughFault(t, ctx, c, tp, via, victim)
		r.Detect, r.Reroute = m.wait(t)
		// The cut-off side must not serve the invalidated value either.
		if v, found, err := c.Get(ctx, victim, tp.key); err == nil && found && v == tp.value {
			r.HarnessStale++
			t.Errorf("the cut-off node served %s=%q, invalidated on the other side", tp.key, v)
		}
		time.Sleep(time.Until(fault.Add(4 * time.Second)))

		healed := time.Now()
		if step(t, "heal", c.Heal()) {
			merged, err := c.WaitRouting(ctx, healed, probes)
			if step(t, "merge after the heal (every node back in every ring, routing)", err) {
				t.Logf("healed: every node routes correctly again after %s", merged)
			}
			r.HarnessStale += readsAfterInvalidation(t, ctx, c, tp)
		}
		time.Sleep(3 * time.Second)
	}
	finish(t, c, l, began, &r)
	checkConsistent(t, c, r)
}

// TestScenario5RollingRestartFailsNoRequest restarts every node in turn under load:
// graceful leave (SIGTERM), then a start under the same name. No request may fail.
func TestScenario5RollingRestartFailsNoRequest(t *testing.T) {
	began := time.Now()
	ctx := testContext(t)
	c := startCluster(t, 3, Options{})
	l := startLoad(t, c, seedFor(t))
	time.Sleep(3 * time.Second)

	r := result{Scenario: "5 rolling restart (SIGTERM, start)"}
	for i := range 3 {
		if !leaveAndMeasure(t, ctx, c, i, (i+1)%3, &r) {
			break
		}
		if !step(t, "restart", c.Restart(ctx, i)) || !step(t, "converge after the restart", c.WaitConverged(ctx)) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	finish(t, c, l, began, &r)
	checkConsistent(t, c, r)
	checkNoFailedRequest(t, c, r)
}

// TestScenario6ScaleOutAndBackFailsNoRequest grows the cluster from 3 to 5 nodes under
// load, then the two new nodes leave gracefully. No request may fail.
func TestScenario6ScaleOutAndBackFailsNoRequest(t *testing.T) {
	began := time.Now()
	ctx := testContext(t)
	c := startCluster(t, 3, Options{})
	l := startLoad(t, c, seedFor(t))
	time.Sleep(3 * time.Second)

	r := result{Scenario: "6 scale out 3 → 5 and back"}
	var added []int
	for range 2 {
		i, err := c.Add(ctx)
		if !step(t, "add a node", err) || !step(t, "converge after the join", c.WaitConverged(ctx)) {
			break
		}
		added = append(added, i)
		time.Sleep(2 * time.Second)
	}
	for _, i := range slices.Backward(added) {
		if !leaveAndMeasure(t, ctx, c, i, 0, &r) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	finish(t, c, l, began, &r)
	checkConsistent(t, c, r)
	checkNoFailedRequest(t, c, r)
}

// step reports whether a step of a scenario succeeded; a failed one fails t but lets
// the scenario go on to check what the workload saw.
func step(t *testing.T, what string, err error) bool {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	return true
}

// finish stops the workload, checks its history, fills r and prints its row. In a
// scenario of graceful leaves (r.LeaveFailed not -1) every failed request counts as
// failed around a leave.
func finish(t *testing.T, c *Cluster, l *load, began time.Time, r *result) {
	t.Helper()
	h, rep := l.stop(t)
	r.Report, r.HitRatio, r.Took = rep, hitRatio(h), time.Since(began)
	r.Failures = summarizeFailures(h)
	if n := h.NotRun(); n > 0 {
		t.Logf("%d requests were refused unrun by a closing node and resent to another node", n)
	}
	if r.LeaveFailed != -1 {
		r.LeaveFailed = rep.Errors + rep.Unknown
	}
	if len(rep.Evidence) > 0 {
		path := filepath.Join(c.LogDir(), "evidence.txt")
		if err := os.WriteFile(path, []byte(strings.Join(rep.Evidence, "\n")+"\n"), 0o644); err == nil {
			t.Logf("the checker's evidence, all of it: %s", path)
		}
	}
	publish(t, *r)
}

// summarizeFailures groups h's failed operations by error (node names and numbers
// blanked) and returns, most frequent first, each group's count and first operation.
func summarizeFailures(h *History) []string {
	type group struct {
		n     int
		first string
	}
	groups := map[string]*group{}
	var order []string
	norm := regexp.MustCompile(`[0-9]+`)
	for _, op := range h.Ops() {
		if op.Status == StatusOK {
			continue
		}
		k := op.Status.String() + ": " + norm.ReplaceAllString(op.Err, "N")
		g := groups[k]
		if g == nil {
			g = &group{first: op.describe(h.Start())}
			groups[k] = g
			order = append(order, k)
		}
		g.n++
	}
	slices.SortStableFunc(order, func(a, b string) int { return groups[b].n - groups[a].n })
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%d× %s — first: %s", groups[k].n, k, groups[k].first))
	}
	return out
}

// leaveAndMeasure makes node i leave gracefully, measuring with keys of its partitions
// (as node from routes them) how long until every node dropped it and routes them
// again; r keeps the longest times.
func leaveAndMeasure(t *testing.T, ctx context.Context, c *Cluster, i, from int, r *result) bool {
	t.Helper()
	probes, err := c.KeysOwnedBy(ctx, from, c.Node(i).Name, 3)
	if !step(t, "probe keys", err) {
		return false
	}
	fault := time.Now()
	m := measureFailure(ctx, c, i, fault, probes, slices.DeleteFunc(c.Up(), func(j int) bool { return j == i })...)
	took, err := c.Leave(ctx, i)
	if !step(t, "graceful leave", err) {
		return false
	}
	d, rr := m.wait(t)
	r.Detect, r.Reroute = max(r.Detect, d), max(r.Reroute, rr)
	t.Logf("%s left in %s; dropped by every node after %s; rerouted after %s", c.Node(i).Name, took, d, rr)
	return true
}

// measurement is a failure being measured in the background.
type measurement struct {
	done            chan struct{}
	detect, reroute time.Duration
	err             error
}

// measureFailure starts measuring, from fault, how long the observers (default: the
// nodes up but victim) take to drop victim from their rings, then to route probes
// again. It runs in the background, so that the scenario can act meanwhile.
func measureFailure(ctx context.Context, c *Cluster, victim int, fault time.Time, probes []string, observers ...int) *measurement {
	if len(observers) == 0 {
		observers = slices.DeleteFunc(c.Up(), func(i int) bool { return i == victim })
	}
	m := &measurement{done: make(chan struct{})}
	go func() {
		defer close(m.done)
		if m.detect, m.err = c.WaitDropped(ctx, victim, fault, observers...); m.err != nil {
			return
		}
		m.reroute, m.err = c.WaitRouting(ctx, fault, probes, observers...)
	}()
	return m
}

// wait returns the measured times; a failure fails t (the times are then 0).
func (m *measurement) wait(t *testing.T) (detect, reroute time.Duration) {
	t.Helper()
	<-m.done
	step(t, "after the fault", m.err)
	t.Logf("failure detected by every other node after %s, every one routes correctly again after %s", m.detect, m.reroute)
	return m.detect, m.reroute
}

// TestScenarioSummary prints the rows of every scenario that ran in this process as one
// table (it runs last: tests run in source order).
func TestScenarioSummary(t *testing.T) {
	needClusterTests(t)
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		t.Skip("no scenario ran")
	}
	var sb strings.Builder
	sb.WriteString("\nCluster scenarios (3 nodes):\n\n" + tableHeader + "\n")
	for _, r := range results {
		sb.WriteString(r.row() + "\n")
	}
	fmt.Println(sb.String())
	if dir := os.Getenv(envLogs); dir != "" {
		os.WriteFile(dir+"/results.md", []byte(sb.String()), 0o644)
	}
}

// testContext bounds a scenario's harness calls.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// tagProbe is a key on the victim's partitions, written with a tag of its own before a
// fault and invalidated during it.
type tagProbe struct {
	key, tag, value string
}

// writeTagProbe writes a tagProbe through node via and checks every node reads it.
func writeTagProbe(t *testing.T, ctx context.Context, c *Cluster, victim, via int) tagProbe {
	t.Helper()
	keys, err := c.KeysOwnedBy(ctx, via, c.Node(victim).Name, 10)
	if err != nil {
		t.Fatal(err)
	}
	nonce := randomHex(4)
	tp := tagProbe{key: keys[9], tag: "harness:tag:" + nonce, value: "before-the-fault-" + nonce}
	// Every node must read the probe before the fault, or the checks after it prove
	// nothing. A miss right after the write is allowed by promise 1 (ownership may be
	// settling), so it is logged and the probe written again.
	for attempt := 1; ; attempt++ {
		if err := c.Put(ctx, via, tp.key, tp.value, tp.tag); err != nil {
			t.Fatal(err)
		}
		var missed []string
		for _, i := range c.Up() {
			if v, found, err := c.Get(ctx, i, tp.key); err != nil || !found || v != tp.value {
				missed = append(missed, fmt.Sprintf("%s answered %q found=%v err=%v", c.Node(i).Name, v, found, err))
			}
		}
		if len(missed) == 0 {
			return tp
		}
		t.Logf("NOTE: %s written through %s (acknowledged), then read at once through every node: %s", tp.key, c.Node(via).Name, strings.Join(missed, "; "))
		if attempt == 5 {
			t.Fatalf("probe %s not readable through every node after %d writes", tp.key, attempt)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// invalidateThroughFault invalidates tp's tag through node via while victim is cut off
// (paused or partitioned). Promise 2: the invalidation fails naming victim, or succeeds
// only once via's ring no longer has victim (declared dead). It is retried until it
// succeeds.
func invalidateThroughFault(t *testing.T, ctx context.Context, c *Cluster, tp tagProbe, via, victim int) {
	t.Helper()
	name := c.Node(victim).Name
	for attempt := 1; ; attempt++ {
		start := time.Now()
		n, err := c.InvalidateTag(ctx, via, tp.tag)
		took := time.Since(start)
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("INV_TAG %s through %s while %s is cut off failed without naming it (after %s): %v", tp.tag, c.Node(via).Name, name, took, err)
			} else {
				t.Logf("INV_TAG attempt %d failed after %s naming %s, as promised: %v", attempt, took.Round(time.Millisecond), name, err)
			}
			if attempt == 30 {
				t.Fatalf("INV_TAG %s still failing after %d attempts", tp.tag, attempt)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		r, rerr := c.Ring(ctx, via)
		switch {
		case rerr != nil:
			t.Errorf("ring of %s after INV_TAG: %v", c.Node(via).Name, rerr)
		case slices.Contains(r.Members, name):
			t.Errorf("INV_TAG %s through %s succeeded (count %d, after %s) while %s, cut off, was still a member: an unacknowledged invalidation reported as success",
				tp.tag, c.Node(via).Name, n, took, name)
		default:
			t.Logf("INV_TAG attempt %d succeeded after %s (count %d), once %s was declared dead", attempt, took.Round(time.Millisecond), n, name)
		}
		return
	}
}

// readsAfterInvalidation reads tp's key through every node up and returns how many
// answered the invalidated value.
func readsAfterInvalidation(t *testing.T, ctx context.Context, c *Cluster, tp tagProbe) int {
	t.Helper()
	stale := 0
	for _, i := range c.Up() {
		v, found, err := c.Get(ctx, i, tp.key)
		if err != nil {
			t.Logf("GET %s through %s after the invalidation: %v", tp.key, c.Node(i).Name, err)
			continue
		}
		if found && v == tp.value {
			stale++
			t.Errorf("GET %s through %s: %q, invalidated by an acknowledged INV_TAG %s", tp.key, c.Node(i).Name, v, tp.tag)
		}
	}
	return stale
}

// envSoak is the duration of TestSoakRandomFaults (make cluster-test-long DURATION=…).
const envSoak = "TAGCACHE_CLUSTER_SOAK"

// soakFault is one kind of fault of the soak test.
type soakFault struct {
	name string
	// graceful faults (leave, join) must fail no request.
	graceful bool
	// netns faults need namespaced nodes.
	netns bool
	run   func(t *testing.T, ctx context.Context, c *Cluster, rng *rand.Rand, r *result)
}

var soakFaults = []soakFault{
	{name: "kill -9 and restart", run: func(t *testing.T, ctx context.Context, c *Cluster, rng *rand.Rand, r *result) {
		v := pickUp(c, rng)
		probes, _ := c.KeysOwnedBy(ctx, otherUp(c, v), c.Node(v).Name, 2)
		fault := time.Now()
		if !step(t, "kill", c.Kill(v)) {
			return
		}
		r.Detect, r.Reroute = measureFailure(ctx, c, v, fault, probes).wait(t)
		time.Sleep(randDuration(rng, time.Second, 5*time.Second))
		if step(t, "restart", c.Restart(ctx, v)) {
			step(t, "converge after the restart", c.WaitConverged(ctx))
		}
	}},
	{name: "pause and resume", run: func(t *testing.T, ctx context.Context, c *Cluster, rng *rand.Rand, r *result) {
		v := pickUp(c, rng)
		probes, _ := c.KeysOwnedBy(ctx, otherUp(c, v), c.Node(v).Name, 2)
		pause := randDuration(rng, 300*time.Millisecond, 5*time.Second) // sometimes shorter than detection
		fault := time.Now()
		if !step(t, "pause", c.Pause(v)) {
			return
		}
		var m *measurement
		if pause > 3*time.Second {
			m = measureFailure(ctx, c, v, fault, probes)
		}
		time.Sleep(time.Until(fault.Add(pause)))
		if m != nil {
			r.Detect, r.Reroute = m.wait(t)
		}
		if step(t, "resume", c.Resume(v)) {
			step(t, "converge after the resume", c.WaitConverged(ctx))
		}
		t.Logf("paused %s for %s", c.Node(v).Name, pause.Round(time.Millisecond))
	}},
	{name: "graceful leave and restart", graceful: true, run: func(t *testing.T, ctx context.Context, c *Cluster, rng *rand.Rand, r *result) {
		v := pickUp(c, rng)
		if leaveAndMeasure(t, ctx, c, v, otherUp(c, v), r) && step(t, "restart", c.Restart(ctx, v)) {
			step(t, "converge after the restart", c.WaitConverged(ctx))
		}
	}},
	{name: "join and leave", graceful: true, run: func(t *testing.T, ctx context.Context, c *Cluster, rng *rand.Rand, r *result) {
		i, err := c.Add(ctx)
		if !step(t, "add", err) || !step(t, "converge after the join", c.WaitConverged(ctx)) {
			return
		}
		time.Sleep(randDuration(rng, time.Second, 4*time.Second))
		leaveAndMeasure(t, ctx, c, i, 0, r)
	}},
	{name: "partition a minority, heal", netns: true, run: func(t *testing.T, ctx context.Context, c *Cluster, rng *rand.Rand, r *result) {
		up := c.Up()
		rng.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
		k := 1 + rng.IntN((len(up)-1)/2) // a strict minority
		minority, majority := up[:k], up[k:]
		probes, _ := c.KeysOwnedBy(ctx, majority[0], c.Node(minority[0]).Name, 2)
		fault := time.Now()
		if !step(t, "partition", c.Partition([][]int{majority, minority})) {
			return
		}
		r.Detect, r.Reroute = measureFailure(ctx, c, minority[0], fault, probes, majority...).wait(t)
		time.Sleep(randDuration(rng, time.Second, 5*time.Second))
		healed := time.Now()
		if step(t, "heal", c.Heal()) {
			merged, err := c.WaitRouting(ctx, healed, probes)
			if step(t, "merge after the heal", err) {
				t.Logf("cut %v from %v; merged %s after the heal", minority, majority, merged)
			}
		}
	}},
}

// TestSoakRandomFaults runs a cluster of 5 (namespaced as root, so that partitions are
// among the faults) through rounds of one random fault each under the workload, for
// $TAGCACHE_CLUSTER_SOAK, checking every round like the scenarios.
func TestSoakRandomFaults(t *testing.T) {
	needClusterTests(t)
	d := os.Getenv(envSoak)
	if d == "" {
		t.Skipf("soak test: set %s to a duration (make cluster-test-long DURATION=10m)", envSoak)
	}
	dur, err := time.ParseDuration(d)
	if err != nil {
		t.Fatalf("%s: %v", envSoak, err)
	}
	nodes := 5
	if s := os.Getenv("TAGCACHE_CLUSTER_NODES"); s != "" {
		if nodes, err = strconv.Atoi(s); err != nil || nodes < 3 {
			t.Fatalf("TAGCACHE_CLUSTER_NODES=%q: want a number ≥ 3", s)
		}
	}
	netns := NamespacesUsable() == nil
	if !netns {
		t.Logf("no partitions in this soak: %v", NamespacesUsable())
	}
	seed := seedFor(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := startCluster(t, nodes, Options{Namespaces: netns})
	ctx, cancel := context.WithTimeout(context.Background(), dur+10*time.Minute)
	defer cancel()

	var faults []soakFault
	for _, f := range soakFaults {
		if !f.netns || netns {
			faults = append(faults, f)
		}
	}
	deadline := time.Now().Add(dur)
	for round := 1; time.Now().Before(deadline); round++ {
		f := faults[rng.IntN(len(faults))]
		began := time.Now()
		l := startLoad(t, c, rng.Uint64())
		time.Sleep(2 * time.Second)
		r := result{Scenario: fmt.Sprintf("soak %d: %s", round, f.name), LeaveFailed: -1}
		if f.graceful {
			r.LeaveFailed = 0
		}
		f.run(t, ctx, c, rng, &r)
		time.Sleep(2 * time.Second)
		finish(t, c, l, began, &r)
		checkConsistent(t, c, r)
		if f.graceful {
			checkNoFailedRequest(t, c, r)
		}
		if err := c.WaitConverged(ctx); err != nil {
			t.Errorf("round %d: the cluster did not converge: %v; restarting the nodes outside the largest ring", round, err)
			if !repair(t, ctx, c) {
				break
			}
		}
	}
}

// repair kills and restarts every node up that is not in the largest ring, so that a
// soak can go on after a round left the cluster split.
func repair(t *testing.T, ctx context.Context, c *Cluster) bool {
	var best []string
	for _, i := range c.Up() {
		if r, err := c.Ring(ctx, i); err == nil && len(r.Members) > len(best) {
			best = r.Members
		}
	}
	for _, i := range c.Up() {
		if !slices.Contains(best, c.Node(i).Name) {
			if !step(t, "repair: kill", c.Kill(i)) || !step(t, "repair: restart", c.Restart(ctx, i)) {
				return false
			}
		}
	}
	return step(t, "repair: converge", c.WaitConverged(ctx))
}

func pickUp(c *Cluster, rng *rand.Rand) int {
	up := c.Up()
	return up[rng.IntN(len(up))]
}

// otherUp is a node up other than v.
func otherUp(c *Cluster, v int) int {
	for _, i := range c.Up() {
		if i != v {
			return i
		}
	}
	return v
}

func randDuration(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}
