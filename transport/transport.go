// Package transport carries requests between the peers of a TagCache cluster: msgpack
// frames over TCP, many requests in flight per connection, a small pool of connections
// per peer, and a handshake in which both sides prove they hold the cluster key.
//
// A node runs one Server (handlers registered per message kind) and one Client (Call
// to a peer address). The package knows nothing of what the kinds mean: bodies are
// bytes, encoded and decoded by the caller (Encode, Decode, CallTyped, HandleTyped).
// docs/transport.md describes the wire format.
package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"
)

// Protocol versions this build speaks. A connection runs at the lower of the two peers'
// highest versions; a peer whose highest version is below MinVersion is refused.
const (
	Version    = 1
	MinVersion = 1
)

// Config shapes a Server or a Client. Zero fields take the defaults below, except Name
// and ClusterKey, which the node must set.
type Config struct {
	// Name is this node's name (the memberlist node name), sent in the handshake. A
	// server's handlers see the caller's name as peer. Required, at most 255 bytes.
	Name string
	// ClusterKey is the shared secret every peer proves it holds (HMAC-SHA256) before any
	// request is read. Required unless AllowNoKey is set.
	ClusterKey []byte
	// AllowNoKey permits an empty ClusterKey: the handshake still runs, with an empty
	// key, so any peer that also has no key is accepted. For tests and a single machine.
	AllowNoKey bool
	// MaxFrameBytes bounds one frame (the msgpack envelope after the 4-byte length). A
	// peer announcing a larger frame is disconnected; a Call whose body does not fit
	// fails with ErrFrameTooLarge. Every node should use the same value.
	MaxFrameBytes int
	// HandshakeTimeout bounds dialing plus the handshake, on both sides.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one write to a connection; a peer that stops reading for longer
	// is disconnected.
	WriteTimeout time.Duration
	// MaxInFlight bounds the requests a server runs at once for one connection; past it
	// the server stops reading that connection (back-pressure). It also sizes each
	// connection's write queue.
	MaxInFlight int
	// ConnsPerPeer is how many connections a client keeps to each peer.
	ConnsPerPeer int
	// RequestTimeout is the deadline of a Call whose context has none.
	RequestTimeout time.Duration
	// MaxPending bounds the Calls in progress to one peer (queued or awaiting a reply);
	// past it Call fails at once with ErrBusy.
	MaxPending int
	// ReconnectMin and ReconnectMax bound the backoff after a failed dial: it starts at
	// ReconnectMin and doubles up to ReconnectMax. During it, Calls to that peer fail
	// fast with ErrUnreachable.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// Logger receives connection events: refused peers, oversized or malformed frames,
	// lost connections, failed dials. Default: hclog.Default() named "transport".
	Logger hclog.Logger
	// OnCall, if set, is called after every Client.Call with the peer address, the kind,
	// how long the Call took and its error (nil when the peer replied). It runs on the
	// caller's goroutine, so it must be quick and must not block. The node records its
	// peer request latencies from it.
	OnCall func(addr string, kind uint16, took time.Duration, err error)
}

// Defaults of Config.
const (
	DefaultMaxFrameBytes    = 8 << 20
	DefaultHandshakeTimeout = 2 * time.Second
	DefaultWriteTimeout     = 2 * time.Second
	DefaultMaxInFlight      = 256
	DefaultConnsPerPeer     = 2
	DefaultRequestTimeout   = 2 * time.Second
	DefaultMaxPending       = 4096
	DefaultReconnectMin     = 50 * time.Millisecond
	DefaultReconnectMax     = 2 * time.Second
)

// maxNameBytes bounds Config.Name and the name a peer announces.
const maxNameBytes = 255

// DefaultConfig returns the defaults with the node's name and cluster key.
func DefaultConfig(name string, clusterKey []byte) Config {
	return Config{
		Name: name, ClusterKey: clusterKey,
		MaxFrameBytes: DefaultMaxFrameBytes, HandshakeTimeout: DefaultHandshakeTimeout,
		WriteTimeout: DefaultWriteTimeout, MaxInFlight: DefaultMaxInFlight,
		ConnsPerPeer: DefaultConnsPerPeer, RequestTimeout: DefaultRequestTimeout,
		MaxPending: DefaultMaxPending, ReconnectMin: DefaultReconnectMin, ReconnectMax: DefaultReconnectMax,
	}
}

// complete fills zero fields with defaults and checks the result.
func (cfg Config) complete() (Config, error) {
	d := DefaultConfig(cfg.Name, cfg.ClusterKey)
	setDefault(&cfg.MaxFrameBytes, d.MaxFrameBytes)
	setDefault(&cfg.HandshakeTimeout, d.HandshakeTimeout)
	setDefault(&cfg.WriteTimeout, d.WriteTimeout)
	setDefault(&cfg.MaxInFlight, d.MaxInFlight)
	setDefault(&cfg.ConnsPerPeer, d.ConnsPerPeer)
	setDefault(&cfg.RequestTimeout, d.RequestTimeout)
	setDefault(&cfg.MaxPending, d.MaxPending)
	setDefault(&cfg.ReconnectMin, d.ReconnectMin)
	setDefault(&cfg.ReconnectMax, d.ReconnectMax)
	if cfg.Logger == nil {
		cfg.Logger = hclog.Default().Named("transport")
	}
	switch {
	case cfg.Name == "" || len(cfg.Name) > maxNameBytes:
		return cfg, fmt.Errorf("transport: Name must be 1..%d bytes, got %d", maxNameBytes, len(cfg.Name))
	case len(cfg.ClusterKey) == 0 && !cfg.AllowNoKey:
		return cfg, errors.New("transport: ClusterKey is empty (set AllowNoKey to run without one)")
	case cfg.MaxFrameBytes < 64 || cfg.MaxFrameBytes > 1<<30:
		return cfg, fmt.Errorf("transport: MaxFrameBytes must be 64..1GiB, got %d", cfg.MaxFrameBytes)
	case cfg.MaxInFlight < 0 || cfg.ConnsPerPeer < 0 || cfg.MaxPending < 0:
		return cfg, errors.New("transport: MaxInFlight, ConnsPerPeer and MaxPending must be positive")
	case cfg.ReconnectMin < 0 || cfg.ReconnectMax < cfg.ReconnectMin:
		return cfg, fmt.Errorf("transport: need 0 < ReconnectMin <= ReconnectMax, got %v, %v", cfg.ReconnectMin, cfg.ReconnectMax)
	case cfg.HandshakeTimeout < 0 || cfg.WriteTimeout < 0 || cfg.RequestTimeout < 0:
		return cfg, errors.New("transport: timeouts must be positive")
	}
	if len(cfg.ClusterKey) == 0 {
		cfg.Logger.Warn("no cluster key: any peer without a key is accepted (AllowNoKey)")
	}
	return cfg, nil
}

func setDefault[T int | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// Sentinel errors, for callers to branch on with errors.Is.
var (
	// ErrBusy: too many Calls in progress to the peer (Config.MaxPending).
	ErrBusy = errors.New("transport: peer queue full")
	// ErrUnreachable: no connection to the peer (dial or handshake failed, the peer is in
	// reconnect backoff, or the connection was lost). A request lost with its connection
	// may or may not have run.
	ErrUnreachable = errors.New("transport: peer unreachable")
	// ErrClosed: the Client or Server was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrTimeout: the Call's deadline passed before the reply came. It wraps
	// context.DeadlineExceeded. The request may or may not have run.
	ErrTimeout = fmt.Errorf("transport: request timed out: %w", context.DeadlineExceeded)
	// ErrNotSent marks a failed Call whose request never left this process (no
	// connection, reconnect backoff, queue full, too large, the deadline passed before
	// it was queued): the peer cannot have run it. It is wrapped along with the cause.
	ErrNotSent = errors.New("transport: request not sent")
	// ErrFrameTooLarge: a request or reply does not fit in Config.MaxFrameBytes.
	ErrFrameTooLarge = errors.New("transport: frame too large")
)

// RemoteError is an error returned by the peer's handler, or the peer's refusal of a
// request (unknown kind, unsupported version).
type RemoteError struct {
	Peer string // the peer's name
	Msg  string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("peer %s: %s", e.Peer, e.Msg) }

// notSent wraps the error of a Call that never sent its request (ErrNotSent).
type notSent struct{ error }

func (e notSent) Unwrap() error        { return e.error }
func (e notSent) Is(target error) bool { return target == ErrNotSent }

// Encode returns v in msgpack, the encoding of message bodies.
func Encode(v any) ([]byte, error) { return msgpack.Marshal(v) }

// Decode reads the msgpack body b into v. A body whose headers declare more data than it
// holds is refused before decoding (see checkBounds).
func Decode(b []byte, v any) error {
	if err := checkBounds(b); err != nil {
		return err
	}
	return msgpack.Unmarshal(b, v)
}

// CallTyped encodes req, calls kind at addr and decodes the reply.
func CallTyped[Req, Resp any](ctx context.Context, c *Client, addr string, kind uint16, req Req) (Resp, error) {
	var resp Resp
	body, err := Encode(req)
	if err != nil {
		return resp, fmt.Errorf("call %s kind %d: encode request: %w", addr, kind, err)
	}
	reply, err := c.Call(ctx, addr, kind, body)
	if err != nil {
		return resp, err
	}
	if err := Decode(reply, &resp); err != nil {
		return resp, fmt.Errorf("call %s kind %d: decode reply: %w", addr, kind, err)
	}
	return resp, nil
}

// HandleTyped registers fn for kind on s, decoding requests and encoding replies.
func HandleTyped[Req, Resp any](s *Server, kind uint16, fn func(ctx context.Context, peer string, req Req) (Resp, error)) {
	s.Handle(kind, Typed(fn))
}

// Typed turns fn into a Handler that decodes requests and encodes replies.
func Typed[Req, Resp any](fn func(ctx context.Context, peer string, req Req) (Resp, error)) Handler {
	return func(ctx context.Context, peer string, kind uint16, body []byte) ([]byte, error) {
		var req Req
		if err := Decode(body, &req); err != nil {
			return nil, fmt.Errorf("decode kind %d request: %w", kind, err)
		}
		resp, err := fn(ctx, peer, req)
		if err != nil {
			return nil, err
		}
		return Encode(resp)
	}
}
