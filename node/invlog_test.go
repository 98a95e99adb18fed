package node

import (
	"testing"
	"time"

	"github.com/tagcache/tagcache/cache"
)

func TestInvLogCoversWhatEachInvalidationRemoved(t *testing.T) {
	var l invLog
	now := time.Now()
	l.add(invRecord{stamp: 10, at: now, op: invTagsAny, tags: []string{"a", "b"}})
	l.add(invRecord{stamp: 20, at: now, op: invTagsAll, tags: []string{"c", "d"}})
	l.add(invRecord{stamp: 30, at: now, op: invKeys, keys: []string{"k"}})
	l.add(invRecord{stamp: 40, at: now, op: invTagsAll}) // no tags: removes nothing
	for _, c := range []struct {
		e    cache.Entry
		want bool
	}{
		{cache.Entry{Key: "x", Tags: []string{"b"}, Stamp: 9}, true},
		{cache.Entry{Key: "x", Tags: []string{"b"}, Stamp: 10}, false}, // written after
		{cache.Entry{Key: "x", Tags: []string{"c"}, Stamp: 5}, false},  // not all of c, d
		{cache.Entry{Key: "x", Tags: []string{"c", "d", "e"}, Stamp: 5}, true},
		{cache.Entry{Key: "k", Stamp: 29}, true},
		{cache.Entry{Key: "k2", Stamp: 29}, false},
	} {
		if got := l.covers(&c.e); got != c.want {
			t.Errorf("covers(%+v) = %v, want %v", c.e, got, c.want)
		}
	}
	l.add(invRecord{stamp: 50, at: now, op: invFlush})
	if !l.covers(&cache.Entry{Key: "y", Stamp: 49}) || l.covers(&cache.Entry{Key: "y", Stamp: 50}) {
		t.Error("FLUSH covers what is older than it, only")
	}
}

func TestInvLogPrunesOldRecordsAndFoldsTheOverflow(t *testing.T) {
	var l invLog
	t0 := time.Now()
	l.add(invRecord{stamp: 1, at: t0, op: invTagsAny, tags: []string{"a"}})
	l.add(invRecord{stamp: 2, at: t0.Add(time.Second), op: invTagsAny, tags: []string{"b"}})
	l.prune(t0.Add(time.Millisecond))
	if l.covers(&cache.Entry{Key: "x", Tags: []string{"a"}}) || !l.covers(&cache.Entry{Key: "x", Tags: []string{"b"}}) {
		t.Fatal("prune dropped the wrong record")
	}
	for i := range maxInvRecords {
		l.add(invRecord{stamp: uint64(10 + i), at: t0, op: invKeys, keys: []string{"k"}})
	}
	if len(l.recs) > maxInvRecords {
		t.Fatalf("%d records kept, limit %d", len(l.recs), maxInvRecords)
	}
	// Folded records still refuse what they may have removed.
	if !l.covers(&cache.Entry{Key: "other", Stamp: 11}) {
		t.Fatal("an entry older than a dropped record was accepted")
	}
}
