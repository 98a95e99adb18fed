package node

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// The JSON routes only the dashboard needs (docs/dashboard.md), behind credentials like
// every other data route (its files are in http_ui.go):
//
//	GET  /cluster/stats?since=T     seriesReply: per-second requests and latency, merged over the members
//	GET  /cluster/events?limit=N    {"events":[clusterEvent…]}, newest first
//	POST /cluster/invalidate-tag    {tag} → tagInvalidationReply (503 with the same body when incomplete)

// clusterStats answers GET /cluster/stats: the seconds after ?since= (unix seconds;
// default: the last seriesDefaultSpan seconds; older than the window: its start) up to
// seriesSettle seconds ago.
func (a *httpAPI) clusterStats(r *http.Request) (any, error) {
	upTo := time.Now().Unix() - seriesSettle
	since := upTo - seriesDefaultSpan
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return nil, invalidField("since", "must be a unix time in seconds")
		}
		since = v
	}
	since = min(max(since, upTo-seriesWindow), upTo)
	ctx, cancel := context.WithTimeout(r.Context(), clusterMembersTimeout)
	defer cancel()
	return mergeSeries(latencyBuckets, a.n.cluster.Series(ctx, since, upTo), since, upTo), nil
}

// clusterEvents answers GET /cluster/events: the membership events this node saw, newest
// first; ?limit= from 1 to maxEvents (default: all it keeps).
func (a *httpAPI) clusterEvents(r *http.Request) (any, error) {
	limit, err := limitParam(r, maxEvents, maxEvents)
	if err != nil {
		return nil, err
	}
	return struct {
		Events []clusterEvent `json:"events"`
	}{a.n.events.recent(limit)}, nil
}

// tagInvalidationReply is the body of POST /cluster/invalidate-tag: the count of
// /invalidate-tag, how long the whole invalidation took, and each member's part.
type tagInvalidationReply struct {
	Error     string             `json:"error,omitempty"` // set when incomplete (503)
	Success   bool               `json:"success"`         // every member acknowledged
	Count     int                `json:"count"`
	ElapsedMs float64            `json:"elapsed_ms"`
	Nodes     []nodeInvalidation `json:"nodes"`
}

type nodeInvalidation struct {
	Name      string  `json:"name"`
	Count     int     `json:"count"`
	ElapsedMs float64 `json:"elapsed_ms"`      // until this member acknowledged
	Error     string  `json:"error,omitempty"` // why it did not
}

func (a *httpAPI) clusterInvalidateTag(r *http.Request, q *tagRequest) (any, error) {
	start := time.Now()
	rep, err := a.n.cluster.InvalidateTagReport(r.Context(), *q.Tag)
	if err != nil && len(rep.Members) == 0 {
		return nil, err // refused before anything was applied (a fenced node)
	}
	out := tagInvalidationReply{Success: err == nil, Count: rep.Count, ElapsedMs: millis(time.Since(start)), Nodes: []nodeInvalidation{}}
	for _, m := range rep.Members {
		ni := nodeInvalidation{Name: m.Name, Count: m.Count, ElapsedMs: millis(m.Elapsed)}
		if m.Err != nil {
			ni.Error = m.Err.Error()
		}
		out.Nodes = append(out.Nodes, ni)
	}
	if err != nil {
		out.Error = err.Error()
		return nil, &apiError{status: http.StatusServiceUnavailable, body: out}
	}
	return out, nil
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
