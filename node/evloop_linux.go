//go:build linux

package node

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// evLoop serves text or RESP connections from one goroutine with its own epoll set, as
// redis-server does: one epoll_wait finds every connection with input, each is read
// once, its complete requests run and their replies are written at once. A goroutine
// per connection costs, per request, a read that returns EAGAIN, a park and a wake-up
// (docs/performance.md, "Event loops").
//
// When nothing is ready the loop blocks in epoll_wait itself (wait); the Go scheduler
// hands its processor to other goroutines meanwhile (sysmon). The loop's reads, writes
// and polls never block and skip the scheduler's system-call bookkeeping.
//
// On a cluster node a request may wait for a peer (a forward to its key's owner, an
// invalidation fanned out), which would stall every connection of the loop for that
// round trip. While the node knows of no other member (a one-node cluster, the default
// `tagcache server`), nothing waits and the loop runs requests itself; otherwise it hands
// each connection's batch of requests to a goroutine (offload) and takes the connection
// back when the batch has run.
//
// The connection's life follows the goroutine servers' contract (connServer): idle
// timeout covering reads and writes, refusing step, end-of-stream and linger, reset at
// the shutdown timeout.
type evLoop struct {
	srv   *connServer
	epfd  int
	wake  int // eventfd: new connections, closing, abort
	file  *os.File
	raw   syscall.RawConn
	start time.Time

	mu      sync.Mutex
	pending []*loopConn // connections handed over, not yet registered
	resumed []*loopConn // connections whose offloaded requests have run
	closing bool        // refuse, then close every connection
	abort   bool        // reset every connection now
	exited  bool        // run has ended; its descriptors are closed

	// local reports whether every request can run here without waiting for a peer
	// (nil: always, a standalone node); when it cannot, requests are offloaded.
	local        func() bool
	resumedSpare []*loopConn
	busy         int // connections offloaded
	conns        map[int]*loopConn
	events       [256]syscall.EpollEvent
	deadline     time.Time      // set on file; zero: none
	sweepAt      time.Duration  // next idle check
	stopping     bool           // closing seen: the loop ends with its last connection
	wall         time.Time      // when the current round of events began
	discard      [16 << 10]byte // lingering connections' input
}

// Connection states.
const (
	loopOpen      = iota
	loopRefusing  // answering every command with a refusal until until
	loopDraining  // the refusing step is over: sending the replies left, reading nothing
	loopLingering // write side shut, discarding input until EOF or until
)

type loopConn struct {
	fd         int
	h          connHandler
	out        outbox
	state      int
	until      time.Duration // end of the refusing or lingering step
	lastIO     time.Duration // last read or write progress
	interest   uint32        // events registered
	registered bool          // in the epoll set
	busy       bool          // its requests run on a goroutine (offload); the loop leaves it alone
	reset      bool          // reset it when its goroutine hands it back
	eof        bool          // the client will send nothing more
	quit       bool          // close once the replies are sent (QUIT, protocol error)
	runFirst   bool          // refusing, but requests read earlier are still buffered: run them
	stop       func() bool   // run's stop: replies stuck, or a peer may be waited for; allocated once
}

// outbox is a connection's writer: it writes straight to the socket and keeps what the
// socket did not take, for the loop to send when it becomes writable.
type outbox struct {
	fd  int
	buf []byte // buf[off:] waits for the socket
	off int
	err error // the socket failed; the connection is closed
}

// maxOutboxKeep is the largest outbox buffer kept once it has drained.
const maxOutboxKeep = 64 << 10

// send writes p until the socket takes no more and returns what is left.
func (o *outbox) send(p []byte) []byte {
	for len(p) > 0 {
		w, errno := rawWrite(o.fd, p)
		switch errno {
		case 0:
			p = p[w:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return p
		default:
			o.err = errno
			return nil
		}
	}
	return p
}

func (o *outbox) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.blocked() {
		o.buf = append(o.buf, p...)
		return len(p), nil
	}
	left := o.send(p)
	if o.err != nil {
		return 0, o.err
	}
	o.buf, o.off = append(o.buf[:0], left...), 0
	return len(p), nil
}

// blocked reports whether replies are waiting for the socket (or it failed): the
// connection's requests wait too, so a client that does not read cannot make the node
// buffer without bound.
func (o *outbox) blocked() bool { return o.off < len(o.buf) || o.err != nil }

// discard drops the replies waiting for the socket (the connection is being ended).
func (o *outbox) discard() { o.buf, o.off = nil, 0 }

// drain writes what is waiting; it reports whether the socket took anything.
func (o *outbox) drain() bool {
	if o.err != nil || o.off == len(o.buf) {
		return false
	}
	before := len(o.buf) - o.off
	left := o.send(o.buf[o.off:])
	o.off = len(o.buf) - len(left)
	if o.off == len(o.buf) {
		if cap(o.buf) > maxOutboxKeep {
			o.buf = nil
		} else {
			o.buf = o.buf[:0]
		}
		o.off = 0
	}
	return len(left) < before
}

// fdReader reads a non-blocking socket; EAGAIN comes back as an error.
type fdReader int

func (fd fdReader) Read(p []byte) (int, error) {
	for {
		n, errno := rawRead(int(fd), p)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
}

func newEvLoop(srv *connServer) (*evLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil, errno
	}
	l := &evLoop{srv: srv, epfd: epfd, wake: int(wake), start: time.Now(), conns: make(map[int]*loopConn)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wake, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(l.wake)}); err != nil {
		l.closeFDs()
		return nil, err
	}
	// A non-blocking descriptor given to os.NewFile joins Go's poller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		l.closeFDs()
		return nil, err
	}
	l.file = os.NewFile(uintptr(epfd), "evloop")
	if l.raw, err = l.file.SyscallConn(); err != nil {
		l.closeFDs()
		return nil, err
	}
	return l, nil
}

// loopsSupported: this system has event loops.
const loopsSupported = true

// dupFD returns a duplicate of c's descriptor (non-blocking, as Go's are), which stays
// open when c is closed.
func dupFD(c net.Conn) (int, error) {
	sc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := raw.Control(func(s uintptr) {
		fd, err = dupCloexec(int(s))
	})
	if cerr != nil {
		return -1, cerr
	}
	return fd, err
}

func dupCloexec(fd int) (int, error) {
	nfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

func closeFD(fd int) { syscall.Close(fd) }

// closeFDs releases the loop's descriptors (when run ends, or a loop that never ran).
func (l *evLoop) closeFDs() {
	if l.file != nil {
		l.file.Close() // it owns epfd
	} else {
		syscall.Close(l.epfd)
	}
	syscall.Close(l.wake)
}

func (l *evLoop) clock() time.Duration { return time.Since(l.start) }

// add hands a connection's descriptor (non-blocking, owned by the loop from now on) to
// the loop, with the protocol state newHandler makes for it.
func (l *evLoop) add(fd int, newHandler func(io.Writer) connHandler) {
	c := &loopConn{fd: fd, out: outbox{fd: fd}}
	c.h = newHandler(&c.out)
	c.stop = func() bool { return c.out.blocked() || l.local != nil && !l.local() }
	l.mu.Lock()
	exited := l.exited
	if !exited {
		l.pending = append(l.pending, c)
	}
	l.mu.Unlock()
	if exited { // cannot happen: a loop ends only after its server stopped accepting
		closeFD(fd)
		c.h.done()
		l.srv.loopConnClosed()
		return
	}
	l.signal()
}

// startClosing makes every connection refuse, then close (shutdown).
func (l *evLoop) startClosing() {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.signal()
}

// resetAll resets every connection (the shutdown timeout ran out).
func (l *evLoop) resetAll() {
	l.mu.Lock()
	l.abort = true
	l.mu.Unlock()
	l.signal()
}

// signal wakes the loop up for its control requests. A loop that has ended has closed
// its eventfd, whose number may belong to another descriptor by now: it is not written.
func (l *evLoop) signal() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.exited {
		one := [8]byte{1}
		syscall.Write(l.wake, one[:])
	}
}

// run serves until the loop has been closed and has no connection left.
func (l *evLoop) run() {
	defer func() {
		l.mu.Lock()
		l.exited = true
		l.mu.Unlock()
		l.closeFDs()
	}()
	idle := l.srv.n.cfg.IdleTimeout
	for {
		n := l.wait()
		l.wall = time.Now()
		now := l.wall.Sub(l.start)
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.wake {
				if l.control(now) {
					return
				}
				continue
			}
			if c := l.conns[fd]; c != nil && !c.busy {
				l.handle(c, ev.Events, now)
			}
		}
		if now >= l.sweepAt {
			l.sweep(now, idle)
		}
		if l.stopping && len(l.conns) == 0 {
			return
		}
	}
}

// wait returns the number of ready events. When none is ready it blocks in epoll_wait
// itself, as redis-server does, until the next timer (a connection's step ending, the
// idle check): on a 2-core machine shared with the load generator that answers requests
// sooner than parking the goroutine in Go's poller, which takes a wake-up of the
// goroutine as well (docs/performance.md). But a goroutine blocked in a system call
// keeps its processor until sysmon takes it back (20 µs, up to 10 ms after quiet
// periods), so the loop parks in Go's poller instead when it has no connection, while
// requests run on offloaded goroutines (they get the processor at once), and on a
// cluster node with peers (gossip probes and the fencing lease must not wait for sysmon).
func (l *evLoop) wait() int {
	if n := epollPoll(l.epfd, l.events[:]); n > 0 {
		return n
	}
	next := l.nextTimer()
	if l.busy > 0 || len(l.conns) == 0 || l.local != nil && !l.local() {
		return l.park(next)
	}
	// Let goroutines this round readied run first: while the loop blocks in the kernel,
	// the Go scheduler gives its processor to them only after sysmon notices (≥ 20 µs).
	runtime.Gosched()
	ms := -1
	if !next.IsZero() {
		ms = max(0, int(time.Until(next)/time.Millisecond)+1)
	}
	for {
		n, err := syscall.EpollWait(l.epfd, l.events[:], ms)
		if err != syscall.EINTR {
			return max(n, 0)
		}
	}
}

// park waits in Go's poller for the loop's epoll set to become readable, or until next.
func (l *evLoop) park(next time.Time) int {
	if !next.Equal(l.deadline) {
		l.file.SetReadDeadline(next)
		l.deadline = next
	}
	n := 0
	err := l.raw.Read(func(fd uintptr) bool {
		n = epollPoll(int(fd), l.events[:])
		return n > 0
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		l.sweepAt = min(l.sweepAt, l.clock())
	} else if err != nil {
		l.srv.n.log.Error("event loop: waiting for events failed", "error", err)
		time.Sleep(time.Millisecond)
	}
	return n
}

// nextTimer is when the loop must wake up without events (sweepAt), zero when it has no
// connection.
func (l *evLoop) nextTimer() time.Time {
	if len(l.conns) == 0 {
		return time.Time{}
	}
	return l.start.Add(l.sweepAt)
}

// control takes the other goroutines' requests; it returns true when the loop is done.
func (l *evLoop) control(now time.Duration) bool {
	var buf [8]byte
	syscall.Read(l.wake, buf[:])
	l.mu.Lock()
	pending, resumed, closing, abort := l.pending, l.resumed, l.closing, l.abort
	l.pending, l.resumed = nil, l.resumedSpare[:0]
	l.resumedSpare = resumed
	l.mu.Unlock()
	for _, c := range resumed {
		c.busy = false
		l.busy--
		c.lastIO = now // a batch that waited long for a peer does not count as idle time
		if !c.out.blocked() {
			c.runFirst = false
		}
		if c.reset {
			l.closeNow(c, true)
			continue
		}
		l.after(c, now)
	}
	for _, c := range pending {
		c.lastIO = now
		l.conns[c.fd] = c
		if err := l.setInterest(c, syscall.EPOLLIN); err != nil {
			l.srv.n.log.Warn("event loop: cannot watch a connection", "error", err)
			l.closeNow(c, false)
			continue
		}
		if closing {
			l.refuse(c, now)
		}
	}
	if closing && !l.stopping {
		l.stopping = true
		for _, c := range l.conns {
			if c.state == loopOpen {
				l.refuse(c, now)
			}
		}
	}
	if abort {
		for _, c := range l.conns {
			if c.busy {
				c.reset = true // when its batch returns
			} else {
				l.closeNow(c, true)
			}
		}
	}
	return l.stopping && len(l.conns) == 0
}

// setInterest sets the events the loop waits for on c.
func (l *evLoop) setInterest(c *loopConn, ev uint32) error {
	op := syscall.EPOLL_CTL_MOD
	if !c.registered {
		op = syscall.EPOLL_CTL_ADD
	} else if ev == c.interest {
		return nil
	}
	c.interest, c.registered = ev, true
	return syscall.EpollCtl(l.epfd, op, c.fd, &syscall.EpollEvent{Events: ev, Fd: int32(c.fd)})
}

// handle serves one connection's events.
func (l *evLoop) handle(c *loopConn, ev uint32, now time.Duration) {
	if c.state == loopLingering {
		// One read per event: a client that keeps writing must not hold the loop.
		if _, err := (fdReader(c.fd)).Read(l.discard[:]); err != nil && err != syscall.EAGAIN {
			l.closeNow(c, false)
		}
		return
	}
	if ev&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 && c.out.blocked() {
		// Also on an error or hang-up alone: the write reports it, and the connection
		// is closed, instead of the event firing again and again.
		if c.out.drain() {
			c.lastIO = now
		}
		// The requests held back while the replies were stuck run before anything
		// more is read (the next round reads).
		l.serve(c, now)
		return
	}
	if ev&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 && c.state <= loopRefusing && !c.out.blocked() && !c.eof && !c.quit {
		switch err := c.h.fill(fdReader(c.fd)); {
		case err == nil:
			c.lastIO = now
			c.h.arrived(l.wall)
		case err == syscall.EAGAIN:
		default:
			c.eof = true // EOF or a reset: what was read runs; nothing more comes
		}
	}
	l.serve(c, now)
}

// serve runs what c has buffered (unless its replies are stuck), sends the replies and
// sets what the loop waits for next.
func (l *evLoop) serve(c *loopConn, now time.Duration) {
	if c.state == loopDraining {
		if c.out.err != nil {
			l.closeNow(c, false)
		} else if !c.out.blocked() {
			l.endStream(c, now)
		}
		return
	}
	if !c.quit && !c.out.blocked() {
		if l.local != nil && !l.local() {
			l.offload(c)
			return
		}
		if !c.h.run(c.state == loopRefusing && !c.runFirst, c.stop) {
			c.quit = true
		}
		c.h.flush()
		if !c.out.blocked() {
			c.runFirst = false
		}
		if !c.quit && l.local != nil && !l.local() {
			l.offload(c) // the rest of the batch may wait for a peer
			return
		}
	}
	l.after(c, now)
}

// after sets what the loop waits for on c once its requests have run: its socket to take
// the replies left, its next requests, or nothing (it is closed).
func (l *evLoop) after(c *loopConn, now time.Duration) {
	if c.out.err != nil {
		l.closeNow(c, false)
		return
	}
	blocked := c.out.blocked()
	if (c.quit || c.eof) && !blocked {
		// Everything read has been answered.
		if c.eof {
			l.closeNow(c, false)
		} else {
			l.endStream(c, now)
		}
		return
	}
	ev := uint32(syscall.EPOLLIN)
	if blocked {
		ev = syscall.EPOLLOUT
	}
	if err := l.setInterest(c, ev); err != nil {
		l.closeNow(c, false)
	}
}

// offload runs c's buffered requests on a goroutine of their own, because one of them
// may wait for a peer (a command forwarded to its key's owner, an invalidation fanned
// out to the cluster), which would stall every connection of the loop. The loop leaves
// c alone until the goroutine hands it back.
func (l *evLoop) offload(c *loopConn) {
	if c.registered {
		syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
		c.registered = false
	}
	c.busy = true
	l.busy++
	refusing := c.state == loopRefusing && !c.runFirst
	go func() {
		if !c.h.run(refusing, c.out.blocked) {
			c.quit = true
		}
		c.h.flush()
		l.mu.Lock()
		l.resumed = append(l.resumed, c)
		l.mu.Unlock()
		l.signal()
	}()
}

// refuse starts c's refusing step (see refuseTime).
func (l *evLoop) refuse(c *loopConn, now time.Duration) {
	if c.state == loopOpen {
		c.state = loopRefusing
		// Requests read before and held back while replies were stuck still run:
		// only what arrives from now on is refused.
		c.runFirst = c.out.blocked()
		l.setUntil(c, now+refuseTime)
	}
}

// setUntil sets the end of c's current step and makes the loop wake up for it.
func (l *evLoop) setUntil(c *loopConn, at time.Duration) {
	c.until = at
	l.sweepAt = min(l.sweepAt, at)
}

// endStream sends end-of-stream and lingers (connServer.closeConn).
func (l *evLoop) endStream(c *loopConn, now time.Duration) {
	if syscall.Shutdown(c.fd, syscall.SHUT_WR) != nil {
		l.closeNow(c, false)
		return
	}
	c.state = loopLingering
	l.setUntil(c, now+lingerTime)
	if err := l.setInterest(c, syscall.EPOLLIN); err != nil {
		l.closeNow(c, false)
	}
}

// closeNow closes c's descriptor; reset sends a reset instead of end-of-stream.
func (l *evLoop) closeNow(c *loopConn, reset bool) {
	if reset {
		syscall.SetsockoptLinger(c.fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	}
	syscall.Close(c.fd) // also leaves the epoll set
	delete(l.conns, c.fd)
	c.h.done()
	l.srv.loopConnClosed()
}

// sweep ends the steps that are over, and starts refusing on connections idle for the
// idle timeout (or ends the stream of those whose replies have been stuck that long: the
// idle timeout covers writes too).
func (l *evLoop) sweep(now, idle time.Duration) {
	l.sweepAt = now + loopSweepEvery(idle)
	for _, c := range l.conns {
		switch {
		case c.busy:
		case c.state == loopOpen && idle > 0 && now-c.lastIO >= idle:
			if c.out.blocked() {
				// Replies stuck for the idle timeout: the client is not reading.
				c.out.discard()
				l.endStream(c, now)
				continue
			}
			l.refuse(c, now)
			l.serve(c, now)
		case c.state == loopRefusing && now >= c.until:
			c.state = loopDraining
			l.serve(c, now)
		case c.state == loopDraining && idle > 0 && now-c.lastIO >= idle:
			// The client has not read its replies for the idle timeout. Else they wait
			// for it (the goroutine servers' writes do the same); at shutdown, its
			// timeout resets the connection.
			c.out.discard()
			l.endStream(c, now)
		case c.state == loopLingering && now >= c.until:
			l.closeNow(c, false)
		case c.state == loopRefusing || c.state == loopLingering:
			l.sweepAt = min(l.sweepAt, c.until)
		}
	}
}

// loopSweepEvery is how often a loop looks for idle connections: a connection idle for
// IdleTimeout is refused within IdleTimeout/8 (at most a second) after it.
func loopSweepEvery(idle time.Duration) time.Duration {
	return min(max(idle/8, 10*time.Millisecond), time.Second)
}

// epollPoll returns the ready events without waiting. It never blocks, so it skips the
// scheduler's system call bookkeeping (RawSyscall), as do the socket reads and writes.
func epollPoll(epfd int, events []syscall.EpollEvent) int {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking descriptor.
func rawRead(fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}

func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(n), errno
}
