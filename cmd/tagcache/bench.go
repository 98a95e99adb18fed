package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagcache/tagcache/node"
)

func init() {
	commands["bench"] = command{"closed-loop load generator over the text protocol, RESP or HTTP", runBench}
}

// benchConfig is what `tagcache bench` was asked to do.
type benchConfig struct {
	protocol    string
	targets     []string
	connections int
	duration    time.Duration
	requests    int64
	pipeline    int
	keys        int
	valueSize   int
	mix         opMix
	tagsPerKey  int
	tagPool     int
	dist        string
	zipfS       float64
	username    string
	password    string
	timeout     time.Duration
	seed        uint64
	json        bool
	progress    bool
	ringAware   bool
	// ring is the cluster's ring a ring-aware run routes by (nil otherwise).
	ring *benchRing
}

// opMix is the share of each operation, in percent.
type opMix struct{ get, put, inv int }

func parseMix(s string) (opMix, error) {
	var m opMix
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(val)
		if !ok || err != nil || n < 0 {
			return m, fmt.Errorf("invalid --mix item %q: want name=percent", part)
		}
		switch name {
		case "get":
			m.get = n
		case "put":
			m.put = n
		case "inv":
			m.inv = n
		default:
			return m, fmt.Errorf("invalid --mix item %q: operations are get, put, inv", part)
		}
	}
	if m.get+m.put+m.inv != 100 {
		return m, fmt.Errorf("--mix must add up to 100, got %d", m.get+m.put+m.inv)
	}
	return m, nil
}

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if wantsHelp(args) {
		fs.SetOutput(stdout)
	}
	var c benchConfig
	var targets, mix string
	fs.StringVar(&c.protocol, "protocol", "text", "protocol: text, resp or http")
	fs.StringVar(&targets, "targets", "", "comma-separated host:port list, connections spread over them (default: 127.0.0.1 and the protocol's default port; with --ring-aware: HTTP API addresses, default 127.0.0.1:8080)")
	fs.IntVar(&c.connections, "connections", 50, "concurrent connections (closed loop: each waits for its replies); with --ring-aware, workers of one connection per member")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "how long to run (ignored when --requests is set)")
	fs.Int64Var(&c.requests, "requests", 0, "total requests to send, then stop (0: run for --duration)")
	fs.IntVar(&c.pipeline, "pipeline", 1, "requests sent per round trip on a connection (text and resp only)")
	fs.IntVar(&c.keys, "keys", 100000, "key space size")
	fs.IntVar(&c.valueSize, "value-size", 100, "value size in bytes")
	fs.StringVar(&mix, "mix", "get=80,put=20,inv=0", "operation mix in percent: get, put, inv (invalidate a tag)")
	fs.IntVar(&c.tagsPerKey, "tags-per-key", 0, "tags written with each put")
	fs.IntVar(&c.tagPool, "tag-pool", 1000, "number of distinct tags")
	fs.StringVar(&c.dist, "dist", "uniform", "key distribution: uniform or zipf")
	fs.Float64Var(&c.zipfS, "zipf-s", 1.1, "zipf exponent (> 1)")
	fs.StringVar(&c.username, "username", envOr("TAGCACHE_USERNAME", node.DefaultUsername), "username for AUTH / HTTP")
	fs.StringVar(&c.password, "password", "", "password for AUTH / HTTP (default: $TAGCACHE_PASSWORD, else the loopback default)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "deadline of one round trip")
	fs.Uint64Var(&c.seed, "seed", 1, "random seed")
	fs.BoolVar(&c.json, "json", false, "print the result as JSON")
	fs.BoolVar(&c.progress, "progress", isTerminal(os.Stderr), "print a live progress line on stderr (default: when stderr is a terminal)")
	fs.BoolVar(&c.ringAware, "ring-aware", false, "send every request straight to its key's owner: read the ring and the members from the\n"+
		"first --targets node that answers (its HTTP API), then each of the --connections workers\n"+
		"opens one connection to every member and sends each round trip to the next member in\n"+
		"turn, with keys drawn from --dist until they are that member's")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: tagcache bench [flags]")
		fmt.Fprintln(fs.Output(), "\nA closed-loop load generator. Every reply is checked: an error or a wrong value")
		fmt.Fprintln(fs.Output(), "counts as an error, never as a success. Throughput comes from measured elapsed time.")
		fmt.Fprintln(fs.Output(), "\nAgainst a cluster, --targets spreads the connections over nodes that forward each")
		fmt.Fprintln(fs.Output(), "request to its key's owner; --ring-aware sends each request to the owner itself")
		fmt.Fprintln(fs.Output(), "(--connections × members connections), as a client that knows the ring would.")
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.password == "" {
		c.password = envOr("TAGCACHE_PASSWORD", node.DefaultPassword)
	}
	var err error
	if c.mix, err = parseMix(mix); err != nil {
		fmt.Fprintln(stderr, "tagcache bench:", err)
		return 2
	}
	if err := c.finish(targets); err != nil {
		fmt.Fprintln(stderr, "tagcache bench:", err)
		return 2
	}
	if c.ringAware {
		if c.ring, err = discoverRing(c); err == nil {
			err = c.ring.index(c.keys)
		}
		if err != nil {
			fmt.Fprintln(stderr, "tagcache bench: --ring-aware:", err)
			return 1
		}
	}
	res, err := runLoad(context.Background(), c, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "tagcache bench:", err)
		return 1
	}
	if c.json {
		json.NewEncoder(stdout).Encode(res)
	} else {
		res.print(stdout)
	}
	if res.Errors > 0 {
		return 1
	}
	return 0
}

func (c *benchConfig) finish(targets string) error {
	defPort := map[string]string{"text": "1984", "resp": "6380", "http": "8080"}[c.protocol]
	if defPort == "" {
		return fmt.Errorf("--protocol must be text, resp or http, got %q", c.protocol)
	}
	if targets == "" && c.ringAware {
		targets = "127.0.0.1:8080" // the HTTP API, which tells the ring
	} else if targets == "" {
		targets = "127.0.0.1:" + defPort
	}
	for _, t := range strings.Split(targets, ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.targets = append(c.targets, t)
		}
	}
	switch {
	case c.connections < 1:
		return fmt.Errorf("--connections must be at least 1")
	case c.pipeline < 1:
		return fmt.Errorf("--pipeline must be at least 1")
	case c.pipeline > 1 && c.protocol == "http":
		return fmt.Errorf("--pipeline > 1 needs --protocol text or resp")
	case c.keys < 1 || c.valueSize < 1 || c.tagPool < 1 || c.tagsPerKey < 0:
		return fmt.Errorf("--keys, --value-size and --tag-pool must be positive, --tags-per-key not negative")
	case c.tagsPerKey > c.tagPool:
		return fmt.Errorf("--tags-per-key %d exceeds --tag-pool %d", c.tagsPerKey, c.tagPool)
	case c.dist != "uniform" && c.dist != "zipf":
		return fmt.Errorf("--dist must be uniform or zipf")
	case c.dist == "zipf" && c.zipfS <= 1:
		return fmt.Errorf("--zipf-s must be greater than 1")
	case c.requests == 0 && c.duration <= 0:
		return fmt.Errorf("set --duration or --requests")
	case len(c.targets) == 0:
		return fmt.Errorf("--targets lists no address")
	}
	return nil
}

// benchResult is the outcome of a run.
type benchResult struct {
	Protocol    string        `json:"protocol"`
	Targets     []string      `json:"targets"`
	Connections int           `json:"connections"`
	Pipeline    int           `json:"pipeline"`
	Elapsed     float64       `json:"elapsed_seconds"`
	Requests    uint64        `json:"requests"`
	PerSecond   float64       `json:"requests_per_second"`
	Gets        uint64        `json:"gets"`
	Hits        uint64        `json:"hits"`
	Misses      uint64        `json:"misses"`
	Puts        uint64        `json:"puts"`
	Invalidates uint64        `json:"invalidations"`
	Errors      uint64        `json:"errors"`
	FirstError  string        `json:"first_error,omitempty"`
	Latency     latencyReport `json:"latency_us"`
	// RingAware runs send each request to its key's owner, one of Members, by the ring
	// of version RingVersion read from RingFrom.
	RingAware   bool                `json:"ring_aware"`
	RingVersion uint64              `json:"ring_version,omitempty"`
	RingFrom    string              `json:"ring_from,omitempty"`
	Members     []benchMemberResult `json:"members,omitempty"`
}

// benchMemberResult is what a ring-aware run sent to one member.
type benchMemberResult struct {
	Name        string `json:"name"`
	Address     string `json:"address"`    // the member's address for --protocol
	Partitions  int    `json:"partitions"` // partitions it owns in the ring
	Requests    uint64 `json:"requests"`
	Gets        uint64 `json:"gets"`
	Puts        uint64 `json:"puts"`
	Invalidates uint64 `json:"invalidations"`
}

type latencyReport struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

func (r *benchResult) print(w io.Writer) {
	if r.RingAware {
		fmt.Fprintf(w, "protocol %s  ring-aware (ring version %d from %s)  connections %d × %d members  pipeline %d\n",
			r.Protocol, r.RingVersion, r.RingFrom, r.Connections, len(r.Members), r.Pipeline)
		for _, m := range r.Members {
			fmt.Fprintf(w, "member     %s %s  partitions %d  requests %d (gets %d, puts %d, invalidations %d)\n",
				m.Name, m.Address, m.Partitions, m.Requests, m.Gets, m.Puts, m.Invalidates)
		}
	} else {
		fmt.Fprintf(w, "protocol %s  targets %s  connections %d  pipeline %d\n", r.Protocol, strings.Join(r.Targets, ","), r.Connections, r.Pipeline)
	}
	fmt.Fprintf(w, "requests   %d in %.2fs = %.0f requests/s\n", r.Requests, r.Elapsed, r.PerSecond)
	fmt.Fprintf(w, "gets       %d (hits %d, misses %d)  puts %d  invalidations %d\n", r.Gets, r.Hits, r.Misses, r.Puts, r.Invalidates)
	fmt.Fprintf(w, "errors     %d", r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, " (first: %s)", r.FirstError)
	}
	fmt.Fprintln(w)
	l := r.Latency
	fmt.Fprintf(w, "latency µs p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f (per round trip)\n", l.P50, l.P90, l.P99, l.P999, l.Max)
}

// op is one request of a worker's batch.
type op struct {
	kind byte // 'g', 'p', 'i'
	key  int
	tag  int
}

// benchClient speaks one protocol on one connection.
type benchClient interface {
	// roundTrip sends ops and checks each reply, returning per-op outcomes.
	roundTrip(ops []op, out []outcome) error
	close()
}

// outcome of one op.
type outcome uint8

const (
	okReply outcome = iota
	hitReply
	missReply
	badReply
)

// counters shared by the workers and the progress line.
type loadCounters struct {
	requests, gets, hits, misses, puts, invs, errors atomic.Uint64
	firstErr                                         atomic.Pointer[string]
}

func (lc *loadCounters) fail(err error) {
	lc.errors.Add(1)
	s := err.Error()
	lc.firstErr.CompareAndSwap(nil, &s)
}

// keyName and valueFor define the data: the value under a key is always the same, so a
// GET hit is checked byte for byte.
func keyName(i int) string { return "bench:" + strconv.Itoa(i) }
func tagName(i int) string { return "btag:" + strconv.Itoa(i) }

func valueFor(key string, size int) []byte {
	v := make([]byte, size)
	for i := range v {
		v[i] = 'a' + byte((i+len(key))%26)
	}
	copy(v, key)
	return v
}

// memberCount is what one worker sent to one member (ring-aware runs).
type memberCount struct{ requests, gets, puts, invs uint64 }

func runLoad(ctx context.Context, c benchConfig, progress io.Writer) (*benchResult, error) {
	// clients[w] are worker w's connections: one to a target, or one to every member
	// of the ring.
	clients := make([][]benchClient, c.connections)
	closeAll := func() {
		for _, cls := range clients {
			for _, cl := range cls {
				cl.close()
			}
		}
	}
	for i := range clients {
		addrs := []string{c.targets[i%len(c.targets)]}
		if c.ring != nil {
			addrs = c.ring.addrs()
		}
		for _, addr := range addrs {
			cl, err := dialBench(c, addr)
			if err != nil {
				closeAll()
				return nil, err
			}
			clients[i] = append(clients[i], cl)
		}
	}
	defer closeAll()
	var counts [][]memberCount // per worker, per member
	if c.ring != nil {
		counts = make([][]memberCount, c.connections)
		for w := range counts {
			counts[w] = make([]memberCount, len(c.ring.members))
		}
	}

	var lc loadCounters
	var budget atomic.Int64 // requests left when --requests is set
	budget.Store(c.requests)
	if c.duration > 0 && c.requests == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.duration)
		defer cancel()
	}
	hists := make([]histogram, c.connections)
	start := time.Now()
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	if c.progress {
		progressDone.Add(1)
		go func() {
			defer progressDone.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stopProgress:
					fmt.Fprint(progress, "\r\033[K")
					return
				case <-t.C:
					el := time.Since(start).Seconds()
					n := lc.requests.Load()
					fmt.Fprintf(progress, "\r\033[K%5.1fs  %d requests  %.0f/s  errors %d", el, n, float64(n)/el, lc.errors.Load())
				}
			}
		}()
	}

	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mc []memberCount
			if counts != nil {
				mc = counts[w]
			}
			benchWorker(ctx, c, clients[w], mc, &hists[w], &lc, &budget, uint64(w))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	progressDone.Wait()

	var h histogram
	for i := range hists {
		h.merge(&hists[i])
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	res := &benchResult{
		Protocol: c.protocol, Targets: c.targets, Connections: c.connections, Pipeline: c.pipeline,
		Elapsed: elapsed.Seconds(), Requests: lc.requests.Load(),
		Gets: lc.gets.Load(), Hits: lc.hits.Load(), Misses: lc.misses.Load(), Puts: lc.puts.Load(),
		Invalidates: lc.invs.Load(), Errors: lc.errors.Load(),
		Latency: latencyReport{us(h.percentile(.5)), us(h.percentile(.9)), us(h.percentile(.99)), us(h.percentile(.999)), us(h.max)},
	}
	res.PerSecond = float64(res.Requests) / elapsed.Seconds()
	if p := lc.firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	if rg := c.ring; rg != nil {
		res.RingAware, res.RingVersion, res.RingFrom = true, rg.version, rg.from
		for m, bm := range rg.members {
			mr := benchMemberResult{Name: bm.name, Address: bm.addr, Partitions: bm.partitions}
			for w := range counts {
				mc := &counts[w][m]
				mr.Requests += mc.requests
				mr.Gets += mc.gets
				mr.Puts += mc.puts
				mr.Invalidates += mc.invs
			}
			res.Members = append(res.Members, mr)
		}
	}
	return res, nil
}

// benchWorker is one closed loop. cls is its connection to a target, or, ring-aware, one
// connection per ring member: then each round trip goes to the next member in turn,
// carries only keys that member owns, and is counted in counts[member].
func benchWorker(ctx context.Context, c benchConfig, cls []benchClient, counts []memberCount, h *histogram, lc *loadCounters, budget *atomic.Int64, id uint64) {
	rng := rand.New(rand.NewPCG(c.seed, id))
	var zipf *rand.Zipf
	if c.dist == "zipf" {
		zipf = rand.NewZipf(rng, c.zipfS, 1, uint64(c.keys-1))
	}
	ops := make([]op, c.pipeline)
	out := make([]outcome, c.pipeline)
	rg := c.ring
	cl, m := cls[0], 0
	for round := id; ctx.Err() == nil; round++ {
		if rg != nil {
			m = int(round % uint64(len(cls)))
			cl = cls[m]
		}
		n := c.pipeline
		if c.requests > 0 {
			left := budget.Add(-int64(n))
			if left < 0 {
				n += int(left)
				if n <= 0 {
					return
				}
			}
		}
		for i := range ops[:n] {
			k := 0
			for {
				if zipf != nil {
					k = int(zipf.Uint64())
				} else {
					k = rng.IntN(c.keys)
				}
				// Ring-aware: redraw until the key is m's, which keeps the distribution
				// over keys the same overall.
				if rg == nil || rg.ownerOfKey(k) == m {
					break
				}
			}
			r := rng.IntN(100)
			kind := byte('g')
			if r >= c.mix.get+c.mix.put {
				kind = 'i'
			} else if r >= c.mix.get {
				kind = 'p'
			}
			ops[i] = op{kind: kind, key: k, tag: rng.IntN(c.tagPool)}
		}
		t0 := time.Now()
		err := cl.roundTrip(ops[:n], out[:n])
		h.record(time.Since(t0))
		lc.requests.Add(uint64(n))
		if counts != nil {
			counts[m].requests += uint64(n)
		}
		if err != nil {
			lc.fail(err)
			return // the connection's state is unknown after an error
		}
		for i, o := range out[:n] {
			switch ops[i].kind {
			case 'g':
				lc.gets.Add(1)
			case 'p':
				lc.puts.Add(1)
			case 'i':
				lc.invs.Add(1)
			}
			if counts != nil {
				counts[m].count(ops[i].kind)
			}
			switch o {
			case hitReply:
				lc.hits.Add(1)
			case missReply:
				lc.misses.Add(1)
			case badReply:
				lc.fail(fmt.Errorf("unexpected reply to %c %s", ops[i].kind, keyName(ops[i].key)))
			}
		}
	}
}

func (mc *memberCount) count(kind byte) {
	switch kind {
	case 'g':
		mc.gets++
	case 'p':
		mc.puts++
	case 'i':
		mc.invs++
	}
}

// tagsFor returns the tags a put of key k carries: tagsPerKey consecutive tags of the
// pool starting at a position derived from k, so invalidations hit real keys.
func tagsFor(c *benchConfig, k int) []string {
	out := make([]string, c.tagsPerKey)
	for i := range out {
		out[i] = tagName((k + i*7919) % c.tagPool)
	}
	return out
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
