package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// respServer serves the Redis protocol for a node. Its connection handling mirrors
// textServer: one goroutine per connection, every buffered request run before the
// batch's replies are written at once, a connection limit, an idle timeout, accept
// errors retried with backoff, and a graceful shutdown.
type respServer struct {
	n          *Node
	now        func() time.Time  // the store's clock, for EXAT/PXAT and TTLs
	maxBulk    int               // longest bulk string accepted
	maxRequest int               // most bytes one request may span
	cmds       []*CommandMetrics // by command index; respUnknown for unknown commands
	started    time.Time         // for uptime, and the origin of clock

	closing atomic.Bool
	mu      sync.Mutex            // protects conns
	conns   map[net.Conn]struct{} // open connections
	active  sync.WaitGroup        // connection goroutines
	count   atomic.Int64          // open connections

	nextID   atomic.Int64  // CLIENT ID
	accepted atomic.Uint64 // connections accepted (INFO)
	rejected atomic.Uint64 // connections refused at the limit (INFO)
	commands atomic.Uint64 // requests run (INFO), counted per batch
}

// clock returns the monotonic time since the server started; one cheap clock read.
func (s *respServer) clock() time.Duration { return time.Since(s.started) }

func newRESPServer(n *Node) *respServer {
	cc := n.store.Config()
	// A bulk string is a key, a value or a tag list, plus slack for the other arguments.
	maxBulk := max(cc.MaxValueBytes, cc.MaxKeyBytes, cc.MaxTags*(cc.MaxTagBytes+1)) + 4096
	s := &respServer{
		n:          n,
		now:        cc.Now,
		maxBulk:    maxBulk,
		maxRequest: max(respMinRequestMax, 2*maxBulk+respMaxInline),
		cmds:       make([]*CommandMetrics, len(respCommands)+1),
		started:    time.Now(),
		conns:      make(map[net.Conn]struct{}),
	}
	for i, c := range respCommands {
		s.cmds[i] = n.metrics.Command("resp", c.name)
	}
	s.cmds[respUnknown] = n.metrics.Command("resp", "unknown")
	return s
}

// serve accepts connections until ln is closed. An accept error that is not the
// listener's closing is logged and retried with backoff.
func (s *respServer) serve(ln net.Listener) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.n.log.Warn("resp accept failed; retrying", "error", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.count.Load() >= int64(s.n.cfg.MaxConnections) {
			s.rejected.Add(1)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte("-ERR max number of clients reached\r\n"))
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.accepted.Add(1)
		go s.handle(c)
	}
}

func (s *respServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.count.Add(1)
	s.active.Add(1)
	return true
}

func (s *respServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.count.Add(-1)
	s.active.Done()
}

// shutdown makes every connection run the requests it has already read, flush the
// replies and close; connections still open when ctx ends are closed. It may be called
// more than once, concurrently.
func (s *respServer) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for c := range s.conns {
		c.SetReadDeadline(time.Now()) // a blocked read returns; buffered requests still run
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return fmt.Errorf("resp: connections still open at shutdown were closed: %w", ctx.Err())
	}
}

func (s *respServer) handle(c net.Conn) {
	defer s.untrack(c)
	s.serveConn(c)
}

// serveConn runs one connection until EOF, an error, QUIT, the idle timeout or shutdown.
// Each round reads what the client sent, runs every complete request in it and writes
// all the replies at once.
func (s *respServer) serveConn(c net.Conn) {
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	ss := &respSession{
		srv:    s,
		rw:     respWriter{w: bufio.NewWriterSize(c, respReadBuffer)},
		id:     s.nextID.Add(1),
		authed: !s.n.tcpAuth,
		counts: newTally(s.cmds),
	}
	defer ss.counts.flush()
	rd := newRESPReader(s.maxBulk, s.maxRequest)
	ss.mark = s.clock()
	idle := s.n.cfg.IdleTimeout
	var deadlineAt time.Duration // s.clock() when the deadline was last pushed back
	armed := false               // the deadline has been set once
	for {
		ran := 0
		for {
			args, err := rd.next(ss.authed)
			if err == errRESPIncomplete {
				break
			}
			if err != nil {
				ss.rw.error("ERR Protocol error: " + err.Error())
				ss.rw.w.Flush()
				s.commands.Add(uint64(ran))
				return
			}
			ran++
			if !ss.exec(args) {
				ss.counts.flush()
				ss.rw.w.Flush()
				s.commands.Add(uint64(ran))
				return
			}
		}
		if ran > 0 {
			s.commands.Add(uint64(ran))
			ss.counts.flush()
		}
		if ss.rw.w.Buffered() > 0 {
			if err := ss.rw.w.Flush(); err != nil {
				return
			}
		}
		if s.closing.Load() {
			return
		}
		if idle > 0 {
			// Pushing the deadline back costs a timer update; do it at most every
			// idle/8, so a connection idle for IdleTimeout is always closed and one idle
			// for less than 7/8 of it never is. It covers writes too: a client that does
			// not read its replies is dropped. ss.mark, the last clock read, is at most
			// one batch old.
			if now := ss.mark; !armed || now-deadlineAt > idle/8 {
				c.SetDeadline(s.started.Add(now + idle))
				deadlineAt, armed = now, true
				if s.closing.Load() {
					return // shutdown's wake-up may have been overwritten
				}
			}
		}
		if err := rd.fill(c); err != nil {
			return // EOF, idle timeout or shutdown: a partial request is not run
		}
		ss.mark, ss.timing = s.clock(), true
	}
}
