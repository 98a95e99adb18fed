package clustertests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The environment variables of the cluster tests. `make cluster-test` sets the first;
// `make cluster-test-long` both.
const (
	// envClusterTests turns on every test that starts processes ("1").
	envClusterTests = "TAGCACHE_CLUSTER_TESTS"
	// envLogs is a folder for the nodes' logs, one subfolder per test, replaced at every
	// run. Default: a temporary folder per test, removed when the test passes.
	envLogs = "TAGCACHE_CLUSTER_LOGS"
	// envStacks ("1") makes a failed test dump every live node's goroutines into its log
	// before tearing down.
	envStacks = "TAGCACHE_CLUSTER_STACKS"
)

// needClusterTests skips t unless the heavy tests were asked for.
func needClusterTests(t *testing.T) {
	t.Helper()
	if os.Getenv(envClusterTests) != "1" {
		t.Skipf("starts tagcache processes: set %s=1 to run it (make cluster-test does)", envClusterTests)
	}
}

// needNamespaces skips t when this process cannot create network namespaces because it
// is not root, and fails it when it is root but a tool is missing.
func needNamespaces(t *testing.T) {
	t.Helper()
	switch err := NamespacesUsable(); {
	case errors.Is(err, ErrNeedRoot):
		t.Skipf("skipped: %v", err)
	case err != nil:
		t.Fatal(err)
	}
}

// startCluster starts a cluster of n nodes for t and tears it down when t ends: it
// fails t if a node crashed, if teardown failed, or if a process or namespace outlived
// it.
func startCluster(t *testing.T, n int, opts Options) *Cluster {
	t.Helper()
	needClusterTests(t)
	if opts.Namespaces {
		needNamespaces(t)
	}
	tearDownOnSignal()
	tearDownBeforeDeadline(t)
	keepLogs := true
	if opts.LogDir == "" {
		opts.LogDir, keepLogs = testLogDir(t)
	}
	if opts.Logf == nil {
		opts.Logf = func(format string, args ...any) {
			t.Logf("%s harness: "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, n, opts)
	if err != nil {
		t.Fatalf("start a cluster of %d: %v", n, err)
	}
	t.Cleanup(func() {
		for _, crash := range c.Unexpected() {
			t.Errorf("node crashed: %s", crash)
		}
		if t.Failed() && os.Getenv(envStacks) == "1" {
			c.DumpStacks()
		}
		if err := c.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if err := c.CheckClean(); err != nil {
			t.Errorf("left behind after teardown: %v", err)
		}
		if t.Failed() || keepLogs {
			t.Logf("node logs: %s", c.LogDir())
		} else {
			os.RemoveAll(c.LogDir())
		}
	})
	return c
}

// testLogDir is the log folder of t: under $TAGCACHE_CLUSTER_LOGS (kept), or a new
// temporary folder (removed when t passes).
func testLogDir(t *testing.T) (dir string, keep bool) {
	if root := os.Getenv(envLogs); root != "" {
		dir = filepath.Join(root, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir, true
	}
	dir, err := os.MkdirTemp("", "tagcache-cluster-logs-")
	if err != nil {
		t.Fatal(err)
	}
	return dir, false
}

var signalOnce sync.Once

// tearDownOnSignal makes an interrupt (Ctrl-C) or SIGTERM tear down every cluster of
// the test process before it exits.
func tearDownOnSignal() {
	signalOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			s := <-ch
			os.Stderr.WriteString("cluster tests: " + s.String() + ": tearing every cluster down\n")
			CloseAll()
			os.Exit(130)
		}()
	})
}

var deadlineOnce sync.Once

// tearDownBeforeDeadline tears every cluster down shortly before the test binary's
// -timeout, which panics without running any cleanup (the nodes would die with it,
// Pdeathsig, but not the namespaces).
func tearDownBeforeDeadline(t *testing.T) {
	deadline, ok := t.Deadline()
	if !ok {
		return
	}
	deadlineOnce.Do(func() {
		time.AfterFunc(time.Until(deadline)-5*time.Second, func() {
			os.Stderr.WriteString("cluster tests: the -timeout is near: tearing every cluster down\n")
			CloseAll()
		})
	})
}

// Unit tests of the harness: no processes, always run.

func TestHarnessPartitionRulesDropOnlyTheOtherGroups(t *testing.T) {
	got := partitionRules([]string{"10.213.0.11", "10.213.0.12"})
	for _, want := range []string{
		"add table inet tagcache_partition\ndelete table inet tagcache_partition\n",
		"type filter hook input priority 0; policy accept;",
		"ip saddr { 10.213.0.11, 10.213.0.12 } drop",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rules lack %q:\n%s", want, got)
		}
	}
	if heal := partitionRules(nil); strings.Contains(heal, "drop") || !strings.Contains(heal, "delete table") {
		t.Errorf("healing rules:\n%s", heal)
	}
}

func TestHarnessLeftoverNamesCarryTheOwner(t *testing.T) {
	for name, pid := range map[string]string{"tgc-1234-a0f3-n0": "1234", "tgc-7-beef-n12": "7"} {
		if m := leftoverNetns.FindStringSubmatch(name); m == nil || m[1] != pid {
			t.Errorf("%s: %v, want owner %s", name, m, pid)
		}
	}
	for _, name := range []string{"tgc-x-a0f3-n0", "other-1234-a0f3-n0", "tgc-1234-a0f3"} {
		if leftoverNetns.MatchString(name) {
			t.Errorf("%s taken for a harness namespace", name)
		}
	}
}

func TestHarnessFreePortsAreDistinct(t *testing.T) {
	ports, err := freePorts("127.0.0.1", 20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] || p <= 0 {
			t.Fatalf("ports %v: %d twice or invalid", ports, p)
		}
		seen[p] = true
	}
}

func TestHarnessNodesGetNoTagcacheEnvironment(t *testing.T) {
	t.Setenv("TAGCACHE_CLUSTER_KEY", "from-the-user")
	t.Setenv("TAGCACHE_TCP_PORT", "1")
	for _, kv := range cleanEnv() {
		if strings.HasPrefix(kv, "TAGCACHE_") {
			t.Errorf("node environment has %s", kv)
		}
	}
}

// Process tests of the harness: they start nodes (TAGCACHE_CLUSTER_TESTS=1).

// TestHarnessFaultsAndTeardownLeaveNothingBehind drives every loopback fault once and
// checks that teardown leaves no process.
func TestHarnessFaultsAndTeardownLeaveNothingBehind(t *testing.T) {
	needClusterTests(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, keep := testLogDir(t)
	c, err := Start(ctx, 3, Options{LogDir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("%d endpoints, want 3", got)
	}

	start := time.Now()
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	detect, err := c.WaitDropped(ctx, 1, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 of n1 detected by every node in %s", detect.Round(time.Millisecond))
	if len(c.Endpoints()) != 2 {
		t.Errorf("endpoints after kill: %v", c.Endpoints())
	}
	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}

	if err := c.Pause(2); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(c.Up(), 2) || len(c.Endpoints()) != 3 {
		t.Errorf("paused n2: up %v, endpoints %v (a paused node stays an endpoint)", c.Up(), c.Endpoints())
	}
	if err := c.Resume(2); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}

	i, err := c.Add(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	took, err := c.Leave(ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("n%d left in %s", i, took.Round(time.Millisecond))
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Partition([][]int{{0}}); err == nil {
		t.Error("Partition on loopback: no error")
	}

	var pids []int
	for i := range c.Size() {
		if pid := c.PID(i); pid != 0 {
			pids = append(pids, pid)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckClean(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if processExists(pid) {
			t.Errorf("process %d outlived teardown", pid)
		}
	}
	if len(c.Unexpected()) > 0 {
		t.Errorf("crashes: %v", c.Unexpected())
	}
	if !t.Failed() && !keep {
		os.RemoveAll(dir)
	}
}

// TestHarnessPartitionCutsNodesNotClients partitions a namespaced cluster of 3: the
// majority drops the cut-off node, clients still reach it, and after the heal every
// namespace and link is gone with the teardown.
func TestHarnessPartitionCutsNodesNotClients(t *testing.T) {
	needClusterTests(t)
	needNamespaces(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, keep := testLogDir(t)
	c, err := Start(ctx, 3, Options{LogDir: dir, Logf: t.Logf, Namespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rid := c.net.rid

	start := time.Now()
	if err := c.Partition([][]int{{0, 1}, {2}}); err != nil {
		t.Fatal(err)
	}
	detect, err := c.WaitDropped(ctx, 2, start, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("partition detected by the majority in %s", detect.Round(time.Millisecond))
	// The client path to the cut-off node still works: it answers, fenced.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ready, reason, err := c.Ready(ctx, 2)
		if err != nil {
			t.Fatalf("client to the cut-off node: %v", err)
		}
		if !ready {
			t.Logf("cut-off node answers clients: not ready (%s)", reason)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the cut-off node still says it is ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	healed := time.Now()
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged %s after the heal", time.Since(healed).Round(time.Millisecond))

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.CheckClean(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range listNetns() {
		if strings.Contains(ns, "-"+rid+"-") {
			t.Errorf("namespace %s outlived teardown", ns)
		}
	}
	for _, l := range listLinks() {
		if strings.HasPrefix(l, linkPrefix+rid) {
			t.Errorf("link %s outlived teardown", l)
		}
	}
	if !t.Failed() && !keep {
		os.RemoveAll(dir)
	}
}

// TestHarnessRemovesLeftoversOfDeadRuns plants a namespace and a link as a run killed
// before its teardown would leave them, and checks that the sweep removes them and
// nothing else.
func TestHarnessRemovesLeftoversOfDeadRuns(t *testing.T) {
	needClusterTests(t)
	needNamespaces(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := dead.Process.Pid
	if processExists(pid) {
		t.Skipf("pid %d was reused already", pid)
	}
	ns := netnsPrefix + strconv.Itoa(pid) + "-dead-n0"
	link := linkPrefix + "deadbr"
	if err := run("ip", "netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	defer run("ip", "netns", "del", ns)
	if err := run("ip", "link", "add", link, "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if linkExists(link) {
			run("ip", "link", "del", link)
		}
	}()
	if err := run("ip", "link", "set", link, "alias", aliasPrefix+strconv.Itoa(pid)); err != nil {
		t.Fatal(err)
	}
	mine := netnsPrefix + strconv.Itoa(os.Getpid()) + "-beef-n0"
	if err := run("ip", "netns", "add", mine); err != nil {
		t.Fatal(err)
	}
	defer run("ip", "netns", "del", mine)

	sweepLeftovers(t.Logf)
	if slices.Contains(listNetns(), ns) {
		t.Errorf("namespace %s of dead process %d not removed", ns, pid)
	}
	if linkExists(link) {
		t.Errorf("link %s of dead process %d not removed", link, pid)
	}
	if !slices.Contains(listNetns(), mine) {
		t.Errorf("namespace %s of this live process removed", mine)
	}
}
