package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/node"
)

// serverFlags are the flags of `tagcache server`. Every flag can also be set by the
// environment variable TAGCACHE_<NAME> (upper case, dashes as underscores) and by a line
// `name = value` in the --config file. Precedence: command line, environment, file,
// default.
type serverFlags struct {
	fs *flag.FlagSet

	config          string
	bind            string
	tcpPort         int
	httpPort        int
	respPort        int
	username        string
	password        string
	tcpAuth         string
	tokenTTL        time.Duration
	maxMemory       byteSize
	partitions      int
	maxKeyBytes     int
	maxValueBytes   byteSize
	maxTags         int
	maxTagBytes     int
	maxConnections  int
	idleTimeout     time.Duration
	sweepInterval   time.Duration
	logLevel        string
	logJSON         bool
	shutdownTimeout time.Duration
	shutdownDelay   time.Duration
	eventLoops      bool
	gomaxprocs      int

	// cluster membership: see addClusterFlags
	nodeName            string
	gossipPort          int
	peerPort            int
	advertise           string
	join                string
	clusterKey          string
	clusterName         string
	clusterPreset       string
	invalidationTimeout time.Duration
	forwardTimeout      time.Duration
	deadForget          time.Duration
}

func newServerFlags(stderr io.Writer) *serverFlags {
	f := &serverFlags{fs: flag.NewFlagSet("server", flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(stderr)
	d := node.DefaultConfig()
	fs.StringVar(&f.config, "config", "", "optional config file: one \"name = value\" per line, names as the flags without dashes")
	fs.StringVar(&f.bind, "bind", d.Bind, "address the client listeners bind to (non-loopback turns on password checks)")
	fs.IntVar(&f.tcpPort, "tcp-port", d.TCPPort, "TagCache text protocol port (0 disables)")
	fs.IntVar(&f.httpPort, "http-port", d.HTTPPort, "HTTP JSON API port (0 disables)")
	fs.IntVar(&f.respPort, "resp-port", d.RESPPort, "Redis protocol (RESP2) port for Redis clients, redis-cli and redis-benchmark (0 disables)")
	fs.StringVar(&f.username, "username", "", "client username (default \"admin\")")
	fs.StringVar(&f.password, "password", "", "client password (default: \"password\" on a loopback bind, else generated and logged once)")
	fs.StringVar(&f.tcpAuth, "tcp-auth", d.TCPAuth, "require AUTH on the text protocol: on, off, or auto (on when --bind is not loopback)")
	fs.DurationVar(&f.tokenTTL, "token-ttl", d.TokenTTL, "lifetime of HTTP bearer tokens from /auth/login")
	fs.Var(&f.maxMemory, "max-memory", "memory limit for stored data, e.g. 512MiB or 2GB; eviction keeps the node under it (0: unlimited)")
	fs.IntVar(&f.partitions, "partitions", cache.DefaultPartitions, "ring partitions (each its own store shard)")
	fs.IntVar(&f.maxKeyBytes, "max-key-bytes", cache.DefaultMaxKeyBytes, "longest key accepted, in bytes")
	f.maxValueBytes = cache.DefaultMaxValueBytes
	fs.Var(&f.maxValueBytes, "max-value-bytes", "largest value accepted, e.g. 1MiB")
	fs.IntVar(&f.maxTags, "max-tags", cache.DefaultMaxTags, "most tags one entry may carry")
	fs.IntVar(&f.maxTagBytes, "max-tag-bytes", cache.DefaultMaxTagBytes, "longest tag accepted, in bytes")
	fs.IntVar(&f.maxConnections, "max-connections", d.MaxConnections, "most concurrent text-protocol connections")
	fs.DurationVar(&f.idleTimeout, "idle-timeout", d.IdleTimeout, "close client connections idle this long")
	fs.DurationVar(&f.sweepInterval, "sweep-interval", cache.DefaultSweepInterval, "how often expired entries are reclaimed in the background")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&f.logJSON, "log-json", false, "write logs as JSON lines")
	fs.IntVar(&f.gomaxprocs, "gomaxprocs", 0, "most CPUs running Go code at once (0: auto, 1 on a machine with 2 or fewer CPUs, else Go's default; $GOMAXPROCS wins over auto); see docs/performance.md")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long the graceful leave (handing partitions to their new owners) and in-flight requests may take before connections are closed")
	fs.BoolVar(&f.eventLoops, "event-loops", true, "serve text-protocol and RESP connections from event loops, one per GOMAXPROCS (Linux; a cluster node with peers gives new connections one goroutine each, since a request may wait for a peer); false: one goroutine per connection everywhere; see docs/performance.md")
	fs.DurationVar(&f.shutdownDelay, "shutdown-delay", 250*time.Millisecond, "on SIGTERM/SIGINT, how long every listener keeps serving (counting the graceful leave) while HTTP responses close their connections, so that HTTP clients leave their keep-alive connections before idle ones are closed; raise it where a load balancer needs time to stop sending new connections")
	f.addClusterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: tagcache server [flags]")
		fmt.Fprintln(fs.Output(), "\nRuns a TagCache node. Every flag can also be set as TAGCACHE_<FLAG> in the")
		fmt.Fprintln(fs.Output(), "environment (e.g. TAGCACHE_MAX_MEMORY=1GiB) or as `name = value` in --config.")
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return f
}

// parse reads the command line, then fills every flag not given there from the
// environment and then from the config file.
func (f *serverFlags) parse(args []string, getenv func(string) string) error {
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	if f.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(f.fs.Args(), " "))
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	f.fs.VisitAll(func(fl *flag.Flag) {
		env := "TAGCACHE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v := getenv(env); v != "" && !set[fl.Name] && err == nil {
			if e := f.fs.Set(fl.Name, v); e != nil {
				err = fmt.Errorf("environment %s: %w", env, e)
			}
			set[fl.Name] = true
		}
	})
	if err != nil || f.config == "" {
		return err
	}
	values, err := readConfigFile(f.config)
	if err != nil {
		return err
	}
	for _, kv := range values {
		if f.fs.Lookup(kv.name) == nil {
			return fmt.Errorf("%s:%d: unknown setting %q", f.config, kv.line, kv.name)
		}
		if kv.name == "config" {
			return fmt.Errorf("%s:%d: a config file cannot name another config file", f.config, kv.line)
		}
		if set[kv.name] {
			continue
		}
		if e := f.fs.Set(kv.name, kv.value); e != nil {
			return fmt.Errorf("%s:%d: %s: %w", f.config, kv.line, kv.name, e)
		}
	}
	return nil
}

type setting struct {
	name, value string
	line        int
}

// readConfigFile reads `name = value` lines; blank lines and lines starting with # are
// ignored, and a value may be quoted with double quotes.
func readConfigFile(path string) ([]setting, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer file.Close()
	var out []setting
	sc := bufio.NewScanner(file)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected name = value", path, n)
		}
		value = strings.TrimSpace(value)
		if uq, err := strconv.Unquote(value); err == nil && strings.HasPrefix(value, `"`) {
			value = uq
		}
		out = append(out, setting{strings.TrimSpace(name), value, n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return out, nil
}

// nodeConfig turns the flags into a node configuration.
func (f *serverFlags) nodeConfig(logger hclog.Logger) node.Config {
	port := func(p int) int {
		if p == 0 {
			return -1 // the flag's 0 disables; node.Config uses -1 for that
		}
		return p
	}
	c := node.DefaultConfig()
	c.Bind = f.bind
	c.TCPPort = port(f.tcpPort)
	c.HTTPPort = port(f.httpPort)
	c.RESPPort = port(f.respPort)
	c.Username = f.username
	c.Password = f.password
	c.TCPAuth = f.tcpAuth
	c.TokenTTL = f.tokenTTL
	c.MaxConnections = f.maxConnections
	c.IdleTimeout = f.idleTimeout
	c.ShutdownDelay = f.shutdownDelay
	c.Goroutines = !f.eventLoops
	c.Cache.Partitions = f.partitions
	c.Cache.MaxMemory = int64(f.maxMemory)
	c.Cache.MaxKeyBytes = f.maxKeyBytes
	c.Cache.MaxValueBytes = int(f.maxValueBytes)
	c.Cache.MaxTags = f.maxTags
	c.Cache.MaxTagBytes = f.maxTagBytes
	c.Cache.SweepInterval = f.sweepInterval
	c.Cluster = f.clusterConfig()
	c.Logger = logger
	return c
}

func (f *serverFlags) validate() error {
	switch {
	case f.tcpPort < 0 || f.tcpPort > 65535:
		return fmt.Errorf("--tcp-port must be 0..65535, got %d", f.tcpPort)
	case f.httpPort < 0 || f.httpPort > 65535:
		return fmt.Errorf("--http-port must be 0..65535, got %d", f.httpPort)
	case f.respPort < 0 || f.respPort > 65535:
		return fmt.Errorf("--resp-port must be 0..65535, got %d", f.respPort)
	case f.tcpPort == 0 && f.httpPort == 0 && f.respPort == 0:
		return errors.New("--tcp-port, --http-port and --resp-port are all 0: the node would serve nothing")
	case hclog.LevelFromString(f.logLevel) == hclog.NoLevel:
		return fmt.Errorf("--log-level must be trace, debug, info, warn or error, got %q", f.logLevel)
	case f.maxConnections < 1:
		return fmt.Errorf("--max-connections must be at least 1, got %d", f.maxConnections)
	case f.tokenTTL <= 0:
		return fmt.Errorf("--token-ttl must be positive, got %s", f.tokenTTL)
	case f.idleTimeout < 0:
		return fmt.Errorf("--idle-timeout must not be negative, got %s", f.idleTimeout)
	case f.gomaxprocs < 0:
		return fmt.Errorf("--gomaxprocs must not be negative, got %d", f.gomaxprocs)
	}
	return f.validateCluster()
}

// addClusterFlags registers the flags that make the node a cluster member. With no
// --join it is a one-node cluster that others can join.
func (f *serverFlags) addClusterFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.nodeName, "node-name", "", "the node's unique name in the cluster (default: <hostname>-<6 random hex digits>, new at every start)")
	fs.IntVar(&f.gossipPort, "gossip-port", node.DefaultGossipPort, "memberlist gossip port, TCP and UDP, on --bind (0: any free port)")
	fs.IntVar(&f.peerPort, "peer-port", node.DefaultPeerPort, "peer transport port (forwarding, invalidation fan-out, handoff) on --bind (0: any free port)")
	fs.StringVar(&f.advertise, "advertise", "", "address, without a port, that peers are told to use for this node (default: --bind; on a wildcard bind, a private address)")
	fs.StringVar(&f.join, "join", "", "comma-separated peers to join at start: host:port (their --gossip-port) or dns+name:port, resolved until joined (Kubernetes headless services)")
	fs.StringVar(&f.clusterKey, "cluster-key", "", "key shared by every node: gossip is encrypted with it and peers prove they hold it (default: none on a loopback --bind, else a random one made up at start, which no other node holds). Prefer TAGCACHE_CLUSTER_KEY to this flag: command lines show in ps")
	fs.StringVar(&f.clusterName, "cluster-name", node.DefaultClusterName, "name that labels gossip, so that two clusters never merge")
	fs.StringVar(&f.clusterPreset, "cluster-preset", "", "memberlist timings: local (one machine; failure detected in about 1-2s) or lan (default: local on a loopback --bind, else lan)")
	fs.DurationVar(&f.invalidationTimeout, "invalidation-timeout", node.DefaultInvalidationTimeout, "how long an invalidation (INV_*, DEL, FLUSH) may take to reach every peer before it fails naming the peers it could not reach")
	fs.DurationVar(&f.forwardTimeout, "forward-timeout", node.DefaultForwardTimeout, "how long a command forwarded to a key's owner may take")
	fs.DurationVar(&f.deadForget, "dead-forget", node.DefaultDeadForget, "how long a failed member still counts toward the cluster size for the majority check that fences a cut-off node")
}

// clusterConfig maps the cluster flags to the node's cluster configuration. A node
// without --node-name gets <hostname>-<6 random hex digits>; one on a non-loopback bind
// without a key gets a random key (warnGeneratedClusterKey says so).
func (f *serverFlags) clusterConfig() *node.ClusterConfig {
	cc := &node.ClusterConfig{
		NodeName:            f.nodeName,
		Bind:                f.bind,
		Advertise:           f.advertise,
		GossipPort:          f.gossipPort,
		PeerPort:            f.peerPort,
		Join:                splitList(f.join),
		Name:                f.clusterName,
		Preset:              f.clusterPreset,
		InvalidationTimeout: f.invalidationTimeout,
		ForwardTimeout:      f.forwardTimeout,
		DeadForget:          f.deadForget,
	}
	if len(cc.Join) == 0 {
		cc.Join = nil
	}
	if cc.NodeName == "" {
		cc.NodeName = defaultNodeName()
	}
	switch {
	case f.clusterKey != "":
		cc.Key = []byte(f.clusterKey)
	case !isLoopbackBind(f.bind):
		cc.Key = []byte(rand.Text())
	}
	return cc
}

// defaultNodeName is the hostname and a random suffix, so that two nodes on one machine
// (or a restarted pod) never share a name by accident.
func defaultNodeName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "tagcache"
	}
	var b [3]byte
	rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// isLoopbackBind reports whether bind names only loopback addresses, as the node decides
// it ("" is the node's default, 127.0.0.1).
func isLoopbackBind(bind string) bool {
	if bind == "" || bind == "localhost" {
		return true
	}
	ip := net.ParseIP(bind)
	return ip != nil && ip.IsLoopback()
}

// warnGeneratedClusterKey logs once, at Warn, that the node made up its cluster key. The
// key itself is not logged: it changes at every start, so it is no key to give to
// other nodes.
func (f *serverFlags) warnGeneratedClusterKey(logger hclog.Logger, cc *node.ClusterConfig) {
	if f.clusterKey != "" || len(cc.Key) == 0 {
		return
	}
	logger.Warn("no cluster key configured on a non-loopback bind; generated a random one, so no other node can join this one (nor can it join them): set the same key on every node with TAGCACHE_CLUSTER_KEY (or --cluster-key, or cluster-key in --config)",
		"bind", f.bind)
}

func (f *serverFlags) validateCluster() error {
	port := func(name string, p int) error {
		if p < 0 || p > 65535 {
			return fmt.Errorf("--%s must be 0..65535, got %d", name, p)
		}
		return nil
	}
	positive := func(name string, d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("--%s must be positive, got %s", name, d)
		}
		return nil
	}
	if err := errors.Join(
		port("gossip-port", f.gossipPort),
		port("peer-port", f.peerPort),
		positive("invalidation-timeout", f.invalidationTimeout),
		positive("forward-timeout", f.forwardTimeout),
		positive("dead-forget", f.deadForget),
	); err != nil {
		return err
	}
	switch {
	case f.gossipPort != 0 && f.gossipPort == f.peerPort:
		return fmt.Errorf("--gossip-port and --peer-port are both %d: they must differ", f.gossipPort)
	case strings.TrimSpace(f.nodeName) != f.nodeName:
		return fmt.Errorf("--node-name must not start or end with spaces, got %q", f.nodeName)
	case strings.TrimSpace(f.clusterName) == "":
		return errors.New("--cluster-name must not be empty")
	case f.clusterPreset != "" && f.clusterPreset != "local" && f.clusterPreset != "lan":
		return fmt.Errorf("--cluster-preset must be local or lan (or empty for auto), got %q", f.clusterPreset)
	}
	if f.advertise != "" {
		if _, _, err := net.SplitHostPort(f.advertise); err == nil {
			return fmt.Errorf("--advertise is an address without a port (the ports are --gossip-port and --peer-port), got %q", f.advertise)
		}
	}
	for _, peer := range splitList(f.join) {
		if err := checkJoinAddress(peer); err != nil {
			return fmt.Errorf("--join: %w", err)
		}
	}
	if f.join != "" && f.clusterKey == "" && !isLoopbackBind(f.bind) {
		return errors.New("--join needs the cluster's key on a non-loopback --bind: set TAGCACHE_CLUSTER_KEY (or --cluster-key)")
	}
	return nil
}

// checkJoinAddress checks one --join entry: host:port or dns+name:port.
func checkJoinAddress(peer string) error {
	host, port, err := net.SplitHostPort(strings.TrimPrefix(peer, "dns+"))
	if err != nil {
		return fmt.Errorf("%q: want host:port or dns+name:port (the peer's --gossip-port, %d by default)", peer, node.DefaultGossipPort)
	}
	if host == "" {
		return fmt.Errorf("%q: no host", peer)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", peer)
	}
	return nil
}

func runServer(args []string, stdout, stderr io.Writer) int {
	f := newServerFlags(stderr)
	if wantsHelp(args) {
		f.fs.SetOutput(stdout) // asked-for help goes to stdout, like the client commands'
	}
	if err := f.parse(args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "tagcache server:", err)
		return 2
	}
	if err := f.validate(); err != nil {
		fmt.Fprintln(stderr, "tagcache server:", err)
		return 2
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       "tagcache",
		Level:      hclog.LevelFromString(f.logLevel),
		JSONFormat: f.logJSON,
		Output:     stderr,
	})
	if procs := autoGOMAXPROCS(f.gomaxprocs, runtime.NumCPU(), os.Getenv("GOMAXPROCS")); procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	cfg := f.nodeConfig(logger)
	f.warnGeneratedClusterKey(logger, cfg.Cluster)
	n, err := node.New(cfg)
	if err != nil {
		logger.Error("cannot start", "error", err)
		return 1
	}
	if err := n.Start(); err != nil {
		logger.Error("cannot start", "error", err)
		n.Shutdown(context.Background())
		return 1
	}
	if f.maxMemory > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// Keep garbage from doubling the heap past the store's own limit (docs/memory.md).
		soft := int64(f.maxMemory) + int64(f.maxMemory)/4 + 64<<20
		debug.SetMemoryLimit(soft)
		logger.Debug("go soft memory limit set", "bytes", soft)
	}
	logger.Info("node ready", "version", version, "node", cfg.Cluster.NodeName, "partitions", f.partitions, "max_memory", f.maxMemory.String(), "gomaxprocs", runtime.GOMAXPROCS(0))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	signal.Stop(sig)
	logger.Info("shutting down: finishing in-flight requests", "signal", s.String(), "timeout", f.shutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		logger.Warn("shutdown incomplete", "error", err)
	}
	logger.Info("stopped")
	return 0
}

// byteSize is a flag value for sizes: a number of bytes with an optional unit, K/KB (1000),
// KiB (1024), M/MB, MiB, G/GB, GiB, T/TB, TiB (case-insensitive).
type byteSize int64

func (b *byteSize) String() string {
	v := int64(*b)
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.size && v%u.size == 0 {
			return strconv.FormatInt(v/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	v, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want a non-negative number with an optional unit (KiB, MiB, GiB, KB, MB, GB…)", s)
	}
	mult := map[string]int64{"": 1, "b": 1,
		"k": 1e3, "kb": 1e3, "kib": 1 << 10,
		"m": 1e6, "mb": 1e6, "mib": 1 << 20,
		"g": 1e9, "gb": 1e9, "gib": 1 << 30,
		"t": 1e12, "tb": 1e12, "tib": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, unit)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}

// wantsHelp reports whether args ask for help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// autoGOMAXPROCS returns the GOMAXPROCS to set (0: leave Go's choice). An explicit flag
// wins; then $GOMAXPROCS (Go has applied it already); then, on a machine with 2 or fewer
// CPUs, 1: measured there, a second P adds a scheduler wake-up per batch of ready
// connections that takes the core the clients and the kernel's network stack need, and
// one P is faster with and without pipelining (docs/performance.md).
func autoGOMAXPROCS(flagValue, cpus int, env string) int {
	switch {
	case flagValue > 0:
		return flagValue
	case env != "":
		return 0
	case cpus <= 2:
		return 1
	}
	return 0
}
