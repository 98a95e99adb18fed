// Package node is a TagCache node: it composes the local store (cache/) with the
// client-facing servers — the TagCache TCP text protocol, the JSON HTTP API with health,
// readiness, Prometheus metrics and the dashboard (web/), and the Redis protocol — behind
// the Backend seam that a cluster node fills with its router. cmd/tagcache builds a node
// from flags; tests build one in-process.
package node
