// Package clustertests runs real `tagcache server` processes as a cluster on one machine,
// injects faults into them (kill -9, restart, pause, graceful leave, join, network
// partition) and checks the promises of BRIEF.md on what clients saw meanwhile.
//
// The harness (this file, faults.go, netns.go) starts and tears down the processes; the
// workload and the checker (workload.go, history.go, checker.go) drive and judge them;
// scenarios_test.go composes both. cmd/localcluster gives people the same cluster in the
// background (make cluster-up).
package clustertests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configure a cluster. The zero value is a loopback cluster of freshly built
// nodes logging into a new temporary folder.
type Options struct {
	// LogDir is the folder of the nodes' log files, one <node name>.log each (a restart
	// appends to the same file). Default: a new temporary folder.
	LogDir string
	// Binary is the tagcache binary to run. Default: $TAGCACHE_CLUSTER_BINARY if set,
	// else ./cmd/tagcache built once per process.
	Binary string
	// Namespaces runs every node in a network namespace of its own, linked to a bridge
	// in the root namespace, so that Partition can cut links between nodes while
	// clients in the root namespace reach every node. Needs root (and nft).
	Namespaces bool
	// BasePort, on loopback only, gives node i the ports BasePort+10*i+0…4 (text, HTTP,
	// RESP, gossip, peer). 0 picks free ports. In namespaces every node uses the
	// defaults (1984, 8080, 6380, 7946, 7947) on its own address.
	BasePort int
	// Username and Password are the client credentials of every node. Default: admin
	// and, on loopback, the node's own default ("password"); in namespaces a random
	// password (a non-loopback node refuses "password").
	Username, Password string
	// ClusterKey is shared by every node (passed as TAGCACHE_CLUSTER_KEY). Default: a
	// random key.
	ClusterKey string
	// LogLevel is the nodes' --log-level. Default: info.
	LogLevel string
	// Args are more `tagcache server` flags given to every node.
	Args []string
	// ReadyTimeout bounds how long a start waits for the node, then the whole cluster,
	// to be ready and agree on the ring. Default: 30s.
	ReadyTimeout time.Duration
	// Logf receives the harness's progress lines. Default: standard error.
	Logf func(format string, args ...any)
}

// Node is one `tagcache server` process of a Cluster, by index. Its name, address and
// ports stay the same across restarts.
type Node struct {
	Index int
	Name  string
	// Host is the address the node binds to and advertises (127.0.0.1 on loopback, its
	// namespace's address otherwise).
	Host string
	// The ports of the text protocol, the HTTP API, RESP, gossip and the peer transport.
	TCPPort, HTTPPort, RESPPort, GossipPort, PeerPort int
	// LogPath is the node's log file.
	LogPath string
	// Netns is the network namespace the node runs in ("" on loopback).
	Netns string

	// The fields below are protected by Cluster.mu.
	state   nodeState
	proc    *process // the current process, nil before the first start
	starts  int      // how many times the node was started
	stopped bool     // the harness stopped the current process on purpose (Kill, Leave, Close)
}

// nodeState is what the harness believes of a node.
type nodeState int

const (
	stateDown     nodeState = iota // no process (never started, killed or left)
	stateStarting                  // process started, not ready yet
	stateUp                        // ready and serving clients
	statePaused                    // SIGSTOP sent
	stateLeaving                   // SIGTERM sent, not exited yet
)

func (s nodeState) String() string {
	return [...]string{"down", "starting", "up", "paused", "leaving"}[s]
}

// process is one run of a node: the OS process and its exit.
type process struct {
	cmd     *exec.Cmd
	pid     int
	done    chan struct{} // closed once the process exited and was reaped
	exitErr error         // set before done is closed
	logFile *os.File
}

// Cluster is a set of tagcache processes started by Start. Close tears it down; every
// method is safe for concurrent use.
type Cluster struct {
	opts     Options
	binary   string
	key      string
	username string
	password string
	net      *bridgeNet // nil on loopback
	http     *http.Client

	mu     sync.Mutex // protects nodes (the slice and each Node's state fields), closed
	nodes  []*Node
	closed bool
}

// Start builds the binary (once per process) and starts n nodes: node 0 first, then
// each other node joining the live ones. It returns once every node is ready and every
// node routes by the same ring. On error everything started so far is torn down.
func Start(ctx context.Context, n int, opts Options) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("start: want at least 1 node, got %d", n)
	}
	c, err := newCluster(opts)
	if err != nil {
		return nil, err
	}
	track(c)
	for i := 0; i < n; i++ {
		if _, err := c.add(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitConverged(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.logf("cluster of %d nodes ready; logs in %s", n, c.opts.LogDir)
	return c, nil
}

func newCluster(opts Options) (*Cluster, error) {
	if opts.Logf == nil {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "harness: "+format+"\n", args...) }
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if opts.Username == "" {
		opts.Username = "admin"
	}
	if opts.Namespaces && opts.BasePort != 0 {
		return nil, errors.New("start: BasePort is for loopback clusters; namespaced nodes use the default ports")
	}
	c := &Cluster{opts: opts, username: opts.Username, password: opts.Password, key: opts.ClusterKey}
	if c.password == "" {
		c.password = "password" // the loopback default of the node itself
		if opts.Namespaces {
			c.password = "pw-" + randomHex(12)
		}
	}
	if c.key == "" {
		c.key = randomHex(24)
	}
	if c.opts.LogDir == "" {
		dir, err := os.MkdirTemp("", "tagcache-cluster-logs-")
		if err != nil {
			return nil, err
		}
		c.opts.LogDir = dir
	}
	if err := os.MkdirAll(c.opts.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("start: log folder: %w", err)
	}
	bin, err := binaryPath(opts.Binary)
	if err != nil {
		return nil, err
	}
	c.binary = bin
	c.http = &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     5 * time.Second,
	}}
	if opts.Namespaces {
		bn, err := newBridgeNet(c.logf)
		if err != nil {
			return nil, err
		}
		c.net = bn
	}
	return c, nil
}

// LogDir is the folder of the nodes' log files.
func (c *Cluster) LogDir() string { return c.opts.LogDir }

// Credentials are the client username and password of every node.
func (c *Cluster) Credentials() (username, password string) { return c.username, c.password }

// Binary is the tagcache binary the nodes run.
func (c *Cluster) Binary() string { return c.binary }

func (c *Cluster) logf(format string, args ...any) { c.opts.Logf(format, args...) }

// Node returns node i.
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Size is how many nodes the cluster ever had (the next Add gets this index).
func (c *Cluster) Size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// State reports what the harness believes of node i: down, starting, up, paused or
// leaving.
func (c *Cluster) State(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].state.String()
}

// PID is node i's current process id (0 when it has none).
func (c *Cluster) PID(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.nodes[i].proc; p != nil && c.nodes[i].state != stateDown {
		return p.pid
	}
	return 0
}

// Up lists the nodes that are up: started, ready, neither paused nor leaving.
func (c *Cluster) Up() []int {
	return c.inState(stateUp)
}

// Running lists the nodes with a live process: up, paused or leaving.
func (c *Cluster) Running() []int {
	return c.inState(stateStarting, stateUp, statePaused, stateLeaving)
}

func (c *Cluster) inState(states ...nodeState) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, n := range c.nodes {
		if slices.Contains(states, n.state) {
			out = append(out, n.Index)
		}
	}
	return out
}

// Endpoint is node n's client addresses.
func (n *Node) Endpoint() Endpoint {
	hp := func(p int) string { return net.JoinHostPort(n.Host, strconv.Itoa(p)) }
	return Endpoint{Name: n.Name, Text: hp(n.TCPPort), HTTP: hp(n.HTTPPort), RESP: hp(n.RESPPort)}
}

// Endpoints lists the client addresses of the nodes a load balancer would send clients
// to: those up or paused (a frozen process looks alive from outside until its probes
// fail), not those starting, leaving or down. The workload calls it for every
// connection, so clients follow joins, leaves and restarts.
func (c *Cluster) Endpoints() []Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Endpoint
	for _, n := range c.nodes {
		if n.state == stateUp || n.state == statePaused {
			out = append(out, n.Endpoint())
		}
	}
	return out
}

// Close tears the cluster down: it kills every process (SIGKILL, also when paused),
// waits for each to exit and removes the network namespaces and links. It is safe to
// call more than once and from any goroutine.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var procs []*process
	for _, n := range c.nodes {
		if n.proc != nil {
			n.stopped = true
			procs = append(procs, n.proc)
		}
		n.state = stateDown
	}
	c.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if err := p.kill(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if c.net != nil {
		errs = append(errs, c.net.remove())
	}
	untrack(c)
	c.http.CloseIdleConnections()
	return errors.Join(errs...)
}

// CheckClean reports every process or namespace of this cluster that outlived Close.
func (c *Cluster) CheckClean() error {
	c.mu.Lock()
	var procs []*process
	for _, n := range c.nodes {
		if n.proc != nil {
			procs = append(procs, n.proc)
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			errs = append(errs, fmt.Errorf("process %d still running", p.pid))
		}
		if processExists(p.pid) {
			errs = append(errs, fmt.Errorf("process %d still exists", p.pid))
		}
	}
	if c.net != nil {
		errs = append(errs, c.net.checkRemoved())
	}
	return errors.Join(errs...)
}

// Unexpected lists the nodes whose process exited without the harness asking (a
// crash), with how it exited.
func (c *Cluster) Unexpected() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.nodes {
		if n.proc == nil || n.stopped {
			continue
		}
		select {
		case <-n.proc.done:
			out = append(out, fmt.Sprintf("%s (pid %d) exited on its own: %v", n.Name, n.proc.pid, n.proc.exitErr))
		default:
		}
	}
	return out
}

// DumpStacks sends SIGQUIT to every running node that is not paused: the Go runtime
// writes every goroutine's stack to the node's log and exits. For diagnosing a failed
// scenario before Close.
func (c *Cluster) DumpStacks() {
	c.mu.Lock()
	var procs []*process
	for _, n := range c.nodes {
		if n.proc != nil && (n.state == stateUp || n.state == stateStarting || n.state == stateLeaving) {
			n.stopped = true
			procs = append(procs, n.proc)
		}
	}
	c.mu.Unlock()
	for _, p := range procs {
		syscall.Kill(p.pid, syscall.SIGQUIT)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
		}
	}
}

// add creates node len(nodes) and starts it, joining the nodes already running.
func (c *Cluster) add(ctx context.Context) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, errors.New("cluster is closed")
	}
	i := len(c.nodes)
	n := &Node{Index: i, Name: fmt.Sprintf("n%d", i)}
	n.LogPath = filepath.Join(c.opts.LogDir, n.Name+".log")
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()

	if c.net != nil {
		ns, host, err := c.net.addNode(i)
		if err != nil {
			return i, fmt.Errorf("start %s: %w", n.Name, err)
		}
		c.mu.Lock()
		n.Netns, n.Host = ns, host
		n.TCPPort, n.HTTPPort, n.RESPPort, n.GossipPort, n.PeerPort = 1984, 8080, 6380, 7946, 7947
		c.mu.Unlock()
		return i, c.startNode(ctx, n)
	}
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if err = c.assignLoopbackPorts(n); err != nil {
			return i, err
		}
		err = c.startNode(ctx, n)
		if err == nil || !errors.Is(err, errPortInUse) || c.opts.BasePort != 0 {
			break
		}
		c.logf("%s: a port was taken meanwhile, picking others (%v)", n.Name, err)
	}
	return i, err
}

// assignLoopbackPorts gives n its loopback address and five ports (text, HTTP, RESP,
// gossip, peer): BasePort+10*i+0…4, or free ones.
func (c *Cluster) assignLoopbackPorts(n *Node) error {
	const host = "127.0.0.1"
	var ports []int
	if b := c.opts.BasePort; b != 0 {
		base := b + 10*n.Index
		ports = []int{base, base + 1, base + 2, base + 3, base + 4}
		for _, p := range ports {
			if !portFree(host, p) {
				return fmt.Errorf("%s: port %d on %s is in use: choose another base port", n.Name, p, host)
			}
		}
	} else {
		var err error
		if ports, err = freePorts(host, 5); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n.Host = host
	n.TCPPort, n.HTTPPort, n.RESPPort, n.GossipPort, n.PeerPort = ports[0], ports[1], ports[2], ports[3], ports[4]
	return nil
}

// errPortInUse marks a start that failed because a port was taken.
var errPortInUse = errors.New("address already in use")

// args is the command line of node n, joining the gossip addresses in join.
func (c *Cluster) args(n *Node, join []string) []string {
	args := []string{"server",
		"--node-name", n.Name,
		"--bind", n.Host,
		"--tcp-port", strconv.Itoa(n.TCPPort),
		"--http-port", strconv.Itoa(n.HTTPPort),
		"--resp-port", strconv.Itoa(n.RESPPort),
		"--gossip-port", strconv.Itoa(n.GossipPort),
		"--peer-port", strconv.Itoa(n.PeerPort),
		"--cluster-preset", "local",
		"--username", c.username,
		"--password", c.password,
		"--log-level", c.opts.LogLevel,
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	return append(args, c.opts.Args...)
}

// joinTargets lists the gossip addresses of the running nodes other than skip.
func (c *Cluster) joinTargets(skip int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, n := range c.nodes {
		if n.Index != skip && (n.state == stateUp || n.state == stateStarting) {
			out = append(out, net.JoinHostPort(n.Host, strconv.Itoa(n.GossipPort)))
		}
	}
	return out
}

// startNode starts n's process and waits until the node answers /ready. The node
// joins every running node; the first one starts alone.
func (c *Cluster) startNode(ctx context.Context, n *Node) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("cluster is closed")
	}
	if n.state != stateDown {
		c.mu.Unlock()
		return fmt.Errorf("start %s: it is %s", n.Name, n.state)
	}
	c.mu.Unlock()
	join := c.joinTargets(n.Index)
	args := c.args(n, join)

	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	fmt.Fprintf(logFile, "==== harness %s: starting %s: %s %s\n", time.Now().Format(time.RFC3339Nano), n.Name, c.binary, strings.Join(args, " "))

	var cmd *exec.Cmd
	if n.Netns != "" {
		// ip netns exec execs the command in place: the pid is the server's own.
		cmd = exec.Command("ip", append([]string{"netns", "exec", n.Netns, c.binary}, args...)...)
	} else {
		cmd = exec.Command(c.binary, args...)
	}
	cmd.Env = append(cleanEnv(), "TAGCACHE_CLUSTER_KEY="+c.key)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group (a terminal's Ctrl-C reaches the harness, which tears down in
	// order), and killed with the harness if it dies without tearing down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	p := &process{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), logFile: logFile}
	go func() {
		p.exitErr = cmd.Wait()
		p.logFile.Close()
		close(p.done)
	}()
	c.mu.Lock()
	n.proc, n.state, n.stopped = p, stateStarting, false
	n.starts++
	closed := c.closed
	c.mu.Unlock()
	if closed { // Close ran meanwhile and did not see this process
		p.kill(5 * time.Second)
		return errors.New("cluster is closed")
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	for {
		ready, reason, err := c.ready(ctx, n)
		if err == nil && ready {
			break
		}
		select {
		case <-p.done:
			c.mu.Lock()
			n.state = stateDown
			c.mu.Unlock()
			tail := logTail(n.LogPath, 20)
			err := fmt.Errorf("start %s: process exited before it was ready (%v); log %s ends:\n%s", n.Name, p.exitErr, n.LogPath, tail)
			if strings.Contains(tail, "address already in use") {
				err = fmt.Errorf("%w: %w", errPortInUse, err)
			}
			return err
		case <-ctx.Done():
			if err == nil {
				err = errors.New(reason)
			}
			return fmt.Errorf("start %s: not ready after %s (%v); log %s", n.Name, c.opts.ReadyTimeout, err, n.LogPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.mu.Lock()
	if n.state == stateStarting {
		n.state = stateUp
	}
	c.mu.Unlock()
	c.logf("started %s (pid %d) on %s, http %d, joining %v: ready after %s", n.Name, p.pid, n.Host, n.HTTPPort, join, time.Since(began).Round(time.Millisecond))
	return nil
}

// kill sends SIGKILL (which also ends a stopped process) and waits for the exit.
func (p *process) kill(wait time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	syscall.Kill(p.pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("process %d did not exit %s after SIGKILL", p.pid, wait)
	}
}

// WaitConverged waits until every node that is up answers /ready and routes by a ring
// whose members are exactly the up nodes, the same ring (members and owners) on every
// node. Ring versions are each node's own counter, so they are not compared.
func (c *Cluster) WaitConverged(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	var last error
	for {
		if last = c.converged(ctx, c.Up()); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster did not converge within %s: %w", c.opts.ReadyTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// converged reports why the nodes in idx do not yet agree, or nil.
func (c *Cluster) converged(ctx context.Context, idx []int) error {
	var want []string
	for _, i := range idx {
		want = append(want, c.Node(i).Name)
	}
	slices.Sort(want)
	var first *RingInfo
	for _, i := range idx {
		n := c.Node(i)
		if ready, reason, err := c.ready(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		} else if !ready {
			return fmt.Errorf("%s not ready: %s", n.Name, reason)
		}
		r, err := c.Ring(ctx, i)
		if err != nil {
			return err
		}
		members := slices.Sorted(slices.Values(r.Members))
		if !slices.Equal(members, want) {
			return fmt.Errorf("%s's ring has members %v, want %v", n.Name, members, want)
		}
		if first == nil {
			first = &r
		} else if !slices.Equal(first.Owners, r.Owners) {
			return fmt.Errorf("%s routes by other owners than %s", n.Name, c.Node(idx[0]).Name)
		}
	}
	return nil
}

// RingInfo is a node's ring as GET /cluster/ring shows it.
type RingInfo struct {
	Version    uint64   `json:"version"`
	Partitions int      `json:"partitions"`
	Members    []string `json:"members"`
	Owners     []string `json:"owners"` // Owners[p] is partition p's owner
}

// MemberInfo is one member as GET /cluster/members shows it (the fields the harness
// reads).
type MemberInfo struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Self  bool   `json:"self"`
}

// Ring asks node i for the ring it routes by.
func (c *Cluster) Ring(ctx context.Context, i int) (RingInfo, error) {
	var r RingInfo
	err := c.adminGet(ctx, c.Node(i), "/cluster/ring", &r)
	return r, err
}

// Members asks node i for the members it knows.
func (c *Cluster) Members(ctx context.Context, i int) ([]MemberInfo, error) {
	var r struct {
		Members []MemberInfo `json:"members"`
	}
	err := c.adminGet(ctx, c.Node(i), "/cluster/members", &r)
	return r.Members, err
}

// Ready asks node i's /ready: whether it serves, and why not.
func (c *Cluster) Ready(ctx context.Context, i int) (bool, string, error) {
	return c.ready(ctx, c.Node(i))
}

func (c *Cluster) ready(ctx context.Context, n *Node) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Endpoint().HTTP+"/ready", nil)
	if err != nil {
		return false, "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	var body struct {
		Ready  bool   `json:"ready"`
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body); err != nil {
		return false, "", fmt.Errorf("%s /ready: %w", n.Name, err)
	}
	return resp.StatusCode == http.StatusOK && body.Ready, body.Reason, nil
}

// adminGet GETs path from node n with the credentials and decodes the JSON reply.
func (c *Cluster) adminGet(ctx context.Context, n *Node, path string, into any) error {
	_, err := c.call(ctx, n, http.MethodGet, path, nil, into)
	return err
}

// call sends one HTTP request to node n with the credentials and decodes a 200 reply
// into into; any other status is an error carrying the reply's text.
func (c *Cluster) call(ctx context.Context, n *Node, method, path string, body, into any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.Endpoint().HTTP+path, rd)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(c.username, c.password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s on %s: %w", method, path, n.Name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s on %s: %w", method, path, n.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s %s on %s: %s: %s", method, path, n.Name, resp.Status, strings.TrimSpace(string(data)))
	}
	if into != nil {
		if err := json.Unmarshal(data, into); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s on %s: %w", method, path, n.Name, err)
		}
	}
	return resp.StatusCode, nil
}

// LogLines returns the lines of node i's log that contain any of substrs (all lines
// when none is given).
func (c *Cluster) LogLines(i int, substrs ...string) []string {
	f, err := os.Open(c.Node(i).LogPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if len(substrs) == 0 || slices.ContainsFunc(substrs, func(s string) bool { return strings.Contains(line, s) }) {
			out = append(out, line)
		}
	}
	return out
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanEnv is the harness's environment without TAGCACHE_* variables: the server reads
// those as flags, and the harness sets every flag it wants on the command line.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TAGCACHE_") {
			out = append(out, kv)
		}
	}
	return out
}

func randomHex(nbytes int) string {
	b := make([]byte, nbytes)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// processExists reports whether a process with this pid exists (a zombie counts).
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Ports handed out by this process, so that two nodes never get the same one even
// before either has bound it.
var (
	portsMu  sync.Mutex
	portsOut = map[int]bool{}
)

// freePorts picks n distinct ports that are free on host for TCP and UDP (gossip uses
// both on one port).
func freePorts(host string, n int) ([]int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("no free ports on %s", host)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("free port on %s: %w", host, err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(p)))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		if portsOut[p] {
			continue
		}
		portsOut[p] = true
		out = append(out, p)
	}
	return out, nil
}

// portFree reports whether port is free on host for TCP and UDP.
func portFree(host string, port int) bool {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}

// The binary built for this process, once.
var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// binaryPath returns the binary to run: given, from $TAGCACHE_CLUSTER_BINARY, or built.
func binaryPath(given string) (string, error) {
	if given == "" {
		given = os.Getenv("TAGCACHE_CLUSTER_BINARY")
	}
	if given != "" {
		abs, err := filepath.Abs(given)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("tagcache binary: %w", err)
		}
		return abs, nil
	}
	buildOnce.Do(func() { buildPath, buildErr = build() })
	return buildPath, buildErr
}

// build builds ./cmd/tagcache of this module into a folder of this process under the
// temporary directory, after removing the folders of earlier processes that are gone.
func build() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("build tagcache: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("build tagcache: not inside the tagcache module (go env GOMOD is empty); set TAGCACHE_CLUSTER_BINARY")
	}
	sweepBuildDirs()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("%s%d", buildDirPrefix, os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tagcache")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tagcache")
	cmd.Dir = filepath.Dir(gomod)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build tagcache: %w\n%s", err, msg)
	}
	return bin, nil
}

const buildDirPrefix = "tagcache-cluster-bin-"

// sweepBuildDirs removes the build folders of processes that no longer exist.
func sweepBuildDirs() {
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), buildDirPrefix)
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(rest); err == nil && pid != os.Getpid() && !processExists(pid) {
			os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
		}
	}
}

// Clusters alive in this process, torn down by CloseAll (on a signal, say).
var (
	liveMu sync.Mutex
	live   = map[*Cluster]bool{}
)

func track(c *Cluster) {
	liveMu.Lock()
	defer liveMu.Unlock()
	live[c] = true
}

func untrack(c *Cluster) {
	liveMu.Lock()
	defer liveMu.Unlock()
	delete(live, c)
}

// CloseAll tears down every cluster of this process that is not closed yet.
func CloseAll() {
	liveMu.Lock()
	var cs []*Cluster
	for c := range live {
		cs = append(cs, c)
	}
	liveMu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}
