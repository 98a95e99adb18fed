package node

import (
	"context"
	"net/http"
	"time"
)

// The cluster routes of the HTTP API: /ready, /cluster/members and /cluster/ring. Each
// asks the node's clusterView, so a standalone node and a cluster member answer alike.
//
//	GET /ready            200 {"ready":true}   503 {"ready":false,"reason":"…"}   (public)
//	GET /cluster/members  200 {"members":[MemberInfo…]}
//	GET /cluster/ring     200 RingInfo

// clusterMembersTimeout bounds GET /cluster/members: the members' statistics are fetched
// from each of them, and one that does not answer in time is listed with stats_error.
const clusterMembersTimeout = 2 * time.Second

// readyReply is the body of GET /ready.
type readyReply struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

// clusterReady answers GET /ready: 200 while the node serves, 503 with the reason while it
// does not (joining, waiting for its partitions, fenced), so that a load balancer or a
// Kubernetes readiness probe sends it no clients.
func (a *httpAPI) clusterReady(*http.Request) (any, error) {
	if ready, reason := a.n.cluster.Ready(); !ready {
		return nil, &apiError{status: http.StatusServiceUnavailable, body: readyReply{false, reason}}
	}
	return readyReply{Ready: true}, nil
}

func (a *httpAPI) clusterMembers(r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), clusterMembersTimeout)
	defer cancel()
	members := a.n.cluster.Members(ctx)
	if members == nil {
		members = []MemberInfo{}
	}
	return struct {
		Members []MemberInfo `json:"members"`
	}{members}, nil
}

func (a *httpAPI) clusterRing(*http.Request) (any, error) {
	info := a.n.cluster.RingInfo()
	info.Members = nonNil(info.Members)
	info.Owners = nonNil(info.Owners)
	return info, nil
}
