package clustertests

// The workload: concurrent clients spread over the nodes and the three client protocols
// perform PUT, ADD, INCR, DEL, GET, INV_TAG and KEYS_BY_TAG on a small key and tag space,
// so that operations on one key conflict often, and record every operation in a History
// for the checker.
//
// Keys. Values live under wl.k0 … wl.k<Keys-1>; PUT and ADD write there, each value
// unique in the run (run id, client, sequence number), so that a read names the one
// write it saw. INCR works on separate counter keys, wl.c0 … wl.c<max(1,Keys/4)-1>, so
// that it never meets a non-integer value and a counter's number never passes for a
// written value. GET and DEL go to both. Tags are wl.t0 … wl.t<Tags-1>; a PUT or ADD
// carries 0–2 of them, an INCR over text or HTTP replaces the counter's tags with one of
// them now and then (RESP's INCRBY has no tags). No TTLs: an entry lives until it is
// overwritten, deleted or invalidated (or lost with a node).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Endpoint is one node as clients reach it.
type Endpoint struct {
	Name string // node name
	Text string // host:port of the TagCache text protocol
	HTTP string // host:port of the JSON HTTP API
	RESP string // host:port of the Redis protocol (RESP2)
}

// WorkloadConfig configures RunWorkload.
type WorkloadConfig struct {
	// Endpoints lists the nodes clients may use (required). It is called whenever a
	// client (re)connects, so the live set may change during a scenario; a client takes
	// the next one round robin.
	Endpoints func() []Endpoint
	// Clients is the number of concurrent clients. Client i speaks protocol i mod 3
	// (text, RESP, HTTP) and starts on endpoint i + i/3 (mod the endpoints), so both
	// spread evenly. Default 6.
	Clients int
	// Keys is the number of value keys (default 20); there are max(1, Keys/4) counter
	// keys besides. Keep it small so that conflicts are frequent.
	Keys int
	// Tags is the number of tags (default 5); each PUT or ADD carries 0–2 of them.
	Tags int
	// Duration ends the run when it has passed (0: only ctx or MaxOps end it).
	Duration time.Duration
	// MaxOps bounds the operations of the run, all clients together (0: no bound).
	MaxOps int
	// Username and Password are the credentials: text AUTH, RESP AUTH, HTTP Basic.
	// Empty: no AUTH is sent.
	Username, Password string
	// Seed makes the clients' choices of operations, keys and tags reproducible (the
	// interleaving with the cluster is not).
	Seed uint64
	// OpTimeout is the deadline of one operation (default 2s). An operation that misses
	// it is recorded with an unknown outcome and its connection is dropped. An
	// operation in flight when the run ends finishes (or times out) first.
	OpTimeout time.Duration
}

// Defaults of WorkloadConfig.
const (
	DefaultWorkloadClients = 6
	DefaultWorkloadKeys    = 20
	DefaultWorkloadTags    = 5
	DefaultOpTimeout       = 2 * time.Second
)

// Names of a run's keys and tags: each run has its own, so a run against a cluster that
// an earlier run filled starts from absent keys, as the checker's model does.
func (r *workloadRun) valueKey(i int) string   { return "wl." + r.runID + ".k" + strconv.Itoa(i) }
func (r *workloadRun) counterKey(i int) string { return "wl." + r.runID + ".c" + strconv.Itoa(i) }
func (r *workloadRun) tag(i int) string        { return "wl." + r.runID + ".t" + strconv.Itoa(i) }

// RunWorkload runs cfg's clients until ctx ends, Duration passes or MaxOps operations
// were performed, and returns the history of every operation. It returns once every
// client stopped, at most OpTimeout after the end.
func RunWorkload(ctx context.Context, cfg WorkloadConfig) *History {
	if cfg.Clients <= 0 {
		cfg.Clients = DefaultWorkloadClients
	}
	if cfg.Keys <= 0 {
		cfg.Keys = DefaultWorkloadKeys
	}
	if cfg.Tags <= 0 {
		cfg.Tags = DefaultWorkloadTags
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	h := newHistory(time.Now())
	run := &workloadRun{cfg: cfg, runID: fmt.Sprintf("%05x", rand.Uint32()&0xfffff)}
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		c := &wlClient{
			run:   run,
			id:    i,
			proto: Protocol(i % int(numProtocols)),
			rng:   rand.New(rand.NewPCG(cfg.Seed, uint64(i))),
			next:  i + i/int(numProtocols),
		}
		wg.Go(func() { h.add(c.loop(ctx)...) })
	}
	wg.Wait()
	h.notRun = int(run.notRun.Load())
	return h
}

// workloadRun is what the clients of one run share.
type workloadRun struct {
	cfg    WorkloadConfig
	runID  string       // makes keys, tags and values unique across runs against one cluster
	issued atomic.Int64 // operations begun, for MaxOps
	notRun atomic.Int64 // operations a closing node refused (notRun), resent
}

// take reserves one operation of MaxOps; false when they are used up.
func (r *workloadRun) take() bool {
	if r.cfg.MaxOps <= 0 {
		return true
	}
	if r.issued.Add(1) > int64(r.cfg.MaxOps) {
		// Give the reservation back: a client holding the last one may return it
		// (untake) and take it again, which a count left above MaxOps would refuse.
		r.issued.Add(-1)
		return false
	}
	return true
}

// untake gives back an operation that was never sent.
func (r *workloadRun) untake() { r.issued.Add(-1) }

// wlClient is one client: one protocol, one connection at a time, one operation at a
// time.
type wlClient struct {
	run   *workloadRun
	id    int
	proto Protocol
	rng   *rand.Rand
	seq   int           // values written so far
	next  int           // the next endpoint to connect to, round robin
	conn  wlConn        // nil: not connected
	ep    Endpoint      // conn's endpoint
	ops   []Op          // the client's history
	wait  time.Duration // the last wait between connection attempts
}

// wlConn is a connection to one node over one protocol.
type wlConn interface {
	// do performs op, filling in its outcome, and says what became of the connection.
	do(op *Op) connState
	// stale reports whether the node closed the connection (or sent something nobody
	// asked for) while it was idle: then nothing was sent on it and the client
	// reconnects before its next operation.
	stale() bool
	close()
}

func (c *wlClient) loop(ctx context.Context) []Op {
	defer func() {
		if c.conn != nil {
			c.conn.close()
		}
	}()
	for ctx.Err() == nil {
		if c.conn != nil && c.conn.stale() {
			c.drop()
		}
		if c.conn == nil {
			if err := c.connect(ctx); err != nil {
				c.backoff(ctx)
				continue
			}
		}
		if !c.run.take() {
			break
		}
		op := c.nextOp()
		op.Client, op.Node, op.Proto = c.id, c.ep.Name, c.proto
		op.Invoke = time.Now()
		state := c.conn.do(&op)
		op.Complete = time.Now()
		switch state {
		case connUsable:
			c.ops = append(c.ops, op)
			if op.Status == StatusError {
				// An error answers at once (a fenced node, an unreachable owner):
				// pause like a real client instead of spinning on it, which would only
				// inflate the history and the checker's work.
				c.errorPause(ctx)
			}
		case connBroken:
			c.ops = append(c.ops, op)
			c.drop()
		case connNotSent, connNotRun:
			if state == connNotRun {
				c.run.notRun.Add(1)
			}
			c.run.untake()
			c.drop()
			c.backoff(ctx)
		}
	}
	return c.ops
}

// drop closes the connection; the next operation goes to the next endpoint.
func (c *wlClient) drop() {
	c.conn.close()
	c.conn = nil
}

// errorPause waits 5 ms after an error reply.
func (c *wlClient) errorPause(ctx context.Context) {
	t := time.NewTimer(5 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// backoff waits before the next connection attempt: 10 ms, doubling up to 200 ms.
func (c *wlClient) backoff(ctx context.Context) {
	c.wait = min(max(2*c.wait, 10*time.Millisecond), 200*time.Millisecond)
	t := time.NewTimer(c.wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// connect opens a connection to the next endpoint and authenticates.
func (c *wlClient) connect(ctx context.Context) error {
	eps := c.run.cfg.Endpoints()
	if len(eps) == 0 {
		return errors.New("no endpoints")
	}
	ep := eps[c.next%len(eps)]
	c.next++
	cfg := c.run.cfg
	var (
		conn wlConn
		err  error
	)
	switch c.proto {
	case ProtoText:
		conn, err = dialWLText(ctx, ep.Text, cfg)
	case ProtoRESP:
		conn, err = dialWLRESP(ctx, ep.RESP, cfg)
	default:
		conn = newWLHTTP(ep.HTTP, cfg)
	}
	if err != nil {
		return fmt.Errorf("connect to %s over %s: %w", ep.Name, c.proto, err)
	}
	c.conn, c.ep, c.wait = conn, ep, 0
	return nil
}

// nextOp draws the next operation: GET 36 %, PUT 22 %, ADD 8 %, INCR 11 %, DEL 9 %,
// INV_TAG 7 %, KEYS_BY_TAG 7 %.
func (c *wlClient) nextOp() Op {
	cfg := c.run.cfg
	counters := max(1, cfg.Keys/4)
	anyKey := func() string {
		if c.rng.IntN(5) == 0 {
			return c.run.counterKey(c.rng.IntN(counters))
		}
		return c.run.valueKey(c.rng.IntN(cfg.Keys))
	}
	value := func() string {
		c.seq++
		return fmt.Sprintf("%s-c%d.%d", c.run.runID, c.id, c.seq)
	}
	tags := func(n int) []string {
		n = min(n, cfg.Tags)
		if n == 0 {
			return nil
		}
		out := make([]string, 0, n)
		for _, i := range c.rng.Perm(cfg.Tags)[:n] {
			out = append(out, c.run.tag(i))
		}
		return out
	}
	switch r := c.rng.IntN(100); {
	case r < 36:
		return Op{Kind: OpGet, Key: anyKey()}
	case r < 58:
		return Op{Kind: OpPut, Key: c.run.valueKey(c.rng.IntN(cfg.Keys)), Value: value(), Tags: tags(c.rng.IntN(3))}
	case r < 66:
		return Op{Kind: OpAdd, Key: c.run.valueKey(c.rng.IntN(cfg.Keys)), Value: value(), Tags: tags(c.rng.IntN(3))}
	case r < 77:
		op := Op{Kind: OpIncr, Key: c.run.counterKey(c.rng.IntN(counters)), By: 1 + c.rng.Int64N(5)}
		if c.proto != ProtoRESP && c.rng.IntN(3) == 0 {
			op.Tags = tags(1)
		}
		return op
	case r < 86:
		return Op{Kind: OpDel, Key: anyKey()}
	case r < 93:
		return Op{Kind: OpInvTag, Tag: c.run.tag(c.rng.IntN(cfg.Tags))}
	default:
		return Op{Kind: OpKeysByTag, Tag: c.run.tag(c.rng.IntN(cfg.Tags))}
	}
}

// connState is what an operation left its connection in.
type connState uint8

const (
	connUsable  connState = iota
	connBroken            // drop it; the operation's outcome is recorded
	connNotSent           // drop it; the operation never left the client and is not recorded
	connNotRun            // drop it; the closing node answered that the operation did not run: as connNotSent
)

// notRun reports whether an error answer says the command did not run: a node closing
// the connection answers so to what it receives meanwhile (docs/protocol.md, "closing").
func notRun(msg string) bool { return strings.Contains(msg, "command not run") }

// refusedUnrun reports whether an error answer says the node refused the command
// before running it (docs/cluster.md, "Routing" and "Fencing"): the owner could not be
// reached at all, the partition has no holder yet or is moving, the node is fenced, or
// a forward came too late. The checker takes the node at its word and leaves such a
// write out; if it ran after all, its value shows up unexplained.
func refusedUnrun(msg string) bool {
	if strings.Contains(msg, "may have run") {
		return false
	}
	for _, s := range []string{" unreachable: call ", "has no holder yet", "routing: ownership of partition",
		"is fenced: it lost contact", "arrived after its deadline: not run"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// opFailed records that op got no (usable) answer: its outcome is unknown.
func opFailed(op *Op, err error) connState {
	op.Status, op.Err = StatusUnknown, err.Error()
	return connBroken
}

// opRefused records an error answer; the connection stays usable. An error saying the
// command may have run (a forward the owner never answered: docs/cluster.md, "Routing")
// leaves the outcome unknown.
func opRefused(op *Op, msg string) connState {
	op.Status, op.Err = StatusError, msg
	if strings.Contains(msg, "the command may have run") {
		op.Status = StatusUnknown
	}
	return connUsable
}

// --- the text protocol

type wlText struct {
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

func dialWLText(ctx context.Context, addr string, cfg WorkloadConfig) (*wlText, error) {
	c, err := dialWL(ctx, addr, cfg.OpTimeout)
	if err != nil {
		return nil, err
	}
	t := &wlText{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c), timeout: cfg.OpTimeout}
	if cfg.Username != "" {
		reply, err := t.exchange("AUTH", cfg.Username, cfg.Password)
		if err == nil && reply != "OK" {
			err = fmt.Errorf("AUTH: %s", reply)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return t, nil
}

// dialWL opens a TCP connection within timeout (or until ctx ends).
func dialWL(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// exchange sends one command line made of fields and returns the reply line.
func (t *wlText) exchange(fields ...string) (string, error) {
	t.c.SetDeadline(time.Now().Add(t.timeout))
	t.w.WriteString(strings.Join(fields, "\t"))
	t.w.WriteByte('\n')
	if err := t.w.Flush(); err != nil {
		return "", err
	}
	line, err := t.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// textTags is a tag list field: "-" for none.
func textTags(tags []string) string {
	if len(tags) == 0 {
		return "-"
	}
	return strings.Join(tags, ",")
}

func (t *wlText) do(op *Op) connState {
	var fields []string
	switch op.Kind {
	case OpPut, OpAdd:
		fields = []string{op.Kind.String(), op.Key, "-", textTags(op.Tags), op.Value}
	case OpIncr:
		fields = []string{"INCR", op.Key, strconv.FormatInt(op.By, 10), "-", textTags(op.Tags)}
	case OpDel, OpGet:
		fields = []string{op.Kind.String(), op.Key}
	case OpInvTag, OpKeysByTag:
		fields = []string{op.Kind.String(), op.Tag}
	}
	reply, err := t.exchange(fields...)
	if err != nil {
		return opFailed(op, err)
	}
	if msg, ok := strings.CutPrefix(reply, "ERR "); ok {
		if notRun(msg) {
			return connNotRun
		}
		return opRefused(op, msg)
	}
	op.Status = StatusOK
	head, rest, _ := strings.Cut(reply, "\t")
	ok := true
	switch op.Kind {
	case OpPut:
		ok = reply == "OK"
	case OpAdd:
		ok = reply == "ADDED" || reply == "EXISTS"
		op.Found = reply == "ADDED"
	case OpIncr:
		_, err := strconv.ParseInt(rest, 10, 64)
		ok = head == "VALUE" && err == nil
		op.Result = rest
	case OpDel:
		ok = reply == "DEL ok" || reply == "DEL nf"
		op.Found = reply == "DEL ok"
	case OpGet:
		ok = reply == "NF" || head == "VALUE"
		op.Found, op.Result = head == "VALUE", rest
	case OpInvTag:
		var err error
		op.Count, err = strconv.Atoi(rest)
		ok = head == "INV_TAG" && err == nil
	case OpKeysByTag:
		ok = head == "KEYS"
		if rest != "" {
			op.Keys = strings.Split(rest, ",")
		}
	}
	if !ok {
		return opFailed(op, fmt.Errorf("unexpected reply %q", reply))
	}
	return connUsable
}

func (t *wlText) stale() bool { return t.r.Buffered() > 0 || wlPeerClosed(t.c) }
func (t *wlText) close()      { t.c.Close() }

// wlPeerClosed reports, without blocking, whether c's peer closed the connection or sent
// bytes that nobody asked for.
func wlPeerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// No error: end of stream (0 bytes) or unsolicited bytes; an error other than
		// "nothing to read": a reset.
		closed = !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR)
		return true
	})
	return closed || err != nil
}

// --- RESP

type wlRESP struct {
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

// wlRESPReply is one RESP2 reply.
type wlRESPReply struct {
	kind  byte   // '+', '-', ':', '$', '*'
	str   string // simple string, error, bulk string
	n     int64  // integer
	null  bool   // null bulk string or array
	elems []wlRESPReply
}

func dialWLRESP(ctx context.Context, addr string, cfg WorkloadConfig) (*wlRESP, error) {
	c, err := dialWL(ctx, addr, cfg.OpTimeout)
	if err != nil {
		return nil, err
	}
	r := &wlRESP{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c), timeout: cfg.OpTimeout}
	if cfg.Username != "" {
		reply, err := r.exchange("AUTH", cfg.Username, cfg.Password)
		if err == nil && (reply.kind != '+' || reply.str != "OK") {
			err = fmt.Errorf("AUTH: %c%s", reply.kind, reply.str)
		}
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	return r, nil
}

// exchange sends one command as an array of bulk strings and reads the reply.
func (r *wlRESP) exchange(args ...string) (wlRESPReply, error) {
	r.c.SetDeadline(time.Now().Add(r.timeout))
	fmt.Fprintf(r.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(r.w, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := r.w.Flush(); err != nil {
		return wlRESPReply{}, err
	}
	return r.read(0)
}

func (r *wlRESP) read(depth int) (wlRESPReply, error) {
	line, err := r.r.ReadString('\n')
	if err != nil {
		return wlRESPReply{}, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" || depth > 2 {
		return wlRESPReply{}, fmt.Errorf("bad RESP reply %q", line)
	}
	rep := wlRESPReply{kind: line[0], str: line[1:]}
	switch rep.kind {
	case '+', '-':
		return rep, nil
	case ':':
		rep.n, err = strconv.ParseInt(rep.str, 10, 64)
		return rep, err
	case '$', '*':
		n, err := strconv.Atoi(rep.str)
		switch {
		case err != nil || n < -1 || n > 64<<20:
			return rep, fmt.Errorf("bad RESP length %q", line)
		case n == -1:
			rep.null, rep.str = true, ""
			return rep, nil
		case rep.kind == '$':
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r.r, buf); err != nil {
				return rep, err
			}
			rep.str = string(buf[:n])
			return rep, nil
		}
		rep.str = ""
		for range n {
			e, err := r.read(depth + 1)
			if err != nil {
				return rep, err
			}
			rep.elems = append(rep.elems, e)
		}
		return rep, nil
	}
	return rep, fmt.Errorf("bad RESP reply %q", line)
}

func (r *wlRESP) do(op *Op) connState {
	var args []string
	switch op.Kind {
	case OpPut, OpAdd:
		args = []string{"SET", op.Key, op.Value}
		if op.Kind == OpAdd {
			args = append(args, "NX")
		}
		if len(op.Tags) > 0 {
			args = append(args, "TAGS", strings.Join(op.Tags, ","))
		}
	case OpIncr:
		args = []string{"INCRBY", op.Key, strconv.FormatInt(op.By, 10)}
	case OpDel:
		args = []string{"DEL", op.Key}
	case OpGet:
		args = []string{"GET", op.Key}
	case OpInvTag:
		args = []string{"TAG.INVALIDATE", op.Tag}
	case OpKeysByTag:
		args = []string{"TAG.KEYS", op.Tag}
	}
	rep, err := r.exchange(args...)
	if err != nil {
		return opFailed(op, err)
	}
	if rep.kind == '-' {
		if notRun(rep.str) {
			return connNotRun
		}
		return opRefused(op, rep.str)
	}
	op.Status = StatusOK
	switch {
	case op.Kind == OpPut && rep.kind == '+' && rep.str == "OK":
	case op.Kind == OpAdd && rep.kind == '+' && rep.str == "OK":
		op.Found = true
	case op.Kind == OpAdd && rep.kind == '$' && rep.null:
	case op.Kind == OpIncr && rep.kind == ':':
		op.Result = strconv.FormatInt(rep.n, 10)
	case op.Kind == OpDel && rep.kind == ':' && (rep.n == 0 || rep.n == 1):
		op.Found = rep.n == 1
	case op.Kind == OpGet && rep.kind == '$':
		op.Found, op.Result = !rep.null, rep.str
	case op.Kind == OpInvTag && rep.kind == ':':
		op.Count = int(rep.n)
	case op.Kind == OpKeysByTag && rep.kind == '*' && !rep.null:
		for _, e := range rep.elems {
			if e.kind != '$' || e.null {
				return opFailed(op, fmt.Errorf("unexpected TAG.KEYS element %c%s", e.kind, e.str))
			}
			op.Keys = append(op.Keys, e.str)
		}
	default:
		return opFailed(op, fmt.Errorf("unexpected reply %c%s", rep.kind, rep.str))
	}
	return connUsable
}

func (r *wlRESP) stale() bool { return r.r.Buffered() > 0 || wlPeerClosed(r.c) }
func (r *wlRESP) close()      { r.c.Close() }

// --- HTTP

type wlHTTP struct {
	base    string // http://host:port
	user    string
	pass    string
	tr      *http.Transport
	client  *http.Client
	timeout time.Duration
	dels    uint64 // DELs sent: they alternate between DELETE /keys/{key} and /invalidate-key
	closing bool   // the last reply said "Connection: close": the node is shutting down
}

func newWLHTTP(addr string, cfg WorkloadConfig) *wlHTTP {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.OpTimeout}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &wlHTTP{
		base: "http://" + addr, user: cfg.Username, pass: cfg.Password,
		tr: tr, client: &http.Client{Transport: tr}, timeout: cfg.OpTimeout,
	}
}

// wlHTTPReply holds the fields of every JSON reply the workload reads.
type wlHTTPReply struct {
	OK      *bool           `json:"ok"`
	Added   *bool           `json:"added"`
	Value   json.RawMessage `json:"value"` // GET: a string; INCR: a number
	Error   string          `json:"error"`
	Deleted *int            `json:"deleted"`
	Success *bool           `json:"success"`
	Count   *int            `json:"count"`
	Keys    []string        `json:"keys"`
}

func (h *wlHTTP) do(op *Op) connState {
	var (
		method = http.MethodPost
		path   string
		body   any
	)
	tags := op.Tags
	if tags == nil && op.Kind != OpIncr {
		tags = []string{}
	}
	switch op.Kind {
	case OpPut, OpAdd:
		path = "/" + strings.ToLower(op.Kind.String())
		body = map[string]any{"key": op.Key, "value": op.Value, "tags": tags}
	case OpIncr:
		path = "/incr"
		m := map[string]any{"key": op.Key, "by": op.By}
		if tags != nil {
			m["tags"] = tags
		}
		body = m
	case OpDel:
		h.dels++
		if h.dels%2 == 0 {
			method, path = http.MethodDelete, "/keys/"+url.PathEscape(op.Key)
		} else {
			path, body = "/invalidate-key", map[string]any{"key": op.Key}
		}
	case OpGet:
		method, path = http.MethodGet, "/get/"+url.PathEscape(op.Key)
	case OpInvTag:
		path, body = "/invalidate-tag", map[string]any{"tag": op.Tag}
	case OpKeysByTag:
		method, path = http.MethodGet, "/keys-by-tag?tag="+url.QueryEscape(op.Tag)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return opFailed(op, err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return opFailed(op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if h.user != "" {
		req.SetBasicAuth(h.user, h.pass)
	}
	resp, err := h.client.Do(req)
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return connNotSent
	}
	if err != nil {
		return opFailed(op, err)
	}
	defer resp.Body.Close()
	h.closing = resp.Close
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return opFailed(op, err)
	}
	var rep wlHTTPReply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return opFailed(op, fmt.Errorf("HTTP %d, body %.200q: %w", resp.StatusCode, raw, err))
	}
	if resp.StatusCode != http.StatusOK {
		return opRefused(op, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, rep.Error))
	}
	if rep.OK != nil && !*rep.OK && op.Kind == OpIncr {
		return opRefused(op, rep.Error)
	}
	op.Status = StatusOK
	bad := false
	switch op.Kind {
	case OpPut:
		bad = rep.OK == nil || !*rep.OK
	case OpAdd:
		bad = rep.Added == nil
		op.Found = !bad && *rep.Added
	case OpIncr:
		var n int64
		bad = json.Unmarshal(rep.Value, &n) != nil
		op.Result = strconv.FormatInt(n, 10)
	case OpDel:
		switch {
		case rep.Deleted != nil:
			op.Found = *rep.Deleted > 0
		case rep.Success != nil:
			op.Found = *rep.Success
		default:
			bad = true
		}
	case OpGet:
		switch {
		case rep.Error == "not_found":
		case rep.Value != nil:
			op.Found = true
			bad = json.Unmarshal(rep.Value, &op.Result) != nil
		default:
			bad = true
		}
	case OpInvTag:
		bad = rep.Count == nil
		if !bad {
			op.Count = *rep.Count
		}
	case OpKeysByTag:
		bad = rep.Keys == nil
		op.Keys = rep.Keys
	}
	if bad {
		return opFailed(op, fmt.Errorf("unexpected reply %.200q", raw))
	}
	return connUsable
}

// stale: net/http notices a connection the node closed, and retries a request that was
// not sent on it. A reply that closed its connection comes from a node that is shutting
// down (node.Config.ShutdownDelay): like a load balancer, the client moves to another
// node rather than dial this one again.
func (h *wlHTTP) stale() bool { return h.closing }
func (h *wlHTTP) close()      { h.tr.CloseIdleConnections() }
