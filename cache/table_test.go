package cache

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// TestEntryTableMatchesMap drives entryTables through random puts, replacements and
// deletes, growing and shrinking them, and checks them against a map after every step.
// The second run gives every key one of four hashes, so that probe runs are long, wrap
// around the end of the table and are shifted back by deletes.
func TestEntryTableMatchesMap(t *testing.T) {
	s := newTestStore(t, Config{})
	for name, hashOf := range map[string]func(string) uint32{
		"slotHash":   s.slotHash,
		"collisions": func(k string) uint32 { n, _ := strconv.Atoi(k[1:]); return ^uint32(0) - uint32(n%4)<<28 },
	} {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var tb entryTable
			model := map[string]*entry{}
			var errs []string
			fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
			for step := range 20_000 {
				// Phases of mostly inserting and mostly deleting, so the table grows and
				// shrinks through many capacities.
				keys, del := 200, 3
				if step/2000%2 == 1 {
					del = 7
				}
				k := "k" + strconv.Itoa(rng.IntN(keys))
				if rng.IntN(10) < del {
					got, want := tb.delete(k, hashOf(k)), model[k]
					if got != want {
						t.Fatalf("step %d: delete(%s) = %p, want %p", step, k, got, want)
					}
					delete(model, k)
				} else {
					e := newEntry(k, []byte("v"), hashOf(k), 0, 0)
					if got, want := tb.put(e), model[k]; got != want {
						t.Fatalf("step %d: put(%s) replaced %p, want %p", step, k, got, want)
					}
					model[k] = e
				}
				checkTable(&tb, "table", hashOf, fail)
				if tb.len() != len(model) {
					fail("len = %d, want %d", tb.len(), len(model))
				}
				for mk, me := range model {
					if got := tb.get(mk, hashOf(mk)); got != me {
						fail("get(%s) = %p, want %p", mk, got, me)
					}
				}
				if len(errs) > 0 {
					t.Fatalf("step %d:\n  %s", step, strings.Join(errs, "\n  "))
				}
			}
			if got := tb.get("absent", hashOf("k1")); got != nil {
				t.Fatalf("get of an absent key = %p", got)
			}
		})
	}
}

// The entry layout is sized to Go's allocator classes (docs/memory.md): a field added to
// entry costs 16 bytes an entry, not 8, and an entry shape that misses its size class
// costs the gap to the next one.
func TestEntryShapesFillTheirSizeClasses(t *testing.T) {
	if got := unsafe.Sizeof(entry{}); got != 48 {
		t.Errorf("entry is %d bytes, want 48 (the 48-byte size class)", got)
	}
	keep := make([]*entry, 100)
	for _, sh := range entryShapes {
		class := -1
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, c := range before.BySize {
			if int(c.Size) == sh.size {
				class = i
			}
		}
		if class < 0 {
			t.Fatalf("shape of %d bytes: not a size class of this Go version", sh.size)
		}
		for handles, alloc := range []func() *entry{sh.alloc0, sh.alloc2} {
			if alloc == nil {
				continue
			}
			runtime.ReadMemStats(&before)
			for i := range keep {
				keep[i] = alloc()
			}
			runtime.ReadMemStats(&after)
			if got := after.BySize[class].Mallocs - before.BySize[class].Mallocs; got < uint64(len(keep)) {
				t.Errorf("shape of %d bytes with %d tag handles: %d of %d allocations in its class",
					sh.size, handles*2, got, len(keep))
			}
			e := keep[0]
			offset := int(uintptr(unsafe.Pointer(e.data)) - uintptr(unsafe.Pointer(e)))
			if end := offset + sh.room(handles == 1); end > sh.size {
				t.Errorf("shape of %d bytes with %d tag handles: bytes end at %d", sh.size, handles*2, end)
			}
			if handles == 1 && (e.ntags != 2 || uintptr(unsafe.Pointer(e.tags)) != uintptr(unsafe.Pointer(e))+48) {
				t.Errorf("shape of %d bytes: tag handles not after the entry", sh.size)
			}
		}
	}
	runtime.KeepAlive(keep)
	for _, n := range []int{1, 100, 110, 464, 465, 952} {
		for _, two := range []bool{false, true} {
			sh := shapeFor(n, two)
			if sh == nil || sh.room(two) < n {
				t.Fatalf("shapeFor(%d, %v) = %+v", n, two, sh)
			}
			for i := range entryShapes {
				if o := &entryShapes[i]; o.size < sh.size && o.room(two) >= n && (!two || o.alloc2 != nil) {
					t.Errorf("shapeFor(%d, %v) = %d bytes, but %d bytes fit", n, two, sh.size, o.size)
				}
			}
		}
	}
	if sh := shapeFor(969, false); sh != nil {
		t.Errorf("shapeFor(969) = %d bytes, want none", sh.size)
	}
}
