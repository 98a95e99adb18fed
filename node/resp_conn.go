package node

import (
	"bufio"
	"errors"
	"net"
	"os"
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
	return s
}

// serveConn runs one connection until EOF, an error, QUIT, the idle timeout or shutdown.
// Each round reads what the client sent, runs every complete request in it and writes
// all the replies at once.
func (s *respServer) serveConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	ss := &respSession{
		srv:    s,
		rw:     respWriter{w: bufio.NewWriterSize(c, respReadBuffer)},
		id:     s.nextID.Add(1),
		auth:   sessionAuth{ok: !s.n.tcpAuth},
		counts: newTally(s.cmds),
	}
	defer ss.counts.flush()
	rd := newRESPReader(s.maxBulk, s.maxRequest)
	ss.mark = s.clock()
	idle := s.n.cfg.IdleTimeout
	var deadlineAt time.Duration // s.clock() when the deadline was last pushed back
	armed := false               // the deadline has been set once
	refusing := false            // closing: commands get respRefusal (see refuseTime)
	for {
		ran := 0
		for {
			args, err := rd.next(ss.auth.valid(s.n.auth))
			if err == errRESPIncomplete {
				break
			}
			if err != nil {
				ss.rw.error("ERR Protocol error: " + err.Error())
				ss.rw.w.Flush()
				s.commands.Add(uint64(ran))
				return
			}
			if refusing {
				ss.rw.error(respRefusal)
				continue
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
		if !refusing && s.closing.Load() {
			refusing = startRefusing(c)
		}
		if idle > 0 && !refusing {
			// Pushing the deadline back costs a timer update; do it at most every
			// idle/8, so a connection idle for IdleTimeout is always closed and one idle
			// for less than 7/8 of it never is. It covers writes too: a client that does
			// not read its replies is dropped. ss.mark, the last clock read, is at most
			// one batch old.
			if now := ss.mark; !armed || now-deadlineAt > idle/8 {
				c.SetDeadline(s.started.Add(now + idle))
				deadlineAt, armed = now, true
				if s.closing.Load() {
					refusing = startRefusing(c) // shutdown's wake-up may have been overwritten
				}
			}
		}
		if err := rd.fill(c); err != nil {
			if !refusing && errors.Is(err, os.ErrDeadlineExceeded) {
				// Idle timeout or shutdown: answer what is already on its way, then
				// close. A partial request is not run.
				refusing = startRefusing(c)
				continue
			}
			return // EOF, or the refusing time is over
		}
		ss.mark, ss.timing = s.clock(), true
	}
}
