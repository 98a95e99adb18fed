package node

import (
	"errors"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// Message kinds of the peer transport (docs/cluster.md, "Peer messages"). Numbers are
// part of the wire protocol: never reuse one.
const (
	kindKeyOp          uint16 = 1  // a forwarded key command: keyOp → keyReply
	kindInvalidate     uint16 = 2  // INV_*/FLUSH fan-out: invalidateReq → invalidateReply
	kindStats          uint16 = 3  // statsReq → statsReply
	kindKeysByTag      uint16 = 4  // keysByTagReq → keysReply
	kindTags           uint16 = 5  // tagsReq → tagsReply
	kindScan           uint16 = 6  // scanReq → scanReply
	kindHandoffBegin   uint16 = 7  // handoffReq (no entries) → handoffReply
	kindHandoffEntries uint16 = 8  // handoffReq with entries → handoffReply
	kindHandoffCommit  uint16 = 9  // handoffReq → handoffReply
	kindWhoHolds       uint16 = 10 // whoHoldsReq → whoHoldsReply
	kindPing           uint16 = 11 // pingReq → pingReply: the peer transport works end to end
	kindSeries         uint16 = 12 // seriesReq → seriesPeerReply: the dashboard's request samples
)

// Key operations carried by keyOp.Op.
const (
	opGet uint8 = iota + 1
	opGetEntry
	opPut
	opAdd
	opSet
	opSetTTL
	opIncr
	opDecr
	opDel
)

// keyOp is a key command forwarded to the node that holds the key's partition. Hop
// counts the forwards so far; a node past maxHops refuses instead of passing it on.
type keyOp struct {
	Op      uint8         `msgpack:"o"`
	Hop     uint8         `msgpack:"h"`
	Key     string        `msgpack:"k"`
	Value   []byte        `msgpack:"v,omitempty"`
	TTL     time.Duration `msgpack:"t,omitempty"`
	Tags    []string      `msgpack:"g,omitempty"`
	Delta   int64         `msgpack:"d,omitempty"`
	KeepTTL bool          `msgpack:"kt,omitempty"`
	Mode    uint8         `msgpack:"m,omitempty"`
	// Deadline (unix ns, the first forwarding node's clock): past it, plus
	// forwardDeadlineSkew, the command is refused unrun (handleKeyOp).
	Deadline int64 `msgpack:"dl,omitempty"`
}

// keyReply is the answer to a keyOp. Err codes rebuild the cache package's errors on the
// caller, so the client sees the same reply wherever the key lives.
type keyReply struct {
	OK     bool       `msgpack:"ok,omitempty"` // found / stored / existed
	Int    int64      `msgpack:"n,omitempty"`
	Value  []byte     `msgpack:"v,omitempty"`
	HadOld bool       `msgpack:"ho,omitempty"`
	Entry  *wireEntry `msgpack:"e,omitempty"`
	Err    *wireError `msgpack:"err,omitempty"`
}

// wireEntry is a cache.Entry on the wire.
type wireEntry struct {
	Key      string   `msgpack:"k"`
	Value    []byte   `msgpack:"v"`
	Tags     []string `msgpack:"g,omitempty"`
	Stamp    uint64   `msgpack:"s"`
	ExpireAt int64    `msgpack:"x,omitempty"`
	Created  int64    `msgpack:"c,omitempty"`
}

func toWire(e cache.Entry) wireEntry {
	return wireEntry{Key: e.Key, Value: e.Value, Tags: e.Tags, Stamp: e.Stamp, ExpireAt: e.ExpireAt, Created: e.Created}
}

func (w *wireEntry) entry() cache.Entry {
	return cache.Entry{Key: w.Key, Value: w.Value, Tags: w.Tags, Stamp: w.Stamp, ExpireAt: w.ExpireAt, Created: w.Created}
}

// wireError carries an error with enough structure to rebuild the sentinel it wraps.
type wireError struct {
	Code  uint8  `msgpack:"c"`
	Msg   string `msgpack:"m"`
	What  string `msgpack:"w,omitempty"`
	Limit int64  `msgpack:"l,omitempty"`
	Unit  string `msgpack:"u,omitempty"`
}

const (
	errCodeOther uint8 = iota
	errCodeNotInteger
	errCodeOverflow
	errCodeEmptyKey
	errCodeLimit
	errCodeUnavailable // routing, fencing, unreachable owner: retryable
)

func encodeError(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Msg: err.Error()}
	var le *cache.LimitError
	switch {
	case errors.Is(err, cache.ErrNotInteger):
		w.Code = errCodeNotInteger
	case errors.Is(err, cache.ErrOverflow):
		w.Code = errCodeOverflow
	case errors.Is(err, cache.ErrEmptyKey):
		w.Code = errCodeEmptyKey
	case errors.As(err, &le):
		w.Code, w.What, w.Limit, w.Unit = errCodeLimit, le.What, le.Limit, le.Unit
	case errors.Is(err, ErrUnavailable):
		w.Code = errCodeUnavailable
	}
	return w
}

func (w *wireError) decode() error {
	if w == nil {
		return nil
	}
	switch w.Code {
	case errCodeNotInteger:
		return cache.ErrNotInteger
	case errCodeOverflow:
		return cache.ErrOverflow
	case errCodeEmptyKey:
		return cache.ErrEmptyKey
	case errCodeLimit:
		return &cache.LimitError{What: w.What, Limit: w.Limit, Unit: w.Unit}
	case errCodeUnavailable:
		return &unavailableError{w.Msg}
	}
	return errors.New(w.Msg)
}

// Invalidation operations carried by invalidateReq.Op.
const (
	invTagsAny uint8 = iota + 1
	invTagsAll
	invKeys
	invFlush
)

// invalidateReq is one invalidation fanned out to every member. Members lists the nodes
// the sender knows it reaches (itself included), so that a receiver relays the
// invalidation to members the sender does not know of (a node that just joined).
type invalidateReq struct {
	Op      uint8    `msgpack:"o"`
	Tags    []string `msgpack:"g,omitempty"`
	Keys    []string `msgpack:"k,omitempty"`
	Stamp   uint64   `msgpack:"s"`
	Members []string `msgpack:"m"`
	// Via lists the members that relayed this copy, in order: none relays to a member
	// already on it, so relays to handoff receivers cannot go round in a circle.
	Via []string `msgpack:"v,omitempty"`
}

type invalidateReply struct {
	Count int `msgpack:"n"`
}

type statsReq struct{}

type statsReply struct {
	Stats cache.Stats `msgpack:"s"`
}

type keysByTagReq struct {
	Tag   string `msgpack:"t"`
	Limit int    `msgpack:"l"`
}

type keysReply struct {
	Keys []string `msgpack:"k"`
}

type tagsReq struct {
	Limit int `msgpack:"l"`
}

type tagsReply struct {
	Tags []cache.TagCount `msgpack:"t"`
}

// scanReq asks a member for its own entries whose key starts with Prefix (a cluster
// scan walks members in name order).
type scanReq struct {
	Cursor string `msgpack:"c"`
	Limit  int    `msgpack:"l"`
	Prefix string `msgpack:"p,omitempty"`
}

type scanReply struct {
	Entries []wireEntry `msgpack:"e"`
	Next    string      `msgpack:"n"`
}

// handoffReq moves partition P from the sender (its holder) to the receiver.
type handoffReq struct {
	P       int         `msgpack:"p"`
	Entries []wireEntry `msgpack:"e,omitempty"`
}

type handoffReply struct {
	Imported int `msgpack:"n"`
}

// whoHoldsReq asks a member which of partitions P it holds (it is their authority).
type whoHoldsReq struct {
	P []int `msgpack:"p"`
}

type whoHoldsReply struct {
	Held []int `msgpack:"h"`
	// Owners[i] is the owner of P[i] in the answering member's ring: a partition nobody
	// holds is claimed only when every member agrees who owns it.
	Owners []string `msgpack:"o,omitempty"`
	// Members is the answering member's view (sorted names): a partition is claimed
	// only when every member sees the same members, or a member the claimer does not
	// see yet may hold it (absent in replies of older versions).
	Members []string `msgpack:"m,omitempty"`
}

type pingReq struct{}

// pingReply says who answered and the ring it routes by.
type pingReply struct {
	Name        string `msgpack:"n"`
	RingVersion uint64 `msgpack:"r"`
}

// seriesReq asks a member for its request samples of the seconds Since+1 … UpTo.
type seriesReq struct {
	Since int64 `msgpack:"s"`
	UpTo  int64 `msgpack:"u"`
}

// seriesPeerReply holds a member's samples and its latency buckets' upper bounds (s).
type seriesPeerReply struct {
	Bounds  []float64      `msgpack:"b"`
	Samples []seriesSample `msgpack:"p"`
}
