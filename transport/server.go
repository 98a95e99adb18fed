package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Handler answers one request of a kind from peer (its proven name). body and the
// returned reply are the msgpack of the kind's messages. An error goes back to the
// caller as a *RemoteError. ctx is done when the caller's deadline passes, the
// connection drops or the Server closes; a handler must return then.
type Handler func(ctx context.Context, peer string, kind uint16, body []byte) (reply []byte, err error)

// Server accepts peer connections and runs the handler registered for each request's
// kind, each request on its own goroutine.
type Server struct {
	cfg    Config
	log    hclog.Logger
	ctx    context.Context // done on Close
	cancel context.CancelFunc

	hmu      sync.RWMutex // protects handlers
	handlers map[uint16]Handler

	mu        sync.Mutex // protects listeners, conns, closed and wg.Add
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup // Listen's Serve loops and one serveConn per connection
}

// NewServer returns a server with no handlers and no listener.
func NewServer(cfg Config) (*Server, error) {
	cfg, err := cfg.complete()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel,
		handlers:  map[uint16]Handler{},
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
	}, nil
}

// Handle registers h for requests of kind, replacing any earlier one; a nil h removes it.
// Requests of a kind with no handler get an error reply.
func (s *Server) Handle(kind uint16, h Handler) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if h == nil {
		delete(s.handlers, kind)
	} else {
		s.handlers[kind] = h
	}
}

func (s *Server) handler(kind uint16) Handler {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	return s.handlers[kind]
}

// Listen listens on the TCP address addr and serves it in the background until Close.
// It returns the address listened on (the port chosen, for ":0").
func (s *Server) Listen(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	if !s.spawn(func() { _ = s.Serve(ln) }) {
		ln.Close()
		return nil, ErrClosed
	}
	return ln.Addr(), nil
}

// Serve accepts connections on ln until Close, which closes ln. It returns ErrClosed
// after Close, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var delay time.Duration // after a failed Accept, as net/http does
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "addr", ln.Addr(), "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.ctx.Done():
				return ErrClosed
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return ErrClosed
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(conn)
		}()
		s.mu.Unlock()
	}
}

// spawn runs f on a goroutine that Close waits for, unless the server is closed.
func (s *Server) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Close stops accepting, closes every connection, cancels the handlers' contexts and
// waits for every goroutine the server started, handlers included.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// numConns reports the open connections (for tests).
func (s *Server) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// serveConn runs one connection: the handshake, then a reader (this goroutine) that
// starts a handler goroutine per request, at most MaxInFlight at once, and a writer
// goroutine that sends the replies. It returns when all three kinds have stopped.
func (s *Server) serveConn(conn net.Conn) {
	remote := conn.RemoteAddr().String()
	defer func() {
		conn.Close()
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
	}()

	br := bufio.NewReaderSize(conn, 64<<10)
	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	peer, _, err := handshake(conn, br, &s.cfg, roleAcceptor)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("peer refused", "remote", remote, "error", err)
		}
		return
	}
	_ = conn.SetDeadline(time.Time{})
	log := s.log.With("peer", peer, "remote", remote)
	log.Debug("peer connected")

	ctx, cancel := context.WithCancel(s.ctx)
	out := make(chan []byte, s.cfg.MaxInFlight)
	var wg sync.WaitGroup // the writer and the handlers of this connection
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := writeLoop(conn, out, ctx.Done(), s.cfg.WriteTimeout); err != nil && ctx.Err() == nil {
			log.Warn("write failed; closing connection", "error", err)
		}
		cancel()
		conn.Close() // stops the reader
	}()
	defer func() {
		cancel()
		conn.Close()
		wg.Wait()
	}()

	send := func(frame []byte) {
		select {
		case out <- frame:
		case <-ctx.Done():
		}
	}
	sem := make(chan struct{}, s.cfg.MaxInFlight)
	for {
		payload, err := readFrame(br, s.cfg.MaxFrameBytes)
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, ErrFrameTooLarge):
				log.Error("oversized frame; closing connection", "error", err)
			case errors.Is(err, io.EOF):
				log.Debug("peer disconnected")
			default:
				log.Warn("read failed; closing connection", "error", err)
			}
			return
		}
		env, err := decodeEnvelope(payload)
		if errors.Is(err, errVersion) && env.Flags == flagRequest {
			send(errorFrame(Version, env.ID, env.Kind, err.Error()))
			continue
		}
		if err == nil && env.Flags != flagRequest {
			err = fmt.Errorf("%w: flags %#x from a client", errMalformed, env.Flags)
		}
		if err != nil {
			log.Error("bad frame; closing connection", "error", err)
			return
		}
		h := s.handler(env.Kind)
		if h == nil {
			send(errorFrame(env.V, env.ID, env.Kind, fmt.Sprintf("unknown kind %d", env.Kind)))
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			send(s.run(ctx, log, peer, h, &env))
			<-sem
		}()
	}
}

// run runs h for one request and returns the response frame.
func (s *Server) run(ctx context.Context, log hclog.Logger, peer string, h Handler, req *envelope) []byte {
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout)*time.Millisecond)
		defer cancel()
	}
	reply, err := safeCall(ctx, log, h, peer, req)
	if err != nil {
		return errorFrame(req.V, req.ID, req.Kind, err.Error())
	}
	resp := envelope{V: req.V, ID: req.ID, Kind: req.Kind, Flags: flagResponse, Body: reply}
	f := resp.frame()
	if len(f)-frameHeader > s.cfg.MaxFrameBytes {
		log.Error("reply too large", "kind", req.Kind, "bytes", len(f)-frameHeader, "limit", s.cfg.MaxFrameBytes)
		return errorFrame(req.V, req.ID, req.Kind, fmt.Sprintf("reply of %d bytes exceeds the frame limit %d", len(f)-frameHeader, s.cfg.MaxFrameBytes))
	}
	return f
}

// safeCall runs h, turning a panic into an error: a bad request never crashes a node.
func safeCall(ctx context.Context, log hclog.Logger, h Handler, peer string, req *envelope) (reply []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("handler panicked", "kind", req.Kind, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler for kind %d panicked: %v", req.Kind, p)
		}
	}()
	return h(ctx, peer, req.Kind, req.Body)
}
