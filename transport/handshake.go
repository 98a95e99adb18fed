package transport

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/vmihailenco/msgpack/v5"
)

// The handshake runs before any envelope, in frames of at most maxHandshakeFrame bytes:
//
//	dialer   -> hello [V, Name, Nonce]     <- acceptor sends its hello too
//	dialer   -> proof [MAC, ""]
//	acceptor -> proof [MAC, ""] if the dialer's MAC checks, else [nil, reason] and close
//
// MAC = HMAC-SHA256(cluster key, proofLabel || role || peer's nonce || own nonce || own
// name), role 'D' for the dialer and 'A' for the acceptor. Both fresh nonces bind a proof
// to one connection and the role stops a proof from being replayed in the other
// direction, so a peer without the key cannot borrow one from a node it also connects to.
// The acceptor checks before it proves anything, so it is never an oracle.
const (
	proofLabel        = "tagcache-transport-v1"
	nonceBytes        = 32
	maxHandshakeFrame = 1024
)

type role byte

const (
	roleDialer   role = 'D'
	roleAcceptor role = 'A'
)

func (r role) other() role {
	if r == roleDialer {
		return roleAcceptor
	}
	return roleDialer
}

type hello struct {
	V     uint8
	Name  string
	Nonce [nonceBytes]byte
}

type proof struct {
	MAC []byte
	Err string // the acceptor's refusal, sent instead of a MAC
}

var errBadProof = errors.New("peer failed to prove it holds the cluster key")

func (h *hello) frame() []byte {
	return encodeFrame(len(h.Name)+nonceBytes, func(enc *msgpack.Encoder) error {
		return errors.Join(enc.EncodeArrayLen(3), enc.EncodeUint(uint64(h.V)), enc.EncodeString(h.Name), enc.EncodeBytes(h.Nonce[:]))
	})
}

func (p *proof) frame() []byte {
	return encodeFrame(len(p.MAC)+len(p.Err), func(enc *msgpack.Encoder) error {
		return errors.Join(enc.EncodeArrayLen(2), enc.EncodeBytes(p.MAC), enc.EncodeString(p.Err))
	})
}

func decodeHello(payload []byte) (hello, error) {
	var h hello
	p := newPayloadDecoder(payload)
	defer p.release()
	n, err := p.arrayLen()
	if err != nil || n < 3 {
		return h, fmt.Errorf("%w: hello: %d fields, %v", errMalformed, n, err)
	}
	v, err := p.uint(math.MaxUint8)
	if err != nil {
		return h, fmt.Errorf("%w: hello version: %v", errMalformed, err)
	}
	h.V = uint8(v)
	name, err := p.bytes()
	if err != nil || len(name) == 0 || len(name) > maxNameBytes {
		return h, fmt.Errorf("%w: hello name of %d bytes, %v", errMalformed, len(name), err)
	}
	h.Name = string(name)
	nonce, err := p.bytes()
	if err != nil || len(nonce) != nonceBytes {
		return h, fmt.Errorf("%w: hello nonce of %d bytes, %v", errMalformed, len(nonce), err)
	}
	copy(h.Nonce[:], nonce)
	// A later version may append fields; this one reads none of them, and the frame bound
	// keeps what it skips small.
	return h, nil
}

func decodeProof(payload []byte) (proof, error) {
	var pr proof
	p := newPayloadDecoder(payload)
	defer p.release()
	n, err := p.arrayLen()
	if err != nil || n != 2 {
		return pr, fmt.Errorf("%w: proof: %d fields, %v", errMalformed, n, err)
	}
	if pr.MAC, err = p.bytes(); err != nil || len(pr.MAC) > sha256.Size {
		return pr, fmt.Errorf("%w: proof MAC of %d bytes, %v", errMalformed, len(pr.MAC), err)
	}
	msg, err := p.bytes()
	if err != nil {
		return pr, fmt.Errorf("%w: proof refusal: %v", errMalformed, err)
	}
	pr.Err = string(msg)
	return pr, p.end()
}

func proofMAC(key []byte, r role, peerNonce, ownNonce [nonceBytes]byte, ownName string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(proofLabel))
	m.Write([]byte{byte(r)})
	m.Write(peerNonce[:])
	m.Write(ownNonce[:])
	m.Write([]byte(ownName))
	return m.Sum(nil)
}

// handshake runs the handshake on a connection whose deadline the caller has set; rw
// writes to the connection, br reads from it (and keeps whatever the peer sent after its
// last handshake frame). It returns the peer's proven name and the version the
// connection speaks.
func handshake(rw io.Writer, br *bufio.Reader, cfg *Config, r role) (peer string, version uint8, err error) {
	own := hello{V: Version, Name: cfg.Name}
	if _, err := rand.Read(own.Nonce[:]); err != nil {
		return "", 0, err
	}
	if _, err := rw.Write(own.frame()); err != nil {
		return "", 0, err
	}
	b, err := readFrame(br, maxHandshakeFrame)
	if err != nil {
		return "", 0, fmt.Errorf("read hello: %w", err)
	}
	ph, err := decodeHello(b)
	if err != nil {
		return "", 0, err
	}
	if ph.V < MinVersion {
		return "", 0, fmt.Errorf("peer %s speaks protocol version %d, this peer %d..%d", ph.Name, ph.V, MinVersion, Version)
	}
	if ph.Nonce == own.Nonce {
		return "", 0, fmt.Errorf("%w: peer %s echoed our nonce", errBadProof, ph.Name)
	}
	version = min(ph.V, Version)
	mine := proof{MAC: proofMAC(cfg.ClusterKey, r, ph.Nonce, own.Nonce, cfg.Name)}
	want := proofMAC(cfg.ClusterKey, r.other(), own.Nonce, ph.Nonce, ph.Name)

	if r == roleDialer {
		if _, err := rw.Write(mine.frame()); err != nil {
			return "", 0, err
		}
	}
	if b, err = readFrame(br, maxHandshakeFrame); err != nil {
		return "", 0, fmt.Errorf("read proof of %s: %w", ph.Name, err)
	}
	pp, err := decodeProof(b)
	if err != nil {
		return "", 0, err
	}
	if pp.Err != "" {
		return "", 0, fmt.Errorf("%s refused us: %s", ph.Name, pp.Err)
	}
	if !hmac.Equal(pp.MAC, want) {
		if r == roleAcceptor {
			refusal := proof{Err: "cluster key proof refused"}
			_, _ = rw.Write(refusal.frame())
		}
		return "", 0, fmt.Errorf("%w (claimed name %s)", errBadProof, ph.Name)
	}
	if r == roleAcceptor {
		if _, err := rw.Write(mine.frame()); err != nil {
			return "", 0, err
		}
	}
	return ph.Name, version, nil
}
