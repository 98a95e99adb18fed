package node

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// respServer serves the Redis protocol for a node. Its connection handling mirrors
// textServer: one goroutine per connection, every buffered request run before the
// batch's replies are written at once, a connection limit, an idle timeout, accept
// errors retried with backoff, and a graceful shutdown.
type respServer struct {
	now        func() time.Time  // the store's clock, for EXAT/PXAT and TTLs
	maxBulk    int               // longest bulk string accepted
	maxRequest int               // most bytes one request may span
	cmds       []*CommandMetrics // by command index; respUnknown for unknown commands
	started    time.Time         // for uptime, and the origin of clock

	connServer // accept loop, connection limit and set, shutdown; counts for INFO

	nextID   atomic.Int64  // CLIENT ID
	commands atomic.Uint64 // requests run (INFO), counted per batch
}

// clock returns the monotonic time since the server started; one cheap clock read.
func (s *respServer) clock() time.Duration { return time.Since(s.started) }

func newRESPServer(n *Node) *respServer {
	cc := n.store.Config()
	// A bulk string is a key, a value or a tag list, plus slack for the other arguments.
	maxBulk := max(cc.MaxValueBytes, cc.MaxKeyBytes, cc.MaxTags*(cc.MaxTagBytes+1)) + 4096
	s := &respServer{
		connServer: newConnServer(n, "resp", []byte("-ERR max number of clients reached\r\n")),
		now:        cc.Now,
		maxBulk:    maxBulk,
		maxRequest: max(respMinRequestMax, 2*maxBulk+respMaxInline),
		cmds:       make([]*CommandMetrics, len(respCommands)+1),
		started:    time.Now(),
	}
	for i, c := range respCommands {
		s.cmds[i] = n.metrics.Command("resp", c.name)
	}
	s.cmds[respUnknown] = n.metrics.Command("resp", "unknown")
	s.newHandler = s.newConn
	return s
}

// newSession starts a connection's state; replies go to w.
func (s *respServer) newSession(w io.Writer) *respSession {
	return &respSession{
		srv:    s,
		rw:     respWriter{w: bufio.NewWriterSize(w, respReadBuffer)},
		id:     s.nextID.Add(1),
		auth:   sessionAuth{ok: !s.n.tcpAuth},
		counts: newTally(s.cmds),
		mark:   s.clock(),
	}
}

// serveConn serves one connection from its own goroutine (connServer.serveGoroutine).
func (s *respServer) serveConn(c net.Conn) { s.serveGoroutine(c, s.newConn(c)) }

// runBuffered runs every complete request rd holds (answering each with respRefusal
// when refusing), appending the replies to ss.rw, and publishes the batch's counts. It
// stops early when stop (nil: never) returns true, leaving the rest buffered. It returns
// false when the connection must close once the replies are flushed: a protocol error,
// QUIT, too many failed AUTHs.
func (ss *respSession) runBuffered(rd *respReader, refusing bool, stop func() bool) bool {
	s := ss.srv
	ran := 0
	defer func() {
		if ran > 0 {
			s.commands.Add(uint64(ran))
			ss.counts.flush()
		}
	}()
	for stop == nil || !stop() {
		args, err := rd.next(ss.auth.valid(s.n.auth))
		if err == errRESPIncomplete {
			break
		}
		if err != nil {
			ss.rw.error("ERR Protocol error: " + err.Error())
			return false
		}
		if refusing {
			ss.rw.error(respRefusal)
			continue
		}
		ran++
		if !ss.exec(args) {
			return false
		}
	}
	return true
}

// respConn is one RESP connection's protocol state, for either driver (a goroutine or
// an event loop).
type respConn struct {
	ss *respSession
	rd *respReader
}

// newConn starts a connection whose replies go to w.
func (s *respServer) newConn(w io.Writer) connHandler {
	return &respConn{ss: s.newSession(w), rd: newRESPReader(s.maxBulk, s.maxRequest)}
}

func (h *respConn) fill(src io.Reader) error { return h.rd.fill(src) }
func (h *respConn) arrived(now time.Time) {
	h.ss.mark, h.ss.timing = now.Sub(h.ss.srv.started), true
}
func (h *respConn) run(refusing bool, stop func() bool) bool {
	return h.ss.runBuffered(h.rd, refusing, stop)
}
func (h *respConn) flush() error { return h.ss.rw.w.Flush() }
func (h *respConn) done()        { h.ss.counts.flush() }
