package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// errDeclaredLength: a msgpack header declares more data than the body holds.
var errDeclaredLength = errors.New("msgpack: declared length exceeds the message")

// checkBounds walks the msgpack values in b and fails if any header declares more than
// the bytes left: a string, binary or extension longer than the rest of the body, or an
// array or map with more elements than bytes remain (every element takes at least one).
//
// vmihailenco/msgpack v5.4.1 allocates what a header declares before reading it (binary
// values and slices: vmihailenco/msgpack#401), so a 6-byte body declaring a 4 GiB string
// would allocate 4 GiB. Every body reaches the decoder whole, so bounding every declared
// length by the bytes that follow bounds what decoding can allocate by a small multiple
// of the frame size. The walk is iterative (no recursion, whatever the nesting) and
// allocates nothing.
func checkBounds(b []byte) error {
	pos, pending := 0, 1 // values still to read
	for pending > 0 {
		if pos >= len(b) {
			return errDeclaredLength
		}
		c := b[pos]
		pos++
		pending--
		var skip, elems int // bytes of payload to skip; elements that follow
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			// fixint, nil, bool: the header is the value
		case c <= 0x8f:
			elems = 2 * int(c&0x0f)
		case c <= 0x9f:
			elems = int(c & 0x0f)
		case c <= 0xbf:
			skip = int(c & 0x1f)
		default:
			n, w, ok := lengthField(c, b[pos:])
			if !ok {
				return fmt.Errorf("msgpack: invalid or truncated header 0x%02x at byte %d", c, pos-1)
			}
			pos += w
			switch c {
			case 0xdc, 0xdd:
				elems = n
			case 0xde, 0xdf:
				elems = 2 * n
			default:
				skip = n
			}
		}
		rest := len(b) - pos
		if skip < 0 || elems < 0 || skip > rest || elems > rest || pending+elems > rest {
			return errDeclaredLength
		}
		pos += skip
		pending += elems
	}
	return nil
}

// lengthField decodes the header fields after code c: the payload length (bytes, or
// elements for arrays and maps) and the width of the fields. Fixed-size values report
// their payload as the length.
func lengthField(c byte, b []byte) (n, width int, ok bool) {
	field := func(w int) (int, int, bool) {
		if len(b) < w {
			return 0, 0, false
		}
		switch w {
		case 1:
			return int(b[0]), 1, true
		case 2:
			return int(binary.BigEndian.Uint16(b)), 2, true
		default:
			return int(binary.BigEndian.Uint32(b)), 4, true
		}
	}
	switch c {
	case 0xc4, 0xd9: // bin8, str8
		return field(1)
	case 0xc5, 0xda, 0xdc, 0xde: // bin16, str16, array16, map16
		return field(2)
	case 0xc6, 0xdb, 0xdd, 0xdf: // bin32, str32, array32, map32
		return field(4)
	case 0xc7, 0xc8, 0xc9: // ext8/16/32: the length, then a type byte
		n, w, ok := field(1 << (c - 0xc7)) // 1, 2 or 4 bytes
		return n + 1, w, ok
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return 4, 0, true
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return 8, 0, true
	case 0xcc, 0xd0: // uint8, int8
		return 1, 0, true
	case 0xcd, 0xd1: // uint16, int16
		return 2, 0, true
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: a type byte, then data
		return 1 + 1<<(c-0xd4), 0, true
	}
	return 0, 0, false // 0xc1 is never used
}
