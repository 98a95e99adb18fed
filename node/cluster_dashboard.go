package node

import (
	"context"
	"time"

	"github.com/tagcache/tagcache/transport"
)

// What a cluster member answers for the dashboard's routes (http_dashboard.go): every
// live member's request samples, and a tag invalidation with each member's part.

// Series implements clusterView: the samples of every live member, fetched in parallel
// over the peer transport (bounded by ctx). A member that does not answer is listed with
// its error.
func (r *Router) Series(ctx context.Context, since, upTo int64) []memberSeries {
	v := r.view.Load()
	out := make([]memberSeries, len(v.names))
	slot := make(map[string]*memberSeries, len(v.names)) // only read while parallelEach runs
	for i, name := range v.names {
		out[i].Name = name
		slot[name] = &out[i]
	}
	results := parallelEach(v.names, func(name string) (int, error) {
		m := slot[name]
		if name == r.self {
			m.Bounds, m.Samples = r.localSeries(since, upTo)
			return 0, nil
		}
		rep, err := transport.CallTyped[seriesReq, seriesPeerReply](ctx, r.tc, v.peer[name], kindSeries, seriesReq{Since: since, UpTo: upTo})
		m.Bounds, m.Samples = rep.Bounds, rep.Samples
		return 0, err
	})
	for i, res := range results {
		out[i].Err = res.err // results are in the order of v.names
	}
	return out
}

func (r *Router) localSeries(since, upTo int64) ([]float64, []seriesSample) {
	if r.series == nil {
		return nil, nil
	}
	return r.series.window(since, upTo)
}

// handleSeries answers a member's request for this node's samples, at most seriesWindow.
func (r *Router) handleSeries(_ context.Context, _ string, req seriesReq) (seriesPeerReply, error) {
	since := max(req.Since, req.UpTo-seriesWindow)
	b, s := r.localSeries(since, req.UpTo)
	return seriesPeerReply{Bounds: b, Samples: s}, nil
}

// InvalidateTagReport implements clusterView: INV_TAG on every member, with each
// member's count and answer time.
func (r *Router) InvalidateTagReport(ctx context.Context, tag string) (InvalidationReport, error) {
	return r.invalidateReport(ctx, invalidateReq{Op: invTagsAny, Tags: []string{tag}})
}

// standalone: the node alone.

func (v standaloneView) Series(_ context.Context, since, upTo int64) []memberSeries {
	b, s := v.n.series.window(since, upTo)
	return []memberSeries{{Name: standaloneName, Bounds: b, Samples: s}}
}

func (v standaloneView) InvalidateTagReport(_ context.Context, tag string) (InvalidationReport, error) {
	start := time.Now()
	n := v.n.store.InvalidateTag(tag)
	return InvalidationReport{Count: n, Members: []MemberInvalidation{{Name: standaloneName, Count: n, Elapsed: time.Since(start)}}}, nil
}
