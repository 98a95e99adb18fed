package cache

// entryTable is a hash set of entries keyed by their own keys (entry.key): open
// addressing with linear probing and backward-shift deletion, so there are no tombstones.
// It holds a partition's entries, and each tag's key set (a tag's set holds, for each key
// carrying the tag, that key's current entry). A slot costs 9 bytes (a pointer and a
// control byte) where a Go map[string]*entry costs 25 and a map[string]struct{} 17, and
// since every entry keeps the hash of its key (entry.hash), growing, shrinking and
// deleting never hash a key again.
//
// It is not safe for concurrent use: its owner's lock protects it. It must not be
// modified while its slots are being walked (a delete may shift and shrink them).
type entryTable struct {
	ctrl  []uint8  // 0: empty slot; otherwise ctrlFull | the low 7 bits of the slot's hash
	slots []*entry // same length as ctrl
	n     int      // entries held
}

const (
	ctrlFull = 0x80
	// tableMinCap is the smallest capacity a table that holds anything has: small, since
	// most tags in real use have a handful of keys.
	tableMinCap = 2
)

// Load factor: a table grows by half when an insert would take it above 13/16 full and
// halves when a delete leaves it below 3/16 full, so it is between 3/8 (after shrinking)
// and 13/16 full, about 60% on average (a slot per entry costs 9 / 0.6 = 15 bytes).
const (
	loadMaxNum  = 13
	loadMinNum  = 3
	loadDivisor = 16
)

func ctrlOf(h uint32) uint8 { return ctrlFull | uint8(h&0x7f) }

// homeOf is the slot a hash probes first: the high bits of h scaled to the capacity
// (Lemire's fast range reduction); ctrlOf uses the low bits, so they are independent.
func homeOf(h uint32, capacity int) int { return int(uint64(h) * uint64(capacity) >> 32) }

// len returns the number of entries held.
func (t *entryTable) len() int { return t.n }

// find returns the slot holding key (whose hash is h), or -1.
func (t *entryTable) find(key string, h uint32) int {
	n := len(t.slots)
	if t.n == 0 {
		return -1
	}
	ctrl, slots := t.ctrl[:n], t.slots[:n]
	c := ctrlOf(h)
	for i := homeOf(h, n); ; {
		switch ctrl[i] {
		case 0:
			return -1
		case c:
			if e := slots[i]; e.hash == h && e.key() == key {
				return i
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// get returns the entry keyed key (whose hash is h), or nil.
func (t *entryTable) get(key string, h uint32) *entry {
	if i := t.find(key, h); i >= 0 {
		return t.slots[i]
	}
	return nil
}

// put stores e in place of the entry with the same key, and returns that entry (nil if
// there was none: e was added).
func (t *entryTable) put(e *entry) *entry {
	if i := t.find(e.key(), e.hash); i >= 0 {
		old := t.slots[i]
		t.slots[i] = e
		return old
	}
	if (t.n+1)*loadDivisor > len(t.slots)*loadMaxNum {
		t.resize(max(tableMinCap, len(t.slots)+len(t.slots)/2))
	}
	t.insert(e)
	t.n++
	return nil
}

// insert puts e, whose key the table does not hold, in the first free slot from its home.
func (t *entryTable) insert(e *entry) {
	n := len(t.slots)
	for i := homeOf(e.hash, n); ; {
		if t.ctrl[i] == 0 {
			t.ctrl[i], t.slots[i] = ctrlOf(e.hash), e
			return
		}
		if i++; i == n {
			i = 0
		}
	}
}

// replace puts e in the slot of old, an entry with the same key, if the table holds old,
// and reports whether it did.
func (t *entryTable) replace(old, e *entry) bool {
	if i := t.find(old.key(), old.hash); i >= 0 && t.slots[i] == old {
		t.slots[i] = e
		return true
	}
	return false
}

// delete removes the entry keyed key (whose hash is h) and returns it (nil if none).
func (t *entryTable) delete(key string, h uint32) *entry {
	i := t.find(key, h)
	if i < 0 {
		return nil
	}
	e := t.slots[i]
	t.deleteAt(i)
	return e
}

// deleteEntry removes e if the table holds it, and reports whether it did.
func (t *entryTable) deleteEntry(e *entry) bool {
	i := t.find(e.key(), e.hash)
	if i < 0 || t.slots[i] != e {
		return false
	}
	t.deleteAt(i)
	return true
}

// deleteAt empties slot i, shrinking the table if it is then too sparse.
func (t *entryTable) deleteAt(i int) {
	t.removeAt(i)
	if n := len(t.slots); n > tableMinCap && t.n*loadDivisor < n*loadMinNum {
		t.resize(max(tableMinCap, n/2))
	}
}

// removeAt empties slot i and moves later entries of its probe run back, so that every
// entry stays reachable from its home without tombstones (Knuth's algorithm R).
func (t *entryTable) removeAt(i int) {
	n := len(t.slots)
	for j := i; ; {
		if j++; j == n {
			j = 0
		}
		if t.ctrl[j] == 0 {
			break
		}
		// The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
		k := homeOf(t.slots[j].hash, n)
		if i <= j {
			if i < k && k <= j {
				continue
			}
		} else if i < k || k <= j {
			continue
		}
		t.ctrl[i], t.slots[i] = t.ctrl[j], t.slots[j]
		i = j
	}
	t.ctrl[i], t.slots[i] = 0, nil
	t.n--
}

// resize moves the entries to new arrays of the given capacity.
func (t *entryTable) resize(capacity int) {
	old := t.slots
	t.ctrl = make([]uint8, capacity)
	t.slots = make([]*entry, capacity)
	for _, e := range old {
		if e != nil {
			t.insert(e)
		}
	}
}

// walk calls fn for each entry held, starting from slot start and wrapping around (a
// random start gives a random sample of adjacent slots, as Go's randomised map iteration
// order did), until fn returns false. fn must not modify the table.
func (t *entryTable) walk(start int, fn func(*entry) bool) {
	n := len(t.slots)
	for k, i := 0, start; k < n; k++ {
		if e := t.slots[i]; e != nil && !fn(e) {
			return
		}
		if i++; i == n {
			i = 0
		}
	}
}

// appendTo appends every entry held to dst and returns it.
func (t *entryTable) appendTo(dst []*entry) []*entry {
	for _, e := range t.slots {
		if e != nil {
			dst = append(dst, e)
		}
	}
	return dst
}

// tableSlotAvgBytes is what a slot costs per entry held: a pointer and a control byte, at
// the average load of 60%.
const tableSlotAvgBytes = 15

// scattered yields 0..n-1, each once, jumping about 5/8 of n between consecutive
// indices. Every table places a key by the same hash (entry.hash), so deleting the
// entries of one table from the others (a partition's from tag key sets, a tag's from
// partitions) in the order of its slots would delete them in the order of their homes
// there too, and each deletion's backward shift would walk the rest of its probe run
// again: quadratic in the run's length, an entry dereference per step. Walks that delete
// go in this order instead.
func scattered(n int) func(yield func(int) bool) {
	return func(yield func(int) bool) {
		if n <= 0 {
			return
		}
		step := max(1, n*5/8)
		for gcd(step, n) != 1 {
			step++
		}
		for k, i := 0, 0; k < n; k++ {
			if !yield(i) {
				return
			}
			if i += step; i >= n {
				i -= n
			}
		}
	}
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
