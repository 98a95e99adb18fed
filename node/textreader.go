package node

import (
	"bytes"
	"io"
)

// textReader frames text-protocol lines out of one connection's input. It owns the read
// buffer; a line it returns is a slice of that buffer, valid until the next fill. A line
// longer than the limit is dropped as it arrives (the buffer never grows past the
// limit) and reported once, when its end arrives.
type textReader struct {
	buf      []byte // buf[r:w] is read and not yet consumed
	r, w     int
	scan     int  // bytes from r already searched for '\n'
	skipping bool // dropping a line that is too long, up to its '\n'
}

// textMinRead is the free space kept for each read.
const textMinRead = 4 << 10

func newTextReader() *textReader { return &textReader{buf: make([]byte, textReadBuffer)} }

// next returns the next complete line, its "\n" or "\r\n" included, or nil when none is
// buffered. tooLong reports a line longer than limit bytes (terminator excluded) that
// was dropped: the caller owes the client an error for it.
func (t *textReader) next(limit int) (line []byte, tooLong bool) {
	i := bytes.IndexByte(t.buf[t.r+t.scan:t.w], '\n')
	if i < 0 {
		switch {
		case t.skipping:
			t.r, t.scan = t.w, 0
		case t.w-t.r > limit+1: // +1: a final '\r' may be half of a "\r\n"
			t.skipping = true
			t.r, t.scan = t.w, 0
		default:
			t.scan = t.w - t.r
		}
		return nil, false
	}
	end := t.r + t.scan + i + 1
	line = t.buf[t.r:end]
	t.r, t.scan = end, 0
	if t.skipping {
		t.skipping = false
		return nil, true
	}
	if lineLen(nil, line) > limit {
		return nil, true
	}
	return line, false
}

// fill reads once from src into the buffer, first making room for at least textMinRead
// bytes (moving the unconsumed bytes to the front, or growing the buffer for a long line).
func (t *textReader) fill(src io.Reader) error {
	if t.r == t.w {
		t.r, t.w = 0, 0
		if len(t.buf) > 4*textReadBuffer {
			t.buf = make([]byte, textReadBuffer) // do not keep a large buffer for an idle connection
		}
	}
	if len(t.buf)-t.w < textMinRead {
		if n := t.w - t.r; t.r > 0 && len(t.buf)-n >= textMinRead {
			copy(t.buf, t.buf[t.r:t.w])
		} else {
			nb := make([]byte, 2*len(t.buf))
			copy(nb, t.buf[t.r:t.w])
			t.buf = nb
		}
		t.w -= t.r
		t.r = 0
	}
	n, err := readOnce(src, t.buf[t.w:])
	t.w += n
	return err
}

// readOnce reads once from src into p. Data read wins over an error, which the next read
// returns again; a read of nothing without an error is io.ErrNoProgress.
func readOnce(src io.Reader, p []byte) (int, error) {
	n, err := src.Read(p)
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return 0, err
}
