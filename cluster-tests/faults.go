package clustertests

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/tagcache/tagcache/ring"
)

// Faults a Cluster can inject, and the measurements around them: how long until the
// others dropped a node from their rings (failure detected), and how long until every
// node routes correctly again.

// Kill sends SIGKILL to node i (a crash: no leave, no handoff) and waits until the
// process is gone.
func (c *Cluster) Kill(i int) error {
	p, err := c.stop(i, stateDown)
	if err != nil {
		return err
	}
	if err := p.kill(10 * time.Second); err != nil {
		return fmt.Errorf("kill %s: %w", c.Node(i).Name, err)
	}
	c.logf("killed %s (pid %d)", c.Node(i).Name, p.pid)
	return nil
}

// Leave sends SIGTERM to node i (a graceful leave: it hands its partitions over, then
// exits) and waits for the exit; it returns how long that took. A node that exits with
// an error status is reported as an error, after the duration.
func (c *Cluster) Leave(ctx context.Context, i int) (time.Duration, error) {
	p, err := c.stop(i, stateLeaving)
	if err != nil {
		return 0, err
	}
	name := c.Node(i).Name
	start := time.Now()
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
		return 0, fmt.Errorf("leave %s: %w", name, err)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return time.Since(start), fmt.Errorf("leave %s: not exited after %s: %w", name, time.Since(start).Round(time.Millisecond), ctx.Err())
	}
	took := time.Since(start)
	c.mu.Lock()
	c.nodes[i].state = stateDown
	c.mu.Unlock()
	c.logf("%s left in %s (pid %d)", name, took.Round(time.Millisecond), p.pid)
	if p.exitErr != nil {
		return took, fmt.Errorf("leave %s: exited with %v", name, p.exitErr)
	}
	return took, nil
}

// stop marks node i as stopped on purpose, in state to, and returns its process. The
// node must have a process that runs.
func (c *Cluster) stop(i int, to nodeState) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.proc == nil || n.state == stateDown || n.state == stateLeaving {
		return nil, fmt.Errorf("stop %s: it is %s", n.Name, n.state)
	}
	n.stopped = true
	n.state = to
	return n.proc, nil
}

// Restart starts node i again, after Kill or Leave, with the same name, address and
// ports, joining the running nodes; it returns once the node is ready (not once the
// cluster converged: see WaitConverged).
func (c *Cluster) Restart(ctx context.Context, i int) error {
	n := c.Node(i)
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = c.startNode(ctx, n); err == nil || !errors.Is(err, errPortInUse) {
			return err
		}
		// The previous process's ports were taken by someone else meanwhile, or the
		// kernel has not released a socket yet: wait and retry with the same ports.
		c.logf("restart %s: %v; retrying", n.Name, err)
		time.Sleep(time.Second)
	}
	return err
}

// Add starts a new node that joins the running ones and returns its index once it is
// ready.
func (c *Cluster) Add(ctx context.Context) (int, error) {
	return c.add(ctx)
}

// Pause stops node i with SIGSTOP: the process keeps its sockets (the kernel accepts
// connections and buffers requests for it) but runs nothing, as in a long GC pause or
// a frozen VM.
func (c *Cluster) Pause(i int) error {
	return c.signal(i, syscall.SIGSTOP, stateUp, statePaused, "pause", "paused")
}

// Resume continues node i after Pause with SIGCONT.
func (c *Cluster) Resume(i int) error {
	return c.signal(i, syscall.SIGCONT, statePaused, stateUp, "resume", "resumed")
}

// signal sends sig to node i, which must be in state from, and records it in state to.
func (c *Cluster) signal(i int, sig syscall.Signal, from, to nodeState, verb, done string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.state != from {
		return fmt.Errorf("%s %s: it is %s", verb, n.Name, n.state)
	}
	if err := syscall.Kill(n.proc.pid, sig); err != nil {
		return fmt.Errorf("%s %s: %w", verb, n.Name, err)
	}
	n.state = to
	c.logf("%s %s (pid %d)", done, n.Name, n.proc.pid)
	return nil
}

// Partition cuts the network between the groups of nodes: nodes of one group still
// reach each other, and clients reach every node, but no packet passes between nodes
// of different groups. A node in no group is a group of its own. It replaces any
// earlier partition. Namespaced clusters only.
func (c *Cluster) Partition(groups [][]int) error {
	if c.net == nil {
		return errors.New("partition: the cluster runs on loopback; start it with Options.Namespaces")
	}
	group := map[int]int{}
	for g, members := range groups {
		for _, i := range members {
			if _, dup := group[i]; dup {
				return fmt.Errorf("partition: node %d is in two groups", i)
			}
			group[i] = g
		}
	}
	size := c.Size()
	for i := 0; i < size; i++ {
		if _, ok := group[i]; !ok {
			group[i] = len(groups) + i
		}
	}
	if err := c.net.partition(group); err != nil {
		return err
	}
	c.logf("partitioned: %v", groups)
	return nil
}

// Heal removes every partition.
func (c *Cluster) Heal() error {
	if c.net == nil {
		return errors.New("heal: the cluster runs on loopback")
	}
	if err := c.net.heal(); err != nil {
		return err
	}
	c.logf("healed the partition")
	return nil
}

// WaitDropped waits until none of the observers (default: the nodes up, but victim)
// has victim in its ring any more, polling each every 25 ms, and returns the time from
// since until the last observer dropped it: the time to detect victim's failure (or
// leave). It gives up after Options.ReadyTimeout.
func (c *Cluster) WaitDropped(ctx context.Context, victim int, since time.Time, observers ...int) (time.Duration, error) {
	if len(observers) == 0 {
		observers = slices.DeleteFunc(c.Up(), func(i int) bool { return i == victim })
	}
	name := c.Node(victim).Name
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	var (
		mu     sync.Mutex
		latest time.Time
		errs   []error
		wg     sync.WaitGroup
	)
	for _, o := range observers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r, err := c.Ring(ctx, o)
				if err == nil && !slices.Contains(r.Members, name) {
					at := time.Now()
					mu.Lock()
					if at.After(latest) {
						latest = at
					}
					mu.Unlock()
					return
				}
				select {
				case <-ctx.Done():
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s still has %s in its ring: %w (last poll: %v)", c.Node(o).Name, name, ctx.Err(), err))
					mu.Unlock()
					return
				case <-time.After(25 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return 0, errors.Join(errs...)
	}
	return latest.Sub(since), nil
}

// KeysOwnedBy returns n keys (named harness:probe:…) that node from's ring places on
// member owner: keys of the partitions a failure of owner moves.
func (c *Cluster) KeysOwnedBy(ctx context.Context, from int, owner string, n int) ([]string, error) {
	r, err := c.Ring(ctx, from)
	if err != nil {
		return nil, err
	}
	if r.Partitions <= 0 || len(r.Owners) != r.Partitions {
		return nil, fmt.Errorf("%s's ring has %d partitions and %d owners", c.Node(from).Name, r.Partitions, len(r.Owners))
	}
	var keys []string
	for k := 0; len(keys) < n && k < 100000; k++ {
		key := fmt.Sprintf("harness:probe:%d", k)
		if r.Owners[ring.PartitionOf(key, r.Partitions)] == owner {
			keys = append(keys, key)
		}
	}
	if len(keys) < n {
		return nil, fmt.Errorf("%s owns no partition in %s's ring", owner, c.Node(from).Name)
	}
	return keys, nil
}

// WaitRouting waits until the nodes (default: every node up) are ready, every one's
// ring has exactly these nodes with the same owners, and a PUT then a GET of every key
// in probes through every one of them succeeds with the value put; it returns the time
// from since. Probes are written over HTTP, without tags, with values of their own. It
// gives up after Options.ReadyTimeout.
func (c *Cluster) WaitRouting(ctx context.Context, since time.Time, probes []string, nodes ...int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	var last error
	for round := 0; ; round++ {
		up := nodes
		if len(up) == 0 {
			up = c.Up()
		}
		if last = c.converged(ctx, up); last == nil {
			if last = c.probe(ctx, up, probes, round); last == nil {
				return time.Since(since), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("nodes do not route correctly yet: %w", last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// probe writes and reads back every key through every node in idx.
func (c *Cluster) probe(ctx context.Context, idx []int, keys []string, round int) error {
	for _, i := range idx {
		n := c.Node(i)
		for _, key := range keys {
			value := fmt.Sprintf("probe-%s-%d-%s", n.Name, round, randomHex(4))
			body := map[string]any{"key": key, "value": value}
			if _, err := c.call(ctx, n, "POST", "/put", body, nil); err != nil {
				return err
			}
			var got struct {
				Value *string `json:"value"`
				Error string  `json:"error"`
			}
			if _, err := c.call(ctx, n, "GET", "/get/"+url.PathEscape(key), nil, &got); err != nil {
				return err
			}
			if got.Value == nil || *got.Value != value {
				return fmt.Errorf("GET %s through %s right after its PUT: %+v, want %q", key, n.Name, got, value)
			}
		}
	}
	return nil
}

// Put writes key=value with tags through node i over HTTP.
func (c *Cluster) Put(ctx context.Context, i int, key, value string, tags ...string) error {
	body := map[string]any{"key": key, "value": value, "tags": tags}
	_, err := c.call(ctx, c.Node(i), "POST", "/put", body, nil)
	return err
}

// Get reads key through node i over HTTP: the value and whether it was found.
func (c *Cluster) Get(ctx context.Context, i int, key string) (string, bool, error) {
	var got struct {
		Value *string `json:"value"`
	}
	if _, err := c.call(ctx, c.Node(i), "GET", "/get/"+url.PathEscape(key), nil, &got); err != nil {
		return "", false, err
	}
	if got.Value == nil {
		return "", false, nil
	}
	return *got.Value, true, nil
}

// InvalidateTag invalidates tag through node i over HTTP and returns the count.
func (c *Cluster) InvalidateTag(ctx context.Context, i int, tag string) (int, error) {
	var got struct {
		Count int `json:"count"`
	}
	_, err := c.call(ctx, c.Node(i), "POST", "/invalidate-tag", map[string]any{"tag": tag}, &got)
	return got.Count, err
}
