package node

import (
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// errShuttingDown ends a connection's read loop when the node is shutting down.
var errShuttingDown = errors.New("node shutting down")

// deadlineConn arms a fresh deadline before every read and every write of a client
// connection, so a connection is closed only after idle of silence (or of a peer that
// stops reading), however long it stays busy. Once closing is set it stops reading:
// Shutdown sets closing and then a past read deadline on every connection, and the
// re-check after arming the deadline closes the gap between the two.
type deadlineConn struct {
	net.Conn
	idle    time.Duration // 0: no deadline
	closing *atomic.Bool
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.idle > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	if c.closing.Load() {
		return 0, errShuttingDown
	}
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.idle > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Write(p)
}
