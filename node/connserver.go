package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// connServer is what the text and RESP servers share: the accept loop, the connection
// limit, the set of open connections and a graceful shutdown. Each server embeds one and
// supplies what differs: its name, the refusal it writes at the limit, and the function
// that serves one connection.
type connServer struct {
	n       *Node
	name    string // "text protocol" or "resp", for logs and errors
	refusal []byte // written to a connection refused at MaxConnections

	closing  atomic.Bool
	mu       sync.Mutex            // protects conns
	conns    map[net.Conn]struct{} // open connections
	active   sync.WaitGroup        // connection goroutines
	count    atomic.Int64          // open connections
	accepted atomic.Uint64         // connections accepted
	rejected atomic.Uint64         // connections refused at the limit

	// Event loops (Linux), started when the server first listens (startLoops); nil:
	// one goroutine per connection. newHandler makes a connection's protocol state.
	loopsOnce  sync.Once
	loops      []*evLoop
	nextLoop   int // round robin, under mu
	newHandler func(w io.Writer) connHandler
	alone      func() bool // a cluster node's Router.alone; nil on a standalone node
}

func newConnServer(n *Node, name string, refusal []byte) connServer {
	return connServer{n: n, name: name, refusal: refusal, conns: make(map[net.Conn]struct{})}
}

// connHandler is one connection's protocol state (text or RESP), driven either by the
// connection's own goroutine (serveGoroutine) or by an event loop (evLoop).
type connHandler interface {
	// fill reads once from src into the connection's input buffer.
	fill(src io.Reader) error
	// arrived marks the start of a batch, now (its latency is timed from here).
	arrived(now time.Time)
	// run runs the complete requests buffered, answering each with the protocol's
	// closing refusal when refusing, and stops early when stop (nil: never) returns
	// true, leaving the rest buffered. Replies go to the handler's writer, which may
	// write through when it fills. It returns false when the connection must close once
	// its replies are sent (QUIT, a protocol error, too many failed AUTHs).
	run(refusing bool, stop func() bool) bool
	// flush writes the buffered replies.
	flush() error
	// done is called once, when the connection is closed.
	done()
}

// serveGoroutine serves c with h from the calling goroutine until EOF, an error, a
// close request, the idle timeout or shutdown. Each round reads what the client sent,
// runs every complete request in it and writes all the replies at once.
func (s *connServer) serveGoroutine(c net.Conn, h connHandler) {
	defer h.done()
	idle := s.n.cfg.IdleTimeout
	last := time.Now()       // the last batch's arrival
	var deadlineAt time.Time // when the deadline was last pushed back
	armed := false           // the deadline has been set once
	refusing := false        // closing: commands get the refusal (see refuseTime)
	for {
		if !h.run(refusing, nil) {
			h.flush()
			return
		}
		if err := h.flush(); err != nil {
			return
		}
		if !refusing && s.closing.Load() {
			refusing = startRefusing(c)
		}
		// Pushing the deadline back costs a timer update; do it at most every idle/8,
		// so a connection idle for IdleTimeout is always closed and one idle for less
		// than 7/8 of it never is. It covers writes too: a client that does not read
		// its replies is dropped.
		if idle > 0 && !refusing && (!armed || last.Sub(deadlineAt) > idle/8) {
			c.SetDeadline(last.Add(idle))
			deadlineAt, armed = last, true
			if s.closing.Load() {
				refusing = startRefusing(c) // shutdown's wake-up may have been overwritten
			}
		}
		if err := h.fill(c); err != nil {
			if !refusing && errors.Is(err, os.ErrDeadlineExceeded) {
				// Idle timeout or shutdown: answer what is already on its way, then
				// close. A partial request is not run.
				refusing = startRefusing(c)
				continue
			}
			return // EOF, or the refusing time is over
		}
		last = time.Now()
		h.arrived(last)
	}
}

// acceptLoop accepts connections until ln is closed and runs serveConn on each in its own
// goroutine. An accept error that is not the listener's closing is logged and retried
// with backoff: one bad accept never stops the listener.
func (s *connServer) acceptLoop(ln net.Listener, serveConn func(net.Conn)) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.n.log.Warn(s.name+" accept failed; retrying", "error", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true) // replies are written once per batch
		}
		if s.count.Load() >= int64(s.n.cfg.MaxConnections) {
			s.rejected.Add(1)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(s.refusal)
			c.Close()
			continue
		}
		// A cluster node with peers gives new connections goroutines: their requests
		// may wait for a peer, and a loop would have to offload every batch, which
		// costs more (a goroutine, two epoll_ctl and a wake-up per batch).
		if s.loops != nil && (s.alone == nil || s.alone()) {
			if handed, open := s.toLoop(c); handed || !open {
				if !open {
					return
				}
				continue
			}
			// Not a socket (tests' in-memory connections): a goroutine serves it.
		}
		if !s.track(c) {
			c.Close()
			return
		}
		go func() {
			defer s.untrack(c)
			serveConn(c)
			s.closeConn(c)
		}()
	}
}

// startLoops starts the server's event loops (unless Config.Goroutines, or not on
// Linux); if they cannot be made, the server falls back to goroutines. A cluster node
// hands a new connection to a loop only while it knows of no other member
// (Router.alone); a loop runs requests itself only while that holds, and offloads them
// to goroutines otherwise (evLoop.offload).
func (s *connServer) startLoops() {
	s.loopsOnce.Do(func() {
		if s.newHandler == nil || s.n.cfg.Goroutines || !loopsSupported {
			return
		}
		loops := make([]*evLoop, min(max(runtime.GOMAXPROCS(0), 1), maxLoops))
		if s.n.router != nil {
			s.alone = s.n.router.alone
		}
		for i := range loops {
			l, err := newEvLoop(s)
			if err != nil {
				s.n.log.Warn(s.name+": event loop unavailable; one goroutine per connection", "error", err)
				for _, l := range loops[:i] {
					l.closeFDs()
				}
				return
			}
			l.local = s.alone
			loops[i] = l
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closing.Load() {
			for _, l := range loops {
				l.closeFDs()
			}
			return
		}
		for _, l := range loops {
			go l.run()
		}
		s.loops = loops
		s.n.log.Debug(s.name+" serving from event loops", "loops", len(loops))
	})
}

// maxLoops bounds the event loops of one server.
const maxLoops = 64

// toLoop hands c to an event loop. handed is false if c is not a socket the loop can
// take (it is left untouched); open is false when the server is closing.
func (s *connServer) toLoop(c net.Conn) (handed, open bool) {
	fd, err := dupFD(c)
	if err != nil {
		return false, true
	}
	c.Close() // the duplicate keeps the connection open
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.admitLocked(nil) {
		closeFD(fd)
		return true, false
	}
	l := s.loops[s.nextLoop%len(s.loops)]
	s.nextLoop++
	l.add(fd, s.newHandler)
	return true, true
}

// loopConnClosed is called by a loop when one of its connections is closed.
func (s *connServer) loopConnClosed() {
	s.count.Add(-1)
	s.active.Done()
}

func (s *connServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.admitLocked(c)
}

// admitLocked counts a new connection, and remembers c (nil for a loop's connection,
// which its loop tracks), unless the server is closing. The caller holds s.mu.
func (s *connServer) admitLocked(c net.Conn) bool {
	if s.closing.Load() {
		return false
	}
	if c != nil {
		s.conns[c] = struct{}{}
	}
	s.count.Add(1)
	s.active.Add(1)
	s.accepted.Add(1)
	return true
}

func (s *connServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.count.Add(-1)
	s.active.Done()
}

// Closing a connection (shutdown, idle timeout) has two steps, so that a client always
// learns what became of what it sent (docs/protocol.md, "closing"):
//
//   - for refuseTime the connection still reads, and answers every command with a
//     refusal saying it did not run (textRefusal, respRefusal): commands already on
//     their way when the node decided to close get an answer the client can act on;
//   - then closeConn ends the stream and discards late input for up to lingerTime,
//     so the kernel does not reset the connection and destroy replies in flight.
const (
	refuseTime = 200 * time.Millisecond
	lingerTime = 100 * time.Millisecond
)

// The refusals of the closing step, one per command; "command not run" is what clients
// may rely on.
const (
	textRefusal = "ERR connection closing (node shutting down or connection idle): command not run, retry\n"
	respRefusal = "ERR connection closing (node shutting down or connection idle): command not run, retry"
)

// startRefusing starts a connection's refusing step; it returns true.
func startRefusing(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(refuseTime))
	return true
}

// closeConn ends a connection: every request the server read has been answered and
// flushed by now, so it sends end-of-stream (FIN) and then reads and discards whatever
// the client still sends, until the client closes too or lingerTime passes. Closing at
// once with unread input would reset the connection, and a reset can destroy replies
// still in flight to the client (a test saw 15 000 INCRs run whose replies were lost).
func (s *connServer) closeConn(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok || tc.CloseWrite() != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTime))
	var buf [4096]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			break
		}
	}
	c.Close()
}

// abort resets c: a connection cut while a request may be running (the shutdown
// timeout ran out).
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// shutdown makes every connection run the requests it has already read, flush the
// replies and close (closeConn); connections still open when ctx ends are reset. It may
// be called more than once, concurrently.
func (s *connServer) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for c := range s.conns {
		c.SetReadDeadline(time.Now()) // a blocked read returns; buffered requests still run
	}
	for _, l := range s.loops {
		l.startClosing()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			abort(c)
		}
		for _, l := range s.loops {
			l.resetAll()
		}
		s.mu.Unlock()
		<-done
		return fmt.Errorf("%s: connections still open at shutdown were closed: %w", s.name, ctx.Err())
	}
}
