package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
)

// Config is a node's configuration. Zero fields take the defaults of DefaultConfig.
type Config struct {
	// Bind is the address the client listeners bind to. The default, 127.0.0.1, keeps a
	// node that was started with no configuration private to its machine.
	Bind string
	// TCPPort is the TagCache text protocol port. 0 picks a free port (tests); -1
	// disables the listener (cmd/tagcache maps the flag value 0 to -1).
	TCPPort int
	// HTTPPort is the JSON HTTP API port; 0 and -1 as for TCPPort.
	HTTPPort int
	// RESPPort is the Redis-protocol (RESP2) port; 0 and -1 as for TCPPort.
	RESPPort int

	// Username and Password are the client credentials. Left empty on a loopback Bind,
	// the original TagCache's admin/password apply; left empty on any other Bind, a random
	// password is generated and logged once. The well-known password is refused on a
	// non-loopback Bind.
	Username string
	Password string
	// TCPAuth says whether text-protocol clients must AUTH first: "on", "off", or "auto"
	// (on exactly when Bind is not loopback).
	TCPAuth string
	// TokenTTL is how long an HTTP bearer token from /auth/login stays valid.
	TokenTTL time.Duration

	// MaxConnections bounds concurrent connections per client protocol (text, RESP);
	// more are refused with an error naming the limit.
	MaxConnections int
	// IdleTimeout closes a text or RESP connection that sends nothing (or reads nothing
	// of its replies) for this long.
	IdleTimeout time.Duration
	// ShutdownDelay is how long Shutdown keeps every listener serving after it began
	// (counting the graceful leave), with HTTP responses saying "Connection: close" and
	// text/RESP served as usual: HTTP clients move off their keep-alive connections
	// before the node closes idle ones, which would race a request being sent (HTTP
	// has no clean way to refuse one unread). 0: none.
	ShutdownDelay time.Duration
	// Goroutines serves every text and RESP connection with its own goroutine. By
	// default a node on Linux serves them from event loops (one per GOMAXPROCS; see
	// evloop_linux.go and docs/performance.md), except that a cluster node with peers
	// gives new connections goroutines, since a request may wait for a peer.
	Goroutines bool
	// MaxLineBytes bounds one text-protocol line. 0 derives it from the cache limits:
	// room for a maximal key, value and tag list.
	MaxLineBytes int
	// MaxBodyBytes bounds an HTTP request body. 0 derives it like MaxLineBytes.
	MaxBodyBytes int64

	// Cache configures the local store.
	Cache cache.Config
	// Cluster makes the node a cluster member; nil runs it standalone.
	Cluster *ClusterConfig
	// Logger receives the node's structured logs. Defaults to a discarding logger.
	Logger hclog.Logger
}

// Defaults of Config.
const (
	DefaultBind           = "127.0.0.1"
	DefaultTCPPort        = 1984
	DefaultHTTPPort       = 8080
	DefaultRESPPort       = 6380 // not 6379, so a node and a redis-server can share a machine
	DefaultTokenTTL       = time.Hour
	DefaultMaxConnections = 10000
	DefaultIdleTimeout    = 10 * time.Minute
	httpRequestTimeout    = time.Minute // reading a request plus writing its reply
)

// DefaultConfig returns the configuration of `tagcache server` with no flags.
func DefaultConfig() Config {
	return Config{
		Bind:           DefaultBind,
		TCPPort:        DefaultTCPPort,
		HTTPPort:       DefaultHTTPPort,
		RESPPort:       DefaultRESPPort,
		TCPAuth:        "auto",
		TokenTTL:       DefaultTokenTTL,
		MaxConnections: DefaultMaxConnections,
		IdleTimeout:    DefaultIdleTimeout,
		Cache:          cache.DefaultConfig(),
	}
}

// Node is one TagCache node: its store, its backend and its client-facing servers.
type Node struct {
	cfg     Config
	log     hclog.Logger
	store   *cache.Store
	backend Backend
	cluster clusterView // the standalone view, or the cluster member's router
	router  *Router     // nil on a standalone node
	auth    *Auth
	metrics *Metrics
	tcpAuth bool // text-protocol clients must AUTH

	// The dashboard's data: request samples, taken by a goroutine that the first
	// ServeHTTP starts and Shutdown stops, and the membership events.
	series      *seriesRecorder
	events      *eventLog
	seriesOnce  sync.Once
	seriesStop  chan struct{}
	seriesEnded chan struct{}
	stopSeries  func() // stops the sampler and waits for it; once

	// GeneratedPassword is set when no password was configured on a non-loopback bind
	// and the node made one up; it is logged once at start.
	GeneratedPassword string

	text *textServer
	resp *respServer
	http *http.Server
	// httpNew: HTTP connections that have sent no request yet (closed at shutdown).
	httpNew httpNewConns

	closing   atomic.Bool // Shutdown closes the listeners
	draining  atomic.Bool // Shutdown has begun: HTTP responses close their connection
	mu        sync.Mutex  // protects listeners and byKind
	listeners []net.Listener
	byKind    map[string]net.Addr
	wg        sync.WaitGroup // serve loops
}

// New builds a node from cfg without opening any listener.
func New(cfg Config) (*Node, error) {
	d := DefaultConfig()
	if cfg.Bind == "" {
		cfg.Bind = d.Bind
	}
	if cfg.TCPAuth == "" {
		cfg.TCPAuth = d.TCPAuth
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = d.TokenTTL
	}
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = d.MaxConnections
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = d.IdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	store, err := cache.New(cfg.Cache)
	if err != nil {
		return nil, err
	}
	cc := store.Config()
	// A line holds a verb, a key, a TTL, a tag list and a value, separated by tabs.
	derived := 64 + cc.MaxKeyBytes + cc.MaxValueBytes + cc.MaxTags*(cc.MaxTagBytes+1)
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = derived
	}
	if cfg.MaxBodyBytes == 0 {
		// JSON escaping can double a value (\uXXXX sextuples it, but that is rare).
		cfg.MaxBodyBytes = int64(2*derived + 4096)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, store: store, backend: Local{Store: store}, byKind: map[string]net.Addr{}}
	n.cluster = standaloneView{n} // the one place a node gets its clusterView; a cluster member installs its router here
	if cfg.Cluster != nil {
		cc, err := cfg.Cluster.complete(cfg.Bind)
		if err != nil {
			store.Close()
			return nil, err
		}
		if n.router, err = newRouter(cc, store, cfg.Logger); err != nil {
			store.Close()
			return nil, err
		}
		n.backend, n.cluster = n.router, n.router
	}

	loopback := isLoopback(cfg.Bind)
	switch cfg.TCPAuth {
	case "on":
		n.tcpAuth = true
	case "off":
	case "auto":
		n.tcpAuth = !loopback
	default:
		store.Close()
		return nil, fmt.Errorf("tcp auth must be on, off or auto, got %q", cfg.TCPAuth)
	}
	user, pass := cfg.Username, cfg.Password
	if user == "" {
		user = DefaultUsername
	}
	if pass == "" {
		if loopback {
			pass = DefaultPassword
		} else {
			pass = randomString(24)
			n.GeneratedPassword = pass
		}
	}
	if !loopback && pass == DefaultPassword {
		store.Close()
		return nil, fmt.Errorf("refusing the well-known password %q on non-loopback bind %s: set --password", DefaultPassword, cfg.Bind)
	}
	n.auth = NewAuth(user, pass, cfg.TokenTTL)
	n.metrics = NewMetrics(n.backend)
	n.series = newSeriesRecorder(n.metrics)
	n.events = newEventLog()
	if n.router != nil {
		n.router.series = n.series
		n.events = n.router.eventLog // the router records its own start
	} else {
		n.events.add("start", standaloneName, "no cluster")
	}
	n.seriesStop, n.seriesEnded = make(chan struct{}), make(chan struct{})
	n.stopSeries = sync.OnceFunc(func() {
		n.seriesOnce.Do(func() { close(n.seriesEnded) }) // never started: nothing to wait for
		close(n.seriesStop)
		<-n.seriesEnded
	})
	n.text = newTextServer(n)
	n.resp = newRESPServer(n)
	n.http = &http.Server{
		Handler:           n.httpHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Bound a whole request and its reply, so a client that stops sending its body
		// (or reading the reply) cannot hold a handler, or Shutdown, forever.
		ReadTimeout:  httpRequestTimeout,
		WriteTimeout: httpRequestTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		ErrorLog:     cfg.Logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		ConnState:    n.httpNew.track,
	}
	return n, nil
}

// isLoopback reports whether bind names only loopback addresses.
func isLoopback(bind string) bool {
	if bind == "localhost" {
		return true
	}
	ip := net.ParseIP(bind)
	return ip != nil && ip.IsLoopback()
}

// Store returns the node's local store.
func (n *Node) Store() *cache.Store { return n.store }

// Backend returns what the node's servers call.
func (n *Node) Backend() Backend { return n.backend }

// Auth returns the node's client credentials.
func (n *Node) Auth() *Auth { return n.auth }

// Metrics returns the node's Prometheus metrics.
func (n *Node) Metrics() *Metrics { return n.metrics }

// Start opens the configured listeners and serves them in the background.
func (n *Node) Start() error {
	if n.GeneratedPassword != "" {
		n.log.Warn("no password configured on a non-loopback bind; generated one (shown once)",
			"username", DefaultUsername, "password", n.GeneratedPassword)
	}
	if n.cfg.TCPPort >= 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.TCPPort)))
		if err != nil {
			return fmt.Errorf("listen text protocol: %w", err)
		}
		n.ServeTCP(ln)
	}
	if n.cfg.HTTPPort >= 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.HTTPPort)))
		if err != nil {
			n.closeListeners()
			return fmt.Errorf("listen http: %w", err)
		}
		n.ServeHTTP(ln)
	}
	if n.cfg.RESPPort >= 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(n.cfg.Bind, strconv.Itoa(n.cfg.RESPPort)))
		if err != nil {
			n.closeListeners()
			return fmt.Errorf("listen resp: %w", err)
		}
		n.ServeRESP(ln)
	}
	if n.router != nil {
		n.mu.Lock()
		addrs := maps.Clone(n.byKind)
		n.mu.Unlock()
		if err := n.router.start(addrs); err != nil {
			n.closeListeners()
			return fmt.Errorf("start cluster member: %w", err)
		}
	}
	return nil
}

// Router returns the node's cluster router, nil on a standalone node.
func (n *Node) Router() *Router { return n.router }

// ServeTCP serves the text protocol on ln in the background until Shutdown.
func (n *Node) ServeTCP(ln net.Listener) {
	n.track("tcp", ln)
	n.log.Info("text protocol listening", "addr", ln.Addr().String(), "auth", n.tcpAuth)
	n.text.startLoops()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.text.acceptLoop(ln, n.text.serveConn)
	}()
}

// ServeHTTP serves the HTTP API on ln in the background until Shutdown.
func (n *Node) ServeHTTP(ln net.Listener) {
	n.track("http", ln)
	n.log.Info("http api listening", "addr", ln.Addr().String(), "dashboard", "http://"+ln.Addr().String()+"/ui/")
	n.seriesOnce.Do(func() {
		go func() {
			defer close(n.seriesEnded)
			n.series.run(n.seriesStop)
		}()
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !n.closing.Load() {
			n.log.Error("http server stopped", "error", err)
		}
	}()
}

func (n *Node) track(kind string, ln net.Listener) {
	n.mu.Lock()
	n.listeners = append(n.listeners, ln)
	n.byKind[kind] = ln.Addr()
	n.mu.Unlock()
}

// Addr returns the address of the listener of kind "tcp" (text protocol), "http" or
// "resp", or nil if the node does not serve it.
func (n *Node) Addr(kind string) net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byKind[kind]
}

// Addrs returns the addresses the node listens on, in the order they were opened.
func (n *Node) Addrs() []net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]net.Addr, len(n.listeners))
	for i, ln := range n.listeners {
		out[i] = ln.Addr()
	}
	return out
}

func (n *Node) closeListeners() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ln := range n.listeners {
		ln.Close()
	}
}

// Shutdown stops accepting connections, lets in-flight requests finish (until ctx ends,
// after which remaining connections are closed), and stops the store's sweeper.
func (n *Node) Shutdown(ctx context.Context) error {
	began := time.Now()
	n.draining.Store(true)
	var errLeave error
	if n.router != nil && n.router.ml != nil && !n.router.isClosed() {
		// A graceful leave: partitions move to their new owners while the client servers
		// still run (commands follow the partitions), then the node leaves memberlist.
		errLeave = n.router.Leave(ctx)
	}
	if d := n.cfg.ShutdownDelay - time.Since(began); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	n.closing.Store(true)
	n.closeListeners()
	// The three servers drain at once, each bounded by ctx; an HTTP connection still
	// busy when ctx ends is closed like the others.
	var errHTTP, errText, errRESP error
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		// A connection that has sent nothing through the shutdown delay is idle.
		errHTTP = shutdownHTTP(ctx, n.http, &n.httpNew, max(n.cfg.ShutdownDelay, minQuietHTTP))
		if errors.Is(errHTTP, net.ErrClosed) { // closeListeners closed it first
			errHTTP = nil
		}
		if errHTTP != nil {
			n.http.Close()
		}
	}()
	go func() { defer wg.Done(); errText = n.text.shutdown(ctx) }()
	go func() { defer wg.Done(); errRESP = n.resp.shutdown(ctx) }()
	wg.Wait()
	n.wg.Wait()
	n.stopSeries()
	if n.router != nil {
		n.router.Close()
	}
	n.store.Close()
	return errors.Join(errLeave, errHTTP, errText, errRESP)
}

// crash stops the node as a crash would, as far as its peers can tell: no leave, no
// handoff; gossip and the peer transport stop at once. For tests.
func (n *Node) crash() {
	if n.router != nil {
		n.router.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n.Shutdown(ctx)
}
