package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Client calls peers. It keeps Config.ConnsPerPeer connections to each peer address it
// has called, dialed on first use and redialed after a loss, with many requests in
// flight on each.
type Client struct {
	cfg    Config
	log    hclog.Logger
	ctx    context.Context // done on Close; stops dials
	cancel context.CancelFunc

	mu     sync.Mutex // protects peers, closed and wg.Add
	peers  map[string]*peer
	closed bool
	wg     sync.WaitGroup // dials, and each connection's reader and writer
}

// NewClient returns a client with no connections.
func NewClient(cfg Config) (*Client, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, peers: map[string]*peer{}}, nil
}

// Call sends body as a request of kind to the peer at addr and returns its reply. The
// deadline is ctx's, or Config.RequestTimeout when ctx has none. Errors: ErrBusy,
// ErrUnreachable, ErrTimeout, ErrClosed, ErrFrameTooLarge, *RemoteError, or ctx's error,
// wrapped with the address and kind.
func (c *Client) Call(ctx context.Context, addr string, kind uint16, body []byte) ([]byte, error) {
	var start time.Time
	if c.cfg.OnCall != nil {
		start = time.Now()
	}
	reply, err := c.call(ctx, addr, kind, body)
	if c.cfg.OnCall != nil {
		c.cfg.OnCall(addr, kind, time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("call %s kind %d: %w", addr, kind, err)
	}
	return reply, nil
}

func (c *Client) call(ctx context.Context, addr string, kind uint16, body []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.RequestTimeout)
		defer cancel()
	}
	p, err := c.peer(addr)
	if err != nil {
		return nil, notSent{err}
	}
	if p.pending.Add(1) > int64(c.cfg.MaxPending) {
		p.pending.Add(-1)
		return nil, notSent{ErrBusy}
	}
	defer p.pending.Add(-1)
	cc, err := p.conn(ctx)
	if err != nil {
		return nil, notSent{err}
	}
	return cc.roundTrip(ctx, kind, body)
}

func (c *Client) peer(addr string) (*peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	p := c.peers[addr]
	if p == nil {
		p = &peer{c: c, addr: addr, slots: make([]slot, c.cfg.ConnsPerPeer), changed: make(chan struct{})}
		c.peers[addr] = p
	}
	return p, nil
}

// spawn runs f on a goroutine that Close waits for, unless the client is closed.
func (c *Client) spawn(f func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// Close closes every connection, fails the Calls in progress with ErrClosed and waits
// for every goroutine the client started.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cancel()
	peers := c.peers
	c.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		conns := make([]*clientConn, 0, len(p.slots))
		for _, s := range p.slots {
			if s.cc != nil {
				conns = append(conns, s.cc)
			}
		}
		p.mu.Unlock()
		for _, cc := range conns {
			cc.fail(ErrClosed)
		}
	}
	c.wg.Wait()
	return nil
}

// Redial ends the backoff after failed dials to addr and drops its connections, so the
// next Call dials afresh at once. The node calls it when a member at addr (re)joins: a
// node restarted on the same address would otherwise be refused calls until the backoff
// of its predecessor's absence ran out, and after a healed network partition the old
// connections sit in TCP's retransmission backoff (seconds) while a new one answers at
// once. Calls in flight on the dropped connections fail with ErrUnreachable.
func (c *Client) Redial(addr string) {
	c.mu.Lock()
	p := c.peers[addr]
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.backoff, p.retryAt = 0, time.Time{}
	var conns []*clientConn
	for i := range p.slots {
		if cc := p.slots[i].cc; cc != nil {
			conns = append(conns, cc)
		}
	}
	p.mu.Unlock()
	for _, cc := range conns {
		cc.fail(errRedial)
	}
}

// errRedial: the connection was dropped by Redial.
var errRedial = errors.New("dropped: the peer rejoined")

// ctxErr is the error of a Call whose ctx is done.
func ctxErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ErrTimeout
	}
	return ctx.Err()
}

// peer is the client's state for one peer address.
type peer struct {
	c       *Client
	addr    string
	pending atomic.Int64 // Calls in progress

	mu      sync.Mutex // protects the fields below
	slots   []slot
	next    int           // round-robin over slots
	changed chan struct{} // closed (and replaced) when a dial ends
	backoff time.Duration // of the last failed dial; 0 after a success
	retryAt time.Time     // no dial before
	lastErr error         // of the last failed dial
}

type slot struct {
	cc      *clientConn // nil or dead: needs a dial
	dialing bool
}

// conn returns a live connection to the peer, dialing the missing ones.
func (p *peer) conn(ctx context.Context) (*clientConn, error) {
	for {
		p.mu.Lock()
		var live *clientConn
		n := len(p.slots)
		p.next++
		for j := range n {
			if cc := p.slots[(p.next+j)%n].cc; cc != nil && !cc.dead() {
				live = cc
				break
			}
		}
		wait := time.Until(p.retryAt)
		if wait <= 0 {
			for i := range p.slots {
				s := &p.slots[i]
				if (s.cc == nil || s.cc.dead()) && !s.dialing {
					if !p.c.spawn(func() { p.dial(i) }) {
						p.mu.Unlock()
						return nil, ErrClosed
					}
					s.dialing = true
				}
			}
		}
		changed, lastErr := p.changed, p.lastErr
		p.mu.Unlock()

		switch {
		case live != nil:
			return live, nil
		case wait > 0:
			return nil, fmt.Errorf("%w (next dial in %v): %w", ErrUnreachable, wait.Round(time.Millisecond), lastErr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		case <-p.c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// dial connects slot i, or starts a backoff.
func (p *peer) dial(i int) {
	cc, err := p.c.connect(p.addr)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slots[i].dialing = false
	close(p.changed)
	p.changed = make(chan struct{})
	if err != nil {
		if p.c.ctx.Err() != nil {
			return
		}
		p.backoff = min(max(2*p.backoff, p.c.cfg.ReconnectMin), p.c.cfg.ReconnectMax)
		jitter := time.Duration(rand.Int64N(int64(p.backoff)/4 + 1))
		p.retryAt = time.Now().Add(p.backoff + jitter)
		p.lastErr = err
		p.c.log.Warn("dial failed", "peer", p.addr, "error", err, "retry_in", p.backoff+jitter)
		return
	}
	p.backoff, p.retryAt, p.lastErr = 0, time.Time{}, nil
	if !cc.start() {
		cc.fail(ErrClosed)
		return
	}
	p.slots[i].cc = cc
}

// connect dials addr and runs the handshake, within HandshakeTimeout.
func (c *Client) connect(addr string) (*clientConn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) }) // Close interrupts
	br := bufio.NewReaderSize(conn, 64<<10)
	name, version, err := handshake(conn, br, &c.cfg, roleDialer)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return &clientConn{
		c: c, addr: addr, peer: name, version: version, conn: conn, br: br,
		out: make(chan []byte, c.cfg.MaxInFlight), done: make(chan struct{}),
		calls: map[uint64]chan result{},
	}, nil
}

// clientConn is one connection to a peer: a writer goroutine sends the queued requests,
// a reader goroutine hands each response to the Call waiting for its ID.
type clientConn struct {
	c       *Client
	addr    string
	peer    string // proven name
	version uint8
	conn    net.Conn
	br      *bufio.Reader
	out     chan []byte
	done    chan struct{} // closed by fail

	mu     sync.Mutex // protects the fields below
	nextID uint64
	calls  map[uint64]chan result // nil once failed
	err    error                  // why it failed
}

type result struct {
	body []byte
	err  error
}

func (cc *clientConn) dead() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

// start runs the reader and the writer, unless the client is closed.
func (cc *clientConn) start() bool {
	return cc.c.spawn(func() {
		cc.fail(cc.readLoop())
	}) && cc.c.spawn(func() {
		if err := writeLoop(cc.conn, cc.out, cc.done, cc.c.cfg.WriteTimeout); err != nil {
			cc.fail(fmt.Errorf("write: %w", err))
		}
	})
}

// fail closes the connection and fails every Call waiting on it; the first error wins.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.calls == nil {
		cc.mu.Unlock()
		return
	}
	if cc.c.ctx.Err() != nil {
		err = ErrClosed
	} else {
		if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, errMalformed) {
			cc.c.log.Error("bad frame; closing connection", "peer", cc.peer, "remote", cc.addr, "error", err)
		} else {
			cc.c.log.Warn("connection lost", "peer", cc.peer, "remote", cc.addr, "error", err)
		}
		err = fmt.Errorf("%w: connection lost: %w", ErrUnreachable, err)
	}
	calls := cc.calls
	cc.calls, cc.err = nil, err
	close(cc.done)
	cc.mu.Unlock()
	cc.conn.Close()
	for _, ch := range calls {
		ch <- result{err: err}
	}
}

func (cc *clientConn) roundTrip(ctx context.Context, kind uint16, body []byte) ([]byte, error) {
	var timeout uint32
	if d, ok := ctx.Deadline(); ok {
		// Rounded up, so the handler's deadline never passes before ours.
		ms := (time.Until(d) + time.Millisecond - 1).Milliseconds()
		timeout = uint32(min(max(ms, 1), math.MaxUint32))
	}
	req := envelope{V: cc.version, Kind: kind, Flags: flagRequest, Body: body, Timeout: timeout}
	ch := make(chan result, 1)
	cc.mu.Lock()
	if cc.calls == nil {
		err := cc.err
		cc.mu.Unlock()
		return nil, notSent{err}
	}
	cc.nextID++
	req.ID = cc.nextID
	cc.calls[req.ID] = ch
	cc.mu.Unlock()

	frame := req.frame()
	if len(frame)-frameHeader > cc.c.cfg.MaxFrameBytes {
		cc.forget(req.ID)
		return nil, notSent{fmt.Errorf("%w: request of %d bytes, limit %d", ErrFrameTooLarge, len(frame)-frameHeader, cc.c.cfg.MaxFrameBytes)}
	}
	select {
	case cc.out <- frame:
	case r := <-ch: // the connection failed while the request waited to be queued
		return r.body, notSent{r.err}
	case <-ctx.Done():
		cc.forget(req.ID)
		return nil, notSent{ctxErr(ctx)}
	}
	select {
	case r := <-ch:
		if d, _ := ctx.Deadline(); r.err != nil && !time.Now().Before(d) {
			return nil, ErrTimeout // the handler gave up on our deadline too
		}
		return r.body, r.err
	case <-ctx.Done():
		cc.forget(req.ID)
		return nil, ctxErr(ctx)
	}
}

func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	delete(cc.calls, id)
	cc.mu.Unlock()
}

func (cc *clientConn) readLoop() error {
	for {
		payload, err := readFrame(cc.br, cc.c.cfg.MaxFrameBytes)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("peer closed the connection: %w", err)
			}
			return err
		}
		env, err := decodeEnvelope(payload)
		if err == nil && env.Flags&flagResponse == 0 {
			err = fmt.Errorf("%w: flags %#x from a server", errMalformed, env.Flags)
		}
		if err != nil {
			return err
		}
		cc.mu.Lock()
		ch := cc.calls[env.ID]
		delete(cc.calls, env.ID)
		cc.mu.Unlock()
		if ch == nil {
			continue // its Call gave up
		}
		if env.Flags&flagError != 0 {
			var msg string
			if Decode(env.Body, &msg) != nil {
				msg = string(env.Body)
			}
			ch <- result{err: &RemoteError{Peer: cc.peer, Msg: msg}}
			continue
		}
		ch <- result{body: env.Body}
	}
}
