package node

import (
	"context"
	"errors"
	"fmt"
	"net"
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
}

func newConnServer(n *Node, name string, refusal []byte) connServer {
	return connServer{n: n, name: name, refusal: refusal, conns: make(map[net.Conn]struct{})}
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
		if s.count.Load() >= int64(s.n.cfg.MaxConnections) {
			s.rejected.Add(1)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write(s.refusal)
			c.Close()
			continue
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.accepted.Add(1)
		go func() {
			defer s.untrack(c)
			serveConn(c)
			s.closeConn(c)
		}()
	}
}

func (s *connServer) track(c net.Conn) bool {
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
		s.mu.Unlock()
		<-done
		return fmt.Errorf("%s: connections still open at shutdown were closed: %w", s.name, ctx.Err())
	}
}
