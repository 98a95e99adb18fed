package clustertests

// The history a workload records: every operation a client performed, with what it sent,
// what came back, and when it was invoked and completed. The checker (checker.go) judges
// a history; tests also build histories by hand to prove that it can fail.

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Protocol is the client protocol an operation went over.
type Protocol uint8

const (
	ProtoText Protocol = iota // the TagCache text protocol
	ProtoRESP                 // the Redis protocol
	ProtoHTTP                 // the JSON HTTP API
	numProtocols
)

func (p Protocol) String() string {
	switch p {
	case ProtoText:
		return "text"
	case ProtoRESP:
		return "resp"
	case ProtoHTTP:
		return "http"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// OpKind is what an operation does.
type OpKind uint8

const (
	OpPut       OpKind = iota // write Value with Tags under Key
	OpAdd                     // write Value with Tags under Key if absent
	OpIncr                    // add By to the integer under Key (absent: By); Tags != nil replace the tags
	OpDel                     // remove Key
	OpGet                     // read Key
	OpInvTag                  // remove every entry carrying Tag, on every node
	OpKeysByTag               // list the keys carrying Tag, across the cluster
	numOpKinds
)

var opKindNames = [numOpKinds]string{"PUT", "ADD", "INCR", "DEL", "GET", "INV_TAG", "KEYS_BY_TAG"}

func (k OpKind) String() string {
	if k < numOpKinds {
		return opKindNames[k]
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// isWrite reports whether an operation of kind k may change a key's value.
func (k OpKind) isWrite() bool {
	return k == OpPut || k == OpAdd || k == OpIncr || k == OpDel || k == OpInvTag
}

// Status is how an operation ended.
type Status uint8

const (
	// StatusOK: the node answered; Found, Value, Count and Keys hold the answer.
	StatusOK Status = iota
	// StatusError: the node answered with an error (text ERR, RESP -ERR, HTTP 4xx/5xx or
	// {"ok":false}). A write that failed may still have taken effect; a read has none.
	StatusError
	// StatusUnknown: no answer (the deadline passed, the connection broke, the reply
	// made no sense). The operation may or may not have taken effect, at any time after
	// it was invoked.
	StatusUnknown
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusError:
		return "error"
	case StatusUnknown:
		return "unknown"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Op is one operation of a history.
type Op struct {
	Client int      // the client that performed it (a client performs one at a time)
	Node   string   // the node it was sent to (Endpoint.Name)
	Proto  Protocol // the protocol it went over
	Kind   OpKind

	// Input.
	Key   string   // PUT, ADD, INCR, DEL, GET
	Tag   string   // INV_TAG, KEYS_BY_TAG
	Value string   // PUT, ADD: the value written, unique in the history
	Tags  []string // PUT, ADD: the entry's tags; INCR: new tags (nil: keep the entry's)
	By    int64    // INCR

	// Output, when Status is StatusOK.
	Status Status
	Found  bool     // GET: a hit; ADD: added; DEL: removed a live entry
	Result string   // GET: the value read; INCR: the resulting integer
	Count  int      // INV_TAG: entries removed
	Keys   []string // KEYS_BY_TAG
	Err    string   // StatusError, StatusUnknown: what went wrong

	// Invoke is when the client began sending the operation, Complete when it had the
	// answer or gave up. Both come from time.Now, so they carry the monotonic clock.
	Invoke, Complete time.Time
}

// acknowledged reports whether op is a write the cluster acknowledged as applied: a PUT,
// an ADD that added, an INCR, a DEL or an INV_TAG that answered without error.
func (op *Op) acknowledged() bool {
	if op.Status != StatusOK {
		return false
	}
	switch op.Kind {
	case OpAdd:
		return op.Found
	case OpPut, OpIncr, OpDel, OpInvTag:
		return true
	}
	return false
}

// describe prints op for evidence, with times relative to base.
func (op *Op) describe(base time.Time) string {
	return op.what() + fmt.Sprintf(" [%s → %s] → %s", relTime(op.Invoke, base), relTime(op.Complete, base), op.resultString())
}

// summary prints op without its times.
func (op *Op) summary() string { return op.what() + " → " + op.resultString() }

// what prints who performed op, where, and its input.
func (op *Op) what() string {
	var b strings.Builder
	fmt.Fprintf(&b, "client %d %s/%s %s", op.Client, op.Node, op.Proto, op.Kind)
	switch op.Kind {
	case OpPut, OpAdd:
		fmt.Fprintf(&b, " %s %q", op.Key, op.Value)
		if len(op.Tags) > 0 {
			fmt.Fprintf(&b, " tags=%s", strings.Join(op.Tags, ","))
		}
	case OpIncr:
		fmt.Fprintf(&b, " %s by %d", op.Key, op.By)
		if len(op.Tags) > 0 {
			fmt.Fprintf(&b, " tags=%s", strings.Join(op.Tags, ","))
		}
	case OpDel, OpGet:
		fmt.Fprintf(&b, " %s", op.Key)
	case OpInvTag, OpKeysByTag:
		fmt.Fprintf(&b, " %s", op.Tag)
	}
	return b.String()
}

// resultString prints op's outcome.
func (op *Op) resultString() string {
	switch op.Status {
	case StatusError:
		return "error: " + op.Err
	case StatusUnknown:
		return "unknown: " + op.Err
	}
	switch op.Kind {
	case OpPut:
		return "OK"
	case OpAdd:
		if op.Found {
			return "added"
		}
		return "exists"
	case OpIncr:
		return op.Result
	case OpDel:
		if op.Found {
			return "deleted"
		}
		return "not found"
	case OpGet:
		if op.Found {
			return fmt.Sprintf("%q", op.Result)
		}
		return "miss"
	case OpInvTag:
		return fmt.Sprintf("removed %d", op.Count)
	case OpKeysByTag:
		return "[" + strings.Join(op.Keys, ",") + "]"
	}
	return "?"
}

func relTime(t, base time.Time) string {
	return fmt.Sprintf("+%.6fs", t.Sub(base).Seconds())
}

// History is every operation of a workload run. It is safe for concurrent use.
type History struct {
	mu    sync.Mutex // protects start and ops
	start time.Time  // the run's start; the zero time: the earliest invocation
	ops   []Op
	// notRun counts operations a closing node refused without running them, which the
	// clients resent (they are not in ops).
	notRun int
}

// NotRun is how many operations a closing node refused without running them, and were
// resent to another node.
func (h *History) NotRun() int { return h.notRun }

// newHistory returns an empty history of a run that starts at start.
func newHistory(start time.Time) *History { return &History{start: start} }

// add appends ops to h.
func (h *History) add(ops ...Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, ops...)
}

// Len returns the number of operations in h.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Ops returns h's operations ordered by invocation time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	slices.SortStableFunc(ops, func(a, b Op) int { return a.Invoke.Compare(b.Invoke) })
	return ops
}

// Start returns the time evidence is printed relative to: the run's start, or the
// earliest invocation of a history built by hand.
func (h *History) Start() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.start.IsZero() {
		return h.start
	}
	var first time.Time
	for _, op := range h.ops {
		if first.IsZero() || op.Invoke.Before(first) {
			first = op.Invoke
		}
	}
	return first
}

// HitRatio returns the share of the GETs answered without error that found a value, or
// -1 when there were none.
func (h *History) HitRatio() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	gets, hits := 0, 0
	for _, op := range h.ops {
		if op.Kind == OpGet && op.Status == StatusOK {
			gets++
			if op.Found {
				hits++
			}
		}
	}
	if gets == 0 {
		return -1
	}
	return float64(hits) / float64(gets)
}

// hitRatio is h.HitRatio, for the scenario tables.
func hitRatio(h *History) float64 { return h.HitRatio() }
