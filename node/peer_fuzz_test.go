package node

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/transport"
)

// FuzzPeerMessages feeds arbitrary bodies of every message kind to the handlers of a
// one-node router (no network): none may panic, and the store must stay usable and
// consistent.
func FuzzPeerMessages(f *testing.F) {
	enc := func(v any) []byte {
		b, err := transport.Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	now := time.Now().Unix()
	e := wireEntry{Key: "k", Value: []byte("v"), Tags: []string{"t"}, Stamp: 1 << 40}
	seeds := map[uint16][]any{
		kindKeyOp: {keyOp{Op: opPut, Key: "k", Value: []byte("v"), Tags: []string{"a", "b"}}, keyOp{Op: opGet, Key: "k"},
			keyOp{Op: opIncr, Key: "n", Delta: 5}, keyOp{Op: opSet, Key: "k", Mode: 1, KeepTTL: true}, keyOp{Op: opDel, Key: "k", Hop: 3}},
		kindInvalidate: {invalidateReq{Op: invTagsAny, Tags: []string{"a"}, Stamp: 1 << 40, Members: []string{"fuzz", "x"}},
			invalidateReq{Op: invKeys, Keys: []string{"k"}}, invalidateReq{Op: invFlush}},
		kindStats:          {statsReq{}},
		kindKeysByTag:      {keysByTagReq{Tag: "a", Limit: 3}},
		kindTags:           {tagsReq{Limit: 1}},
		kindScan:           {scanReq{Cursor: "3:k", Limit: 2, Prefix: "k"}},
		kindHandoffBegin:   {handoffReq{P: 5}},
		kindHandoffEntries: {handoffReq{P: 5, Entries: []wireEntry{e}}},
		kindHandoffCommit:  {handoffReq{P: 5}},
		kindWhoHolds:       {whoHoldsReq{P: []int{1, 2, 300, -1}}},
		kindPing:           {pingReq{}},
		kindSeries: {seriesReq{Since: 1, UpTo: 1 << 40}, seriesReq{Since: now - 10, UpTo: now + 10},
			seriesReq{Since: now, UpTo: now - 5}, seriesReq{Since: -1 << 63, UpTo: -1 << 63}, seriesReq{Since: 1<<63 - 1, UpTo: 1<<63 - 1}},
	}
	for kind, msgs := range seeds {
		for _, m := range msgs {
			f.Add(kind, enc(m))
		}
	}
	store, err := cache.New(cache.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(store.Close)
	r, err := newRouter(ClusterConfig{NodeName: "fuzz", Bind: "127.0.0.1", InvalidationTimeout: time.Second,
		ForwardTimeout: time.Second, DeadForget: time.Minute, HandoffBatch: 8}, store, hclog.NewNullLogger())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.ts.Close(); r.tc.Close() })
	// Two samples, so that kind 12 has a window to read.
	m := NewMetrics(Local{Store: store})
	r.series = newSeriesRecorder(m)
	r.series.take(time.Unix(now-1, 0))
	m.Command("tcp", "get").ObserveDuration(time.Millisecond, false)
	r.series.take(time.Unix(now, 0))
	if rep, _ := r.handleSeries(context.Background(), "peer", seriesReq{Since: now - 10, UpTo: now}); len(rep.Samples) != 1 {
		f.Fatalf("kind 12 answers %+v, want the one sample", rep)
	}
	handlers := r.handlers()
	f.Fuzz(func(t *testing.T, kind uint16, body []byte) {
		h := handlers[kind%16]
		if h == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = h(ctx, "peer", kind%16, body)
		// Still a working store with an exact index.
		if err := r.Put(ctx, "probe", []byte("x"), 0, []string{"probe-tag"}); err != nil {
			t.Fatalf("PUT after kind %d: %v", kind%16, err)
		}
		if v, ok, err := r.Get(ctx, "probe"); err != nil || !ok || string(v) != "x" {
			t.Fatalf("GET after kind %d: %q %v %v", kind%16, v, ok, err)
		}
		if keys, err := r.KeysByTag(ctx, "probe-tag", 0); err != nil || len(keys) != 1 {
			t.Fatalf("KEYS_BY_TAG after kind %d: %v %v", kind%16, keys, err)
		}
	})
}
