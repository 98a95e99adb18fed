package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// A frame is a 4-byte big-endian payload length followed by the payload. After the
// handshake every payload is an envelope, the msgpack array
//
//	[V, ID, Kind, Flags, Body, Timeout]
//
// V is the protocol version, ID matches a response to its request on one connection,
// Kind says what Body (the msgpack of the kind's message) holds, Timeout is how many
// milliseconds the caller waits for the reply (0: not said).
const frameHeader = 4

type flags uint8

const (
	flagRequest  flags = 1 << iota // a request; the peer answers with a response
	flagResponse                   // a response to the request with the same ID
	flagError                      // with flagResponse: Body is the msgpack string of an error
)

type envelope struct {
	V       uint8
	ID      uint64
	Kind    uint16
	Flags   flags
	Body    []byte
	Timeout uint32 // milliseconds
}

var (
	errMalformed = errors.New("malformed frame")
	// errVersion: the envelope decoded up to Flags but its version is not spoken here.
	errVersion = errors.New("unsupported protocol version")
)

// readFrame reads one frame's payload. A length over max is refused before anything is
// allocated, so a peer announcing 4 GiB costs nothing.
func readFrame(r io.Reader, max int) ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: peer announced %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// encodeFrame returns the frame holding the msgpack array written by enc.
func encodeFrame(sizeHint int, encode func(*msgpack.Encoder) error) []byte {
	var buf bytes.Buffer
	buf.Grow(frameHeader + 32 + sizeHint)
	buf.Write(make([]byte, frameHeader))
	enc := msgpack.GetEncoder()
	enc.Reset(&buf)
	_ = encode(enc) // writes to a bytes.Buffer do not fail
	msgpack.PutEncoder(enc)
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b, uint32(len(b)-frameHeader))
	return b
}

func (e *envelope) frame() []byte {
	return encodeFrame(len(e.Body), func(enc *msgpack.Encoder) error {
		return errors.Join(
			enc.EncodeArrayLen(6),
			enc.EncodeUint(uint64(e.V)),
			enc.EncodeUint(e.ID),
			enc.EncodeUint(uint64(e.Kind)),
			enc.EncodeUint(uint64(e.Flags)),
			enc.EncodeBytes(e.Body),
			enc.EncodeUint(uint64(e.Timeout)),
		)
	})
}

// errorFrame returns the error response to request id.
func errorFrame(v uint8, id uint64, kind uint16, msg string) []byte {
	body, _ := msgpack.Marshal(msg)
	e := envelope{V: v, ID: id, Kind: kind, Flags: flagResponse | flagError, Body: body}
	return e.frame()
}

// payloadDecoder reads msgpack from one payload. Byte strings are returned as slices of
// the payload after checking that they fit in it, so a length field never drives an
// allocation (msgpack's own DecodeBytes allocates whatever length it reads).
type payloadDecoder struct {
	payload []byte
	r       *bytes.Reader
	d       *msgpack.Decoder
}

var payloadDecoders = sync.Pool{New: func() any {
	p := &payloadDecoder{r: bytes.NewReader(nil)}
	p.d = msgpack.NewDecoder(p.r) // a bytes.Reader is an io.ByteScanner: no read-ahead
	return p
}}

// newPayloadDecoder returns a pooled decoder of payload; release returns it.
func newPayloadDecoder(payload []byte) *payloadDecoder {
	p := payloadDecoders.Get().(*payloadDecoder)
	p.payload = payload
	p.r.Reset(payload)
	p.d.ResetReader(p.r)
	return p
}

func (p *payloadDecoder) release() {
	p.payload = nil
	p.r.Reset(nil)
	payloadDecoders.Put(p)
}

func (p *payloadDecoder) arrayLen() (int, error) { return p.d.DecodeArrayLen() }

func (p *payloadDecoder) uint(max uint64) (uint64, error) {
	c, err := p.d.PeekCode()
	if err != nil {
		return 0, err
	}
	var v uint64
	if c >= 0xe0 || c >= 0xd0 && c <= 0xd3 { // negative fixint, int8..int64
		i, err := p.d.DecodeInt64()
		if err != nil {
			return 0, err
		}
		if i < 0 {
			return 0, fmt.Errorf("%w: negative integer %d", errMalformed, i)
		}
		v = uint64(i)
	} else if v, err = p.d.DecodeUint64(); err != nil {
		return 0, err
	}
	if v > max {
		return 0, fmt.Errorf("%w: integer %d over %d", errMalformed, v, max)
	}
	return v, nil
}

// bytes returns the next bin or str as a slice of the payload (nil for msgpack nil).
func (p *payloadDecoder) bytes() ([]byte, error) {
	n, err := p.d.DecodeBytesLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, nil
	}
	if n > p.r.Len() {
		return nil, fmt.Errorf("%w: %d-byte string in %d remaining bytes", errMalformed, n, p.r.Len())
	}
	off := len(p.payload) - p.r.Len()
	if _, err := p.r.Seek(int64(n), io.SeekCurrent); err != nil {
		return nil, err
	}
	return p.payload[off : off+n : off+n], nil
}

func (p *payloadDecoder) end() error {
	if p.r.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errMalformed, p.r.Len())
	}
	return nil
}

// decodeEnvelope decodes a frame payload. Body is a slice of payload. When the version
// is not spoken here it returns errVersion with V, ID, Kind and Flags set, so that the
// caller can reply to the request.
func decodeEnvelope(payload []byte) (envelope, error) {
	var e envelope
	p := newPayloadDecoder(payload)
	defer p.release()
	n, err := p.arrayLen()
	if err != nil {
		return e, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if n < 4 {
		return e, fmt.Errorf("%w: envelope of %d fields", errMalformed, n)
	}
	var v, id, kind, fl uint64
	for _, f := range []struct {
		dst *uint64
		max uint64
	}{{&v, math.MaxUint8}, {&id, math.MaxUint64}, {&kind, math.MaxUint16}, {&fl, math.MaxUint8}} {
		if *f.dst, err = p.uint(f.max); err != nil {
			return e, fmt.Errorf("%w: %v", errMalformed, err)
		}
	}
	e.V, e.ID, e.Kind, e.Flags = uint8(v), id, uint16(kind), flags(fl)
	if e.V < MinVersion || e.V > Version {
		return e, fmt.Errorf("%w: %d (this peer speaks %d..%d)", errVersion, e.V, MinVersion, Version)
	}
	if n != 6 {
		return e, fmt.Errorf("%w: version %d envelope of %d fields, want 6", errMalformed, e.V, n)
	}
	if e.Body, err = p.bytes(); err != nil {
		return e, fmt.Errorf("%w: body: %v", errMalformed, err)
	}
	t, err := p.uint(math.MaxUint32)
	if err != nil {
		return e, fmt.Errorf("%w: timeout: %v", errMalformed, err)
	}
	e.Timeout = uint32(t)
	switch e.Flags {
	case flagRequest, flagResponse, flagResponse | flagError:
	default:
		return e, fmt.Errorf("%w: flags %#x", errMalformed, e.Flags)
	}
	return e, p.end()
}

// writeLoop writes the frames queued on out until done is closed or a write fails. It
// takes every frame already queued before it flushes, so replies produced together
// leave in one write; when the queue is empty it first yields once, so that goroutines
// about to queue a frame (handlers finishing, callers sending) get in the same write.
// On a loaded node this halves the writes, which are most of a forwarded request's cost
// (docs/performance.md); on an idle one it costs a scheduler round.
func writeLoop(conn net.Conn, out <-chan []byte, done <-chan struct{}, timeout time.Duration) error {
	bw := bufio.NewWriterSize(conn, 64<<10)
	for {
		var f []byte
		select {
		case f = <-out:
		case <-done:
			return nil
		}
		yielded := false
	batch:
		for {
			if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
				return err
			}
			if _, err := bw.Write(f); err != nil {
				return err
			}
			select {
			case f = <-out:
			default:
				if yielded {
					break batch
				}
				yielded = true
				runtime.Gosched()
				select {
				case f = <-out:
				default:
					break batch
				}
			}
		}
		if err := bw.Flush(); err != nil {
			return err
		}
	}
}
