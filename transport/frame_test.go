package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, e := range []envelope{
		{V: Version, ID: 1, Kind: 7, Flags: flagRequest, Body: []byte("body"), Timeout: 2000},
		{V: Version, ID: 1<<64 - 1, Kind: 1<<16 - 1, Flags: flagResponse | flagError, Body: nil},
		{V: Version, ID: 0, Kind: 0, Flags: flagResponse, Body: make([]byte, 70000)},
	} {
		f := e.frame()
		payload, err := readFrame(bytes.NewReader(f), DefaultMaxFrameBytes)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeEnvelope(payload)
		if err != nil {
			t.Fatal(err)
		}
		if got.V != e.V || got.ID != e.ID || got.Kind != e.Kind || got.Flags != e.Flags || got.Timeout != e.Timeout || !bytes.Equal(got.Body, e.Body) {
			t.Fatalf("round trip of %+v gave %+v", e, got)
		}
	}
}

// A length prefix or a byte-string length claiming 4 GiB is refused without allocating it.
func TestLengthClaimsDoNotAllocate(t *testing.T) {
	inputs := map[string]func() error{
		"frame length": func() error {
			_, err := readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}), DefaultMaxFrameBytes)
			return err
		},
		"body length": func() error {
			// [1, 1, 1, 1, bin32 of 4 GiB]
			_, err := decodeEnvelope([]byte{0x96, 1, 1, 1, 1, 0xc6, 0xff, 0xff, 0xff, 0xff, 0})
			return err
		},
		"hello name": func() error {
			_, err := decodeHello([]byte{0x93, 1, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a'})
			return err
		},
	}
	for name, f := range inputs {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := f()
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 64<<10 {
			t.Errorf("%s: allocated %d bytes", name, d)
		}
	}
}

func TestHandshakeMessagesRoundTrip(t *testing.T) {
	h := hello{V: Version, Name: "node-1"}
	h.Nonce[3] = 9
	p, err := readFrame(bytes.NewReader(h.frame()), maxHandshakeFrame)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeHello(p); err != nil || got != h {
		t.Fatalf("hello: %+v, %v", got, err)
	}
	pr := proof{MAC: bytes.Repeat([]byte{7}, 32)}
	if p, err = readFrame(bytes.NewReader(pr.frame()), maxHandshakeFrame); err != nil {
		t.Fatal(err)
	}
	if got, err := decodeProof(p); err != nil || !bytes.Equal(got.MAC, pr.MAC) || got.Err != "" {
		t.Fatalf("proof: %+v, %v", got, err)
	}
}

// seedFrames are the seed corpus of FuzzDecodeFrame (also written to testdata by
// TestWriteFuzzSeeds when TRANSPORT_WRITE_SEEDS is set).
func seedFrames() map[string][]byte {
	h := hello{V: Version, Name: "node-1"}
	for i := range h.Nonce {
		h.Nonce[i] = byte(i)
	}
	req := envelope{V: Version, ID: 1, Kind: 1, Flags: flagRequest, Body: []byte{0x92, 0xa1, 'k', 0x01}, Timeout: 2000}
	return map[string][]byte{
		"request":          req.frame(),
		"error-response":   errorFrame(Version, 9, 3, "unknown kind 3"),
		"hello":            h.frame(),
		"proof":            (&proof{MAC: bytes.Repeat([]byte{0xab}, 32)}).frame(),
		"refusal":          (&proof{Err: "cluster key proof refused"}).frame(),
		"pipelined":        append(req.frame(), (&envelope{V: Version, ID: 2, Flags: flagResponse, Body: []byte("ok")}).frame()...),
		"future-version":   (&envelope{V: 9, ID: 3, Kind: 1, Flags: flagRequest}).frame(),
		"length-4GiB":      {0xff, 0xff, 0xff, 0xff, 0x96},
		"body-claims-4GiB": {0, 0, 0, 11, 0x96, 1, 1, 1, 1, 0xc6, 0xff, 0xff, 0xff, 0xff, 0},
		"truncated":        req.frame()[:9],
		"negative-id":      {0, 0, 0, 7, 0x96, 1, 0xff, 1, 1, 0xc0, 0},
		"nested-arrays":    append([]byte{0, 0, 0, 8}, bytes.Repeat([]byte{0x91}, 8)...),
	}
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("TRANSPORT_WRITE_SEEDS") == "" {
		t.Skip("set TRANSPORT_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzDecodeFrame")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeFrame")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seedFrames() {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzDecodeFrame feeds arbitrary bytes to everything that reads a peer's input: the
// frame reader, the envelope decoder and the handshake message decoders. None may panic
// or allocate more than the frame limit, and what decodes must re-encode to itself.
func FuzzDecodeFrame(f *testing.F) {
	for _, b := range seedFrames() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for {
			payload, err := readFrame(br, 1<<16)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("readFrame: unexpected error %v", err)
				}
				return
			}
			if len(payload) > 1<<16 {
				t.Fatalf("payload of %d bytes over the limit", len(payload))
			}
			if e, err := decodeEnvelope(payload); err == nil {
				again, err := decodeEnvelope(e.frame()[frameHeader:])
				if err != nil || again.V != e.V || again.ID != e.ID || again.Kind != e.Kind || again.Flags != e.Flags ||
					again.Timeout != e.Timeout || !bytes.Equal(again.Body, e.Body) {
					t.Fatalf("envelope %+v re-decoded as %+v, %v", e, again, err)
				}
			}
			if h, err := decodeHello(payload); err == nil {
				if again, err := decodeHello(h.frame()[frameHeader:]); err != nil || again != h {
					t.Fatalf("hello %+v re-decoded as %+v, %v", h, again, err)
				}
			}
			if p, err := decodeProof(payload); err == nil {
				if again, err := decodeProof(p.frame()[frameHeader:]); err != nil || !bytes.Equal(again.MAC, p.MAC) || again.Err != p.Err {
					t.Fatalf("proof %+v re-decoded as %+v, %v", p, again, err)
				}
			}
		}
	})
}
