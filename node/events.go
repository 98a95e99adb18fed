package node

import (
	"sync"
	"time"
)

// maxEvents bounds the membership events a node remembers for GET /cluster/events; the
// oldest are forgotten first.
const maxEvents = 100

// clusterEvent is one change this node saw: a member joined, left, failed or updated its
// metadata, or the ring changed.
type clusterEvent struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`             // join, leave, fail, update, ring
	Member string    `json:"member,omitempty"` // the member, for the membership kinds
	Detail string    `json:"detail,omitempty"` // e.g. the ring's version and members
}

// eventLog keeps the last maxEvents events. add is called from memberlist's goroutines
// (under its node lock), so it only appends under a mutex.
type eventLog struct {
	mu   sync.Mutex // protects the fields below
	buf  []clusterEvent
	next int // where the next event goes once buf is full
	now  func() time.Time
}

func newEventLog() *eventLog { return &eventLog{now: time.Now} }

func (l *eventLog) add(kind, member, detail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := clusterEvent{Time: l.now().UTC(), Kind: kind, Member: member, Detail: detail}
	if len(l.buf) < maxEvents {
		l.buf = append(l.buf, e)
		return
	}
	l.buf[l.next] = e
	l.next = (l.next + 1) % maxEvents
}

// recent returns up to limit events, newest first.
func (l *eventLog) recent(limit int) []clusterEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]clusterEvent, 0, min(limit, len(l.buf)))
	for i := 0; i < len(l.buf) && len(out) < limit; i++ {
		// Newest is just before next (or the last appended while filling).
		j := (l.next - 1 - i + 2*len(l.buf)) % len(l.buf)
		out = append(out, l.buf[j])
	}
	return out
}
