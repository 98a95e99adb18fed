package node

import (
	"slices"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// invLog is what a node remembers of the invalidations it applied recently, so that a
// handoff cannot import an entry one of them removed (docs/cluster.md, "Moving a
// partition"). Records are kept for the invalidation timeout after they were applied,
// and while a handoff that began within that time of them is still being received:
//
// An entry read by the sender before an invalidation reached the sender can arrive
// after the receiver applied that invalidation, also when the receiver applied it before
// the handoff began (it coordinated the invalidation, or got it first). The invalidation
// completes only once the sender applied it too, within the invalidation timeout, so a
// handoff that began later than that read its entries after the invalidation.
//
// Checking an entry costs a few map lookups: the records are indexed by tag and key.
// Refusing an entry is always safe (it is a miss), so the index may hold records longer
// than needed, and past maxInvRecords the oldest are folded into one stamp below which
// every imported entry is refused.
type invLog struct {
	recs   []invRecord       // oldest first
	anyTag map[string]uint64 // tag → newest stamp of an INV_TAG/INV_TAGS_ANY naming it
	keys   map[string]uint64 // key → newest stamp of an INV_KEYS naming it
	all    []invRecord       // INV_TAGS_ALL records, oldest first
	flush  uint64            // newest FLUSH stamp
	floor  uint64            // entries stamped below it are refused (records dropped at the cap)
}

// invRecord is one invalidation a node applied.
type invRecord struct {
	stamp uint64 // taken after observing the sender's stamp: above every entry it kills
	at    time.Time
	op    uint8
	tags  []string
	keys  []string
}

// maxInvRecords bounds the records an invLog keeps.
const maxInvRecords = 100_000

func (l *invLog) add(rec invRecord) {
	if len(l.recs) >= maxInvRecords {
		n := len(l.recs) / 2
		l.floor = max(l.floor, l.recs[n-1].stamp)
		l.drop(n)
	}
	l.recs = append(l.recs, rec)
	if l.anyTag == nil {
		l.anyTag, l.keys = map[string]uint64{}, map[string]uint64{}
	}
	switch rec.op {
	case invTagsAny:
		for _, t := range rec.tags {
			l.anyTag[t] = rec.stamp // stamps only grow: the newest naming t
		}
	case invTagsAll:
		l.all = append(l.all, rec)
	case invKeys:
		for _, k := range rec.keys {
			l.keys[k] = rec.stamp
		}
	case invFlush:
		l.flush = rec.stamp
	}
}

// prune drops the records applied before cutoff.
func (l *invLog) prune(cutoff time.Time) {
	n := 0
	for n < len(l.recs) && l.recs[n].at.Before(cutoff) {
		n++
	}
	l.drop(n)
}

// drop forgets the n oldest records. An index entry goes with the record it came from:
// records are kept in stamp order, so an entry still holding that record's stamp names
// no newer record.
func (l *invLog) drop(n int) {
	for _, rec := range l.recs[:n] {
		switch rec.op {
		case invTagsAny:
			for _, t := range rec.tags {
				if l.anyTag[t] == rec.stamp {
					delete(l.anyTag, t)
				}
			}
		case invTagsAll:
			l.all = l.all[1:]
		case invKeys:
			for _, k := range rec.keys {
				if l.keys[k] == rec.stamp {
					delete(l.keys, k)
				}
			}
		case invFlush:
			if l.flush == rec.stamp {
				l.flush = 0
			}
		}
	}
	clear(l.recs[:n]) // release their tag and key slices
	l.recs = l.recs[n:]
}

// covers reports whether a recorded invalidation removed e (or may have: below floor).
func (l *invLog) covers(e *cache.Entry) bool {
	if e.Stamp < l.floor || e.Stamp < l.flush || e.Stamp < l.keys[e.Key] {
		return true
	}
	for _, t := range e.Tags {
		if e.Stamp < l.anyTag[t] {
			return true
		}
	}
	for i := len(l.all) - 1; i >= 0 && l.all[i].stamp > e.Stamp; i-- {
		if len(l.all[i].tags) > 0 && !slices.ContainsFunc(l.all[i].tags, func(t string) bool { _, ok := slices.BinarySearch(e.Tags, t); return !ok }) {
			return true
		}
	}
	return false
}
