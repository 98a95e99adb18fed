package transport

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

type boundMsg struct {
	Name  string
	Tags  []string
	Blob  []byte
	N     int64
	F     float64
	M     map[string]uint32
	Inner []boundMsg
	T     time.Time
	Any   any
}

func boundSamples() []any {
	return []any{
		nil, true, false, 0, -1, 127, -33, 255, 65535, int64(math.MinInt64), uint64(math.MaxUint64),
		float32(1.5), 2.25, "", "x", string(make([]byte, 31)), string(make([]byte, 32)),
		string(make([]byte, 300)), string(make([]byte, 70000)), []byte{}, make([]byte, 256),
		make([]byte, 70000), []int{}, make([]int, 16), make([]string, 70000), map[string]int{},
		map[int]int{1: 2, 3: 4}, time.Unix(1, 5), time.Unix(1<<40, 0),
		boundMsg{Name: "n", Tags: []string{"a", "b"}, Blob: []byte("v"), N: -5, F: 1e300,
			M: map[string]uint32{"k": 1 << 31}, Inner: []boundMsg{{Name: "in"}}, T: time.Unix(3, 4), Any: []any{1, "x"}},
	}
}

// Everything msgpack encodes passes the check, and the check reaches the end exactly.
func TestCheckBoundsAcceptsEncodings(t *testing.T) {
	for i, v := range boundSamples() {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkBounds(b); err != nil {
			t.Errorf("sample %d (%T): %v", i, v, err)
		}
		// One byte short: some declared length no longer fits.
		if len(b) > 1 {
			if err := checkBounds(b[:len(b)-1]); err == nil {
				t.Errorf("sample %d (%T) truncated by one byte: accepted", i, v)
			}
		}
	}
}

// Tiny bodies declaring huge values are refused before msgpack allocates for them, and
// decoding them through Decode allocates next to nothing.
func TestDecodeRefusesHugeDeclarations(t *testing.T) {
	hostile := map[string][]byte{
		"bin32 4GiB":        {0xc6, 0xff, 0xff, 0xff, 0xff, 0},
		"str32 4GiB":        {0xdb, 0xff, 0xff, 0xff, 0xff, 'x'},
		"array32 4G":        {0xdd, 0xff, 0xff, 0xff, 0xff},
		"map32 4G":          {0xdf, 0xff, 0xff, 0xff, 0xff, 0, 0},
		"ext32 4GiB":        {0xc9, 0xff, 0xff, 0xff, 0xff, 1},
		"array16 in map":    {0x81, 0xa1, 'k', 0xdc, 0xff, 0xff, 1, 2, 3},
		"fixarray short":    {0x93, 1, 2},
		"fixmap short":      {0x82, 1, 2, 3},
		"nested declares":   {0x91, 0x91, 0x91, 0xdd, 0, 0x10, 0, 0},
		"reserved 0xc1":     {0xc1},
		"int64 truncated":   {0xd3, 1, 2},
		"fixext16 short":    {0xd8, 1, 2},
		"bin8 short":        {0xc4, 3, 1},
		"empty":             {},
		"struct bin32 Blob": {0x81, 0xa4, 'B', 'l', 'o', 'b', 0xc6, 0x7f, 0xff, 0xff, 0xff},
		"struct array Tags": {0x81, 0xa4, 'T', 'a', 'g', 's', 0xdd, 0x7f, 0xff, 0xff, 0xff},
	}
	for name, b := range hostile {
		if err := checkBounds(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var m boundMsg
		err := Decode(b, &m)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: decoded", name)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
			t.Errorf("%s: decoding allocated %d bytes", name, d)
		}
	}
	if !errors.Is(checkBounds([]byte{0xc6, 0xff, 0xff, 0xff, 0xff}), errDeclaredLength) {
		t.Error("bin32 over the body: want errDeclaredLength")
	}
}

// FuzzCheckBounds: the check never panics and agrees with msgpack's own Skip, which
// walks one value the same way without allocating what it declares: what Skip walks
// whole the check accepts (no false refusals), and what the check accepts Skip never
// runs out of input on.
func FuzzCheckBounds(f *testing.F) {
	for _, v := range boundSamples() {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x85, 0xa1, '0', 0xcc, 0xc6, 0xc6, 0xc6, 0xc6, 0xc6, '0'})
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkBounds(b)
		serr := msgpack.NewDecoder(bytes.NewReader(b)).Skip()
		if serr == nil && err != nil {
			t.Fatalf("msgpack skips % x whole, the check refuses it: %v", b, err)
		}
		if err == nil && (errors.Is(serr, io.ErrUnexpectedEOF) || errors.Is(serr, io.EOF)) {
			t.Fatalf("the check accepts % x, msgpack runs out of input: %v", b, serr)
		}
	})
}
