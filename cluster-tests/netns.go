package clustertests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Network namespaces for partitions. Each node runs in a namespace of its own with one
// veth link to a bridge in the root namespace; the bridge has 10.213.X.1/24 and node i
// 10.213.X.(10+i), X the first /24 no interface of the machine uses. Clients (the
// workload, in the root namespace) reach every node through the bridge. A partition is
// an nftables table inside each namespace that drops the packets arriving from the nodes
// of the other groups: node-to-node traffic is cut, client traffic from the bridge's
// address is not.
//
// Names carry a run id and the owning process: namespaces are tgc-<pid>-<rid>-n<i>,
// links tgc<rid>br (bridge) and tgc<rid>v<i> (a node's veth end in the root namespace),
// and every link's alias says "tagcache-harness owner=<pid>". Whatever a process that no
// longer exists left behind is removed before a new run creates anything.

const (
	netnsPrefix  = "tgc-"
	linkPrefix   = "tgc"
	aliasPrefix  = "tagcache-harness owner="
	subnetPrefix = "10.213."
	nftTable     = "tagcache_partition"
	lockPath     = "/run/tagcache-cluster-tests.lock"
)

// ErrNeedRoot is why a namespaced cluster cannot start in this process.
var ErrNeedRoot = errors.New("network namespaces need root (ip netns, veth, a bridge, nftables); run as root, as CI does")

// NamespacesUsable reports whether this process can run a namespaced cluster: nil, or
// ErrNeedRoot (skip the scenario), or another error naming what is missing (a broken
// setup: fail).
func NamespacesUsable() error {
	if os.Geteuid() != 0 {
		return ErrNeedRoot
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := map[string]string{"ip": "iproute2", "nft": "nftables"}[tool]
			return fmt.Errorf("%s not found: apt-get install -y %s (.ci/run does)", tool, pkg)
		}
	}
	return nil
}

// bridgeNet is the bridge and the namespaces of one cluster.
type bridgeNet struct {
	logf   func(string, ...any)
	rid    string // run id, 4 hex digits
	subnet string // "10.213.X."
	bridge string

	mu    sync.Mutex   // protects nodes
	nodes map[int]nsIf // by node index
}

// nsIf is one node's namespace and link.
type nsIf struct {
	ns   string // namespace name
	veth string // the link's end in the root namespace
	addr string // the node's address
}

var sweepOnce sync.Once

// newBridgeNet creates the bridge of a new namespaced cluster.
func newBridgeNet(logf func(string, ...any)) (*bridgeNet, error) {
	if err := NamespacesUsable(); err != nil {
		return nil, err
	}
	sweepOnce.Do(func() { sweepLeftovers(logf) })
	unlock, err := lockFile(lockPath)
	if err != nil {
		return nil, err
	}
	defer unlock()
	b := &bridgeNet{logf: logf, nodes: map[int]nsIf{}}
	for {
		b.rid = randomHex(2)
		b.bridge = linkPrefix + b.rid + "br"
		if _, err := os.Stat(filepath.Join("/sys/class/net", b.bridge)); err != nil {
			break
		}
	}
	if b.subnet, err = freeSubnet(); err != nil {
		return nil, err
	}
	alias := aliasPrefix + strconv.Itoa(os.Getpid())
	if err := run("ip", "link", "add", b.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := errors.Join(
		run("ip", "link", "set", b.bridge, "alias", alias),
		run("ip", "addr", "add", b.subnet+"1/24", "dev", b.bridge),
		run("ip", "link", "set", b.bridge, "up"),
	); err != nil {
		run("ip", "link", "del", b.bridge)
		return nil, err
	}
	if v, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil && strings.TrimSpace(string(v)) == "1" {
		logf("warning: bridge-nf-call-iptables is 1: the machine's iptables FORWARD rules also filter traffic between the nodes on %s", b.bridge)
	}
	logf("namespaces: bridge %s on %s0/24", b.bridge, b.subnet)
	return b, nil
}

// addNode creates node i's namespace and link; it returns the namespace and address.
func (b *bridgeNet) addNode(i int) (ns, addr string, err error) {
	if i > 200 {
		return "", "", fmt.Errorf("namespaces: at most 201 nodes, node %d asked", i)
	}
	ns = fmt.Sprintf("%s%d-%s-n%d", netnsPrefix, os.Getpid(), b.rid, i)
	veth := fmt.Sprintf("%s%sv%d", linkPrefix, b.rid, i)
	peer := fmt.Sprintf("%s%sp%d", linkPrefix, b.rid, i)
	addr = fmt.Sprintf("%s%d", b.subnet, 10+i)
	if err := run("ip", "netns", "add", ns); err != nil {
		return "", "", err
	}
	b.mu.Lock()
	b.nodes[i] = nsIf{ns: ns, veth: veth, addr: addr}
	b.mu.Unlock()
	in := func(args ...string) error { return run("ip", append([]string{"netns", "exec", ns}, args...)...) }
	err = errors.Join(
		run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer),
		run("ip", "link", "set", veth, "alias", aliasPrefix+strconv.Itoa(os.Getpid())),
		run("ip", "link", "set", peer, "netns", ns),
		run("ip", "link", "set", veth, "master", b.bridge),
		run("ip", "link", "set", veth, "up"),
	)
	if err == nil {
		err = errors.Join(
			in("ip", "link", "set", "lo", "up"),
			in("ip", "link", "set", peer, "name", "eth0"),
			in("ip", "addr", "add", addr+"/24", "dev", "eth0"),
			in("ip", "link", "set", "eth0", "up"),
		)
	}
	if err != nil {
		return "", "", fmt.Errorf("namespace of node %d: %w", i, err)
	}
	return ns, addr, nil
}

// partition cuts, inside every namespace, the traffic between nodes of different
// groups (group[i] is node i's group); it replaces any earlier partition.
func (b *bridgeNet) partition(group map[int]int) error {
	b.mu.Lock()
	nodes := maps2slice(b.nodes)
	b.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		var cut []string
		for _, o := range nodes {
			gSelf, nok := group[n.index]
			gOther, ook := group[o.index]
			if o.index != n.index && nok && ook && gSelf != gOther {
				cut = append(cut, o.addr)
			}
		}
		errs = append(errs, nftApply(n.ns, partitionRules(cut)))
	}
	return errors.Join(errs...)
}

// heal removes every partition rule.
func (b *bridgeNet) heal() error {
	return b.partition(nil)
}

// partitionRules is the nft script that replaces the harness's table with one
// dropping every packet that arrives from the addresses in cut (none: no table). Every
// namespace of a partition has such rules, so both directions are cut where a real
// network would cut them: on the way, not in the sender (a drop on output would fail
// the sender's send at once with EPERM, which no real partition does).
func partitionRules(cut []string) string {
	var sb strings.Builder
	// "add" then "delete" makes the script work whether or not the table exists; nft
	// applies the whole script as one transaction.
	fmt.Fprintf(&sb, "add table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	if len(cut) == 0 {
		return sb.String()
	}
	set := strings.Join(cut, ", ")
	fmt.Fprintf(&sb, "table inet %s {\n", nftTable)
	fmt.Fprintf(&sb, "\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tip saddr { %s } drop\n\t}\n", set)
	sb.WriteString("}\n")
	return sb.String()
}

func nftApply(ns, script string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// remove kills whatever still runs in the namespaces, deletes them (which deletes their
// veth pairs) and the bridge.
func (b *bridgeNet) remove() error {
	b.mu.Lock()
	nodes := maps2slice(b.nodes)
	b.nodes = map[int]nsIf{}
	b.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		errs = append(errs, removeNetns(n.ns))
		// Deleting the namespace deletes the veth pair, asynchronously.
		errs = append(errs, delLink(n.veth))
	}
	errs = append(errs, delLink(b.bridge))
	return errors.Join(errs...)
}

// checkRemoved reports any namespace or link of this run that still exists a few
// seconds after remove (the kernel deletes a namespace's links asynchronously).
func (b *bridgeNet) checkRemoved() error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		var errs []error
		for _, ns := range listNetns() {
			if strings.Contains(ns, "-"+b.rid+"-") && strings.HasPrefix(ns, fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())) {
				errs = append(errs, fmt.Errorf("namespace %s still exists", ns))
			}
		}
		for _, l := range listLinks() {
			if strings.HasPrefix(l, linkPrefix+b.rid) {
				errs = append(errs, fmt.Errorf("link %s still exists", l))
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// delLink deletes a link of the root namespace if it (still) exists.
func delLink(name string) error {
	if !linkExists(name) {
		return nil
	}
	err := run("ip", "link", "del", name)
	if err != nil && !linkExists(name) {
		return nil // deleted meanwhile, with its namespace
	}
	return err
}

type indexedIf struct {
	index int
	nsIf
}

func maps2slice(m map[int]nsIf) []indexedIf {
	out := make([]indexedIf, 0, len(m))
	for i, n := range m {
		out = append(out, indexedIf{i, n})
	}
	slices.SortFunc(out, func(a, b indexedIf) int { return a.index - b.index })
	return out
}

// removeNetns kills every process in namespace ns and deletes it.
func removeNetns(ns string) error {
	if !slices.Contains(listNetns(), ns) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return run("ip", "netns", "del", ns)
}

var leftoverNetns = regexp.MustCompile(`^` + netnsPrefix + `(\d+)-[0-9a-f]+-n\d+$`)

// sweepLeftovers removes the namespaces and links of harness processes that no longer
// exist (a run killed before it could tear down).
func sweepLeftovers(logf func(string, ...any)) {
	for _, ns := range listNetns() {
		m := leftoverNetns.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pid != os.Getpid() && !processExists(pid) {
			logf("removing namespace %s left by process %d", ns, pid)
			if err := removeNetns(ns); err != nil {
				logf("%v", err)
			}
		}
	}
	for _, l := range listLinks() {
		if !strings.HasPrefix(l, linkPrefix) {
			continue
		}
		alias, _ := os.ReadFile(filepath.Join("/sys/class/net", l, "ifalias"))
		owner, ok := strings.CutPrefix(strings.TrimSpace(string(alias)), aliasPrefix)
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(owner); err == nil && pid != os.Getpid() && !processExists(pid) {
			logf("removing link %s left by process %d", l, pid)
			if err := delLink(l); err != nil {
				logf("%v", err)
			}
		}
	}
}

// listNetns lists the names of the network namespaces `ip netns` knows.
func listNetns() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// listLinks lists the network interfaces of the root namespace.
func listLinks() []string {
	entries, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// freeSubnet returns "10.213.X." for the first X no address of the root namespace is
// in.
func freeSubnet() (string, error) {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		return "", fmt.Errorf("ip addr: %w", err)
	}
	for x := 0; x < 256; x++ {
		s := fmt.Sprintf("%s%d.", subnetPrefix, x)
		if !strings.Contains(string(out), " "+s) {
			return s, nil
		}
	}
	return "", fmt.Errorf("no free /24 in %s0.0/16", subnetPrefix)
}

// lockFile takes an exclusive lock on path, so that two runs do not pick the same
// subnet; the returned func releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// run runs a command and returns its output as the error when it fails.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
