package cache

import (
	"sync/atomic"
	"unsafe"
)

// entry is one stored value. It is immutable once published in a shard's table (every
// write publishes a new entry) except for access, so a reader may keep using an *entry,
// its key, value and tags after releasing the shard lock.
//
// Its layout is tuned for memory and for GET (docs/memory.md): the struct fills the
// 48-byte size class; its key and value bytes follow it in the same allocation, which
// fills a Go size class (entryShapes), so a lookup that finds the entry finds its key
// and value in the next cache lines; and tags are pointers to the tag index's states
// rather than strings. data, vlen, klen and hash are set before the entry is indexed
// under any tag and never change: a tag's key set reads an entry's key with only the tag
// shard's lock held.
//
// stamp is stored once, atomically, when the entry is installed in its shard's table
// (installLocked), after every other field has its final value; 0 means "not installed":
// the writer that indexed it still holds its shard's lock, or abandoned it. An
// invalidation counting the entries of a key set it took, without key-shard locks, reads
// the stamp first, and only then the other fields (docs/store.md, "Invalidation").
type entry struct {
	data     *byte         // the key's bytes followed by the value's
	tags     **tagState    // ntags states of the entry's tags, sorted by name (tagList)
	stamp    atomic.Uint64 // Clock stamp of the write that produced this entry; 0 until installed
	expireAt int64         // unix ms after which the entry is gone; 0 = no TTL
	vlen     uint32
	access   atomic.Uint32
	klen     uint16
	ntags    uint16
	hash     uint32 // the key's slot hash (Store.slotHash)
}

// newEntry returns an entry for key and a copy of value, with room for ntags tag
// handles, which indexTags or copyTags fill in (a single tag needs no room: its handle
// lives in the tag's state). The entry, its key and value and, with exactly two tags, its
// handles are one allocation when they fit the largest entry shape.
func newEntry(key string, value []byte, hash uint32, expireAt int64, ntags int) *entry {
	n := len(key) + len(value) // len(key) > 0: validate checked
	var e *entry
	if shape := shapeFor(n, ntags == 2); shape == nil {
		e = &entry{data: unsafe.SliceData(make([]byte, n))}
	} else if ntags == 2 {
		e = shape.alloc2()
	} else {
		e = shape.alloc0()
	}
	if ntags > 1 && e.ntags == 0 {
		e.tags, e.ntags = unsafe.SliceData(make([]*tagState, ntags)), uint16(ntags)
	}
	data := unsafe.Slice(e.data, n)
	copy(data, key)
	copy(data[len(key):], value)
	e.klen, e.vlen, e.hash, e.expireAt = uint16(len(key)), uint32(len(value)), hash, expireAt
	return e
}

// copyTags gives e, made by newEntry with room for from's tags, the same tag handles.
func (e *entry) copyTags(from *entry) {
	if from.ntags == 1 {
		e.tags, e.ntags = from.tags, 1 // points into the tag's state
		return
	}
	copy(e.tagList(), from.tagList())
}

// key returns the entry's key; it shares the entry's memory.
func (e *entry) key() string { return unsafe.String(e.data, e.klen) }

// value returns the entry's value; it shares the entry's memory and must not be modified.
// Its capacity is its length, so appending to it copies.
func (e *entry) value() []byte {
	if e.vlen == 0 {
		return []byte{} // never a pointer past the end of the allocation
	}
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(e.data), e.klen)), e.vlen)
}

// created returns the unix ms of the write that produced the entry.
func (e *entry) created() int64 { return int64(e.stamp.Load() >> logicalBits) }

// tagList returns the states of the entry's tags, sorted by name. It shares the entry's
// memory: do not modify it.
func (e *entry) tagList() []*tagState {
	if e.ntags == 0 {
		return nil
	}
	return unsafe.Slice(e.tags, e.ntags)
}

// tagNames returns the entry's tags, sorted.
func (e *entry) tagNames() []string {
	switch e.ntags {
	case 0:
		return nil
	case 1:
		return unsafe.Slice(&(*e.tags).name, 1)
	}
	names := make([]string, e.ntags)
	for i, ts := range e.tagList() {
		names[i] = ts.name
	}
	return names
}

func (e *entry) hasTag(tag string) bool {
	for _, ts := range e.tagList() {
		if ts.name == tag {
			return true
		}
	}
	return false
}

// entryBytes is the estimated heap cost of an entry (docs/memory.md): its allocation
// (the entry, key and value, and tag handles) as the allocator rounds it, and its slot in
// the partition's table. The tag index counts the entry's slots in its tags' key sets.
func entryBytes(e *entry) int64 {
	n := int(e.klen) + int(e.vlen)
	size := int(entryHeaderBytes) + n
	inlineHandles := false
	if shape := shapeFor(n, e.ntags == 2); shape != nil {
		size, inlineHandles = shape.size, e.ntags == 2
	}
	if e.ntags > 1 && !inlineHandles {
		size += 8 * int(e.ntags)
	}
	return int64(size) + tableSlotAvgBytes
}

// Entry shapes: an entry followed by its key and value bytes (and, for alloc2, two tag
// handles between them) in one object the exact size of one of Go's allocator size
// classes (the table in runtime/sizeclasses.go), so no space is lost to rounding that
// separate allocations would not lose anyway. Objects with pointers above 512 bytes carry
// an 8-byte allocation header (Go 1.22 and later). Larger entries keep their bytes in a
// separate allocation: the entry's 48 bytes are little next to 1 KiB.
type entryShape struct {
	size   int           // the size class, bytes
	alloc0 func() *entry // allocates an entry and its bytes; sets data
	alloc2 func() *entry // the same with two tag handles; sets data, tags, ntags
}

const (
	entryHeaderBytes  = unsafe.Sizeof(entry{})
	mallocHeaderBytes = 8
	eh                = entryHeaderBytes                     // shapes up to 512 bytes
	ehm               = entryHeaderBytes + mallocHeaderBytes // larger shapes
)

var entryShapes = [...]entryShape{
	{64, inline0[[64 - eh]byte], nil},
	{80, inline0[[80 - eh]byte], inline2[[80 - eh - 16]byte]},
	{96, inline0[[96 - eh]byte], inline2[[96 - eh - 16]byte]},
	{112, inline0[[112 - eh]byte], inline2[[112 - eh - 16]byte]},
	{128, inline0[[128 - eh]byte], inline2[[128 - eh - 16]byte]},
	{144, inline0[[144 - eh]byte], inline2[[144 - eh - 16]byte]},
	{160, inline0[[160 - eh]byte], inline2[[160 - eh - 16]byte]},
	{176, inline0[[176 - eh]byte], inline2[[176 - eh - 16]byte]},
	{192, inline0[[192 - eh]byte], inline2[[192 - eh - 16]byte]},
	{208, inline0[[208 - eh]byte], inline2[[208 - eh - 16]byte]},
	{224, inline0[[224 - eh]byte], inline2[[224 - eh - 16]byte]},
	{240, inline0[[240 - eh]byte], inline2[[240 - eh - 16]byte]},
	{256, inline0[[256 - eh]byte], inline2[[256 - eh - 16]byte]},
	{288, inline0[[288 - eh]byte], inline2[[288 - eh - 16]byte]},
	{320, inline0[[320 - eh]byte], inline2[[320 - eh - 16]byte]},
	{352, inline0[[352 - eh]byte], inline2[[352 - eh - 16]byte]},
	{384, inline0[[384 - eh]byte], inline2[[384 - eh - 16]byte]},
	{416, inline0[[416 - eh]byte], inline2[[416 - eh - 16]byte]},
	{448, inline0[[448 - eh]byte], inline2[[448 - eh - 16]byte]},
	{480, inline0[[480 - eh]byte], inline2[[480 - eh - 16]byte]},
	{512, inline0[[512 - eh]byte], inline2[[512 - eh - 16]byte]},
	{576, inline0[[576 - ehm]byte], inline2[[576 - ehm - 16]byte]},
	{640, inline0[[640 - ehm]byte], inline2[[640 - ehm - 16]byte]},
	{704, inline0[[704 - ehm]byte], inline2[[704 - ehm - 16]byte]},
	{768, inline0[[768 - ehm]byte], inline2[[768 - ehm - 16]byte]},
	{896, inline0[[896 - ehm]byte], inline2[[896 - ehm - 16]byte]},
	{1024, inline0[[1024 - ehm]byte], inline2[[1024 - ehm - 16]byte]},
}

func inline0[B any]() *entry {
	x := new(struct {
		entry
		b B
	})
	x.data = (*byte)(unsafe.Pointer(&x.b))
	return &x.entry
}

func inline2[B any]() *entry {
	x := new(struct {
		entry
		h [2]*tagState
		b B
	})
	x.data, x.tags, x.ntags = (*byte)(unsafe.Pointer(&x.b)), &x.h[0], 2
	return &x.entry
}

// room returns how many key and value bytes the shape holds, with two tag handles or
// none.
func (sh *entryShape) room(twoHandles bool) int {
	n := sh.size - int(entryHeaderBytes)
	if sh.size > 512 {
		n -= mallocHeaderBytes
	}
	if twoHandles {
		n -= 16
	}
	return n
}

// shapeIndex[h][k] is the index in entryShapes of the smallest shape that holds 8k bytes,
// with two tag handles (h = 1) or none (h = 0); noShape if none does.
var shapeIndex [2][]uint8

const noShape = 0xff

func init() {
	for h := range shapeIndex {
		last := &entryShapes[len(entryShapes)-1]
		idx := make([]uint8, last.room(h == 1)/8+1)
		for k := range idx {
			idx[k] = noShape
			for i := range entryShapes {
				if sh := &entryShapes[i]; (h == 0 || sh.alloc2 != nil) && sh.room(h == 1) >= 8*k {
					idx[k] = uint8(i)
					break
				}
			}
		}
		shapeIndex[h] = idx
	}
}

// shapeFor returns the smallest shape that holds n key and value bytes, with two tag
// handles or none, or nil if n is too large for every shape.
func shapeFor(n int, twoHandles bool) *entryShape {
	h := 0
	if twoHandles {
		h = 1
	}
	k := (n + 7) / 8
	if k >= len(shapeIndex[h]) || shapeIndex[h][k] == noShape {
		return nil
	}
	return &entryShapes[shapeIndex[h][k]]
}
