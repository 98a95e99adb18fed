package node

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpNewConns tracks the HTTP connections that have not sent a request yet (state
// StateNew), so that Shutdown can close them.
//
// http.Server.Shutdown closes idle keep-alive connections at once but waits for a new
// connection until it is 5 seconds old, in case a request is on its way. Clients open
// such connections without using them: Go's Transport, when a request waits for a
// connection, dials one and, if an idle one frees up first, parks the new one in its pool
// unused. Shutdown then sat out the whole 5 seconds (or its deadline) for nothing.
// A connection that has sent nothing through the shutdown delay is treated as idle.
type httpNewConns struct {
	mu    sync.Mutex
	since map[net.Conn]time.Time // accepted at
}

// track is the server's ConnState hook.
func (t *httpNewConns) track(c net.Conn, s http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s == http.StateNew {
		if t.since == nil {
			t.since = make(map[net.Conn]time.Time)
		}
		t.since[c] = time.Now()
		return
	}
	delete(t.since, c)
}

// closeQuiet closes the connections that have sent nothing for quiet since they were
// accepted.
func (t *httpNewConns) closeQuiet(quiet time.Duration) {
	t.mu.Lock()
	var old []net.Conn
	for c, at := range t.since {
		if time.Since(at) >= quiet {
			old = append(old, c)
			delete(t.since, c)
		}
	}
	t.mu.Unlock()
	for _, c := range old {
		c.Close()
	}
}

// shutdownHTTP is http.Server.Shutdown that also closes, every 50 ms, the connections that
// have sent no request for quiet.
func shutdownHTTP(ctx context.Context, srv *http.Server, conns *httpNewConns, quiet time.Duration) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			conns.closeQuiet(quiet)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return srv.Shutdown(ctx)
}

// minQuietHTTP is how long a new HTTP connection may stay silent during a shutdown without
// a shutdown delay before it is closed as idle.
const minQuietHTTP = 200 * time.Millisecond
