package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tagcache/tagcache/cache"
)

// The TagCache JSON HTTP API (../shared/PROTOCOL.md, "HTTP JSON API"). Every route is one
// row of the table in routes(); wrap gives each the same frame: credentials, a bounded
// body, one JSON reply, one metrics observation. Handlers return a reply value or an
// error, and httpErrorReply decides how an error looks on the wire (the mux's own 404,
// 405 and redirects are made JSON by muxErrorWriter):
//
//	malformed JSON, empty body, trailing data             400 {"error":"malformed JSON: …"}
//	no or wrong credentials                               401 {"error":"unauthorized"}
//	unknown path                                          404 {"error":"unknown route"}
//	known path, wrong method (Allow header kept)          405 {"error":"method not allowed"}
//	body over Config.MaxBodyBytes, key/value/tag limits   413 {"error":"… (limit N bytes)"}
//	missing field, wrong JSON type, bad TTL/limit/mode    422 {"error":"missing field: key"}
//	anything the backend fails with (cluster forwarding)  503 {"error":"<cause>"}
//
// Misses are 200 {"error":"not_found"}, as in the original server. Requests need no
// particular Content-Type (curl -d sends a form type).

const contentTypeJSON = "application/json"

// httpAPI serves the HTTP API of a node. It reads n.backend on every request, so a
// cluster node may install its router after construction.
type httpAPI struct {
	n *Node
}

// httpRoute is one row of the route table.
type httpRoute struct {
	pattern string // ServeMux pattern, "METHOD /path"
	command string // the metrics command label
	public  bool   // served without credentials
	fn      func(r *http.Request) (any, error)
	raw     http.Handler // instead of fn, for replies that are not JSON (/metrics)
}

func (a *httpAPI) routes() []httpRoute {
	const public = true
	return []httpRoute{
		{pattern: "GET /health", command: "health", public: public, fn: a.health},
		{pattern: "GET /ready", command: "ready", public: public, fn: a.clusterReady},
		// /metrics takes no credentials so that Prometheus can scrape it without any: it
		// exposes only counters and gauges, never keys, values or tags.
		{pattern: "GET /metrics", command: "metrics", public: public,
			raw: promhttp.HandlerFor(a.n.metrics.Registry, promhttp.HandlerOpts{})},

		{pattern: "POST /auth/login", command: "login", public: public, fn: withBody(a.login)},
		{pattern: "POST /auth/rotate", command: "rotate", fn: a.rotate},
		{pattern: "POST /auth/change_password", command: "change_password", fn: withBody(a.changePassword)},
		{pattern: "POST /auth/reset", command: "reset", fn: a.reset},

		{pattern: "POST /put", command: "put", fn: withBody(a.put)},
		{pattern: "POST /add", command: "add", fn: withBody(a.add)},
		{pattern: "POST /incr", command: "incr", fn: withBody(a.incr)},
		{pattern: "POST /decr", command: "decr", fn: withBody(a.decr)},
		{pattern: "GET /get/{key}", command: "get", fn: a.get},
		{pattern: "GET /keys-by-tag", command: "keys_by_tag", fn: a.keysByTag},

		{pattern: "POST /invalidate-key", command: "invalidate_key", fn: withBody(a.invalidateKey)},
		{pattern: "POST /invalidate-tag", command: "invalidate_tag", fn: withBody(a.invalidateTag)},
		{pattern: "POST /invalidate/tags", command: "invalidate_tags", fn: withBody(a.invalidateTags)},
		{pattern: "POST /invalidate/keys", command: "invalidate_keys", fn: withBody(a.invalidateKeys)},
		{pattern: "POST /flush", command: "flush", fn: a.flush},
		{pattern: "GET /stats", command: "stats", fn: a.stats},

		{pattern: "GET /keys/{key}", command: "get_entry", fn: a.getEntry},
		{pattern: "PUT /keys/{key}", command: "put_entry", fn: withBody(a.putEntry)},
		{pattern: "DELETE /keys/{key}", command: "delete_entry", fn: a.deleteEntry},
		{pattern: "GET /keys", command: "list_keys", fn: a.listKeys},
		{pattern: "POST /keys/bulk/get", command: "bulk_get", fn: withBody(a.bulkGet)},
		{pattern: "POST /keys/bulk/delete", command: "bulk_delete", fn: withBody(a.invalidateKeys)},
		{pattern: "POST /search", command: "search", fn: withBody(a.search)},
		{pattern: "GET /tags", command: "tags", fn: a.tags},

		{pattern: "GET /cluster/members", command: "cluster_members", fn: a.clusterMembers},
		{pattern: "GET /cluster/ring", command: "cluster_ring", fn: a.clusterRing},
		{pattern: "GET /cluster/stats", command: "cluster_stats", fn: a.clusterStats},
		{pattern: "GET /cluster/events", command: "cluster_events", fn: a.clusterEvents},
		{pattern: "POST /cluster/invalidate-tag", command: "cluster_invalidate_tag", fn: withBody(a.clusterInvalidateTag)},

		// The dashboard's files (http_ui.go): public, they hold no data.
		{pattern: "GET /{$}", command: "ui", public: public, raw: http.HandlerFunc(uiRedirect)},
		{pattern: "GET /ui/", command: "ui", public: public, raw: uiHandler()},
	}
}

func (n *Node) httpHandler() http.Handler {
	a := &httpAPI{n: n}
	mux := http.NewServeMux()
	for _, rt := range a.routes() {
		mux.Handle(rt.pattern, a.wrap(rt))
	}
	unknown := n.metrics.Command("http", "unknown")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.draining.Load() {
			w.Header().Set("Connection", "close") // see Config.ShutdownDelay
		}
		mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w, start: time.Now(), metrics: unknown}, r)
	})
}

// wrap gives a route its frame: credentials, a bounded body, the JSON reply and the
// metrics observation. The route's metrics are resolved here, once.
func (a *httpAPI) wrap(rt httpRoute) http.Handler {
	m := a.n.metrics.Command("http", rt.command)
	if rt.raw != nil {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			mw := routeReplies(w)
			rt.raw.ServeHTTP(w, r)
			m.Observe(start, mw != nil && mw.status >= 400)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		routeReplies(w)
		var reply any
		var err error
		if !rt.public && !a.n.auth.CheckHeader(r.Header.Get("Authorization")) {
			err = errUnauthorized
		} else {
			r.Body = http.MaxBytesReader(w, r.Body, a.n.cfg.MaxBodyBytes)
			reply, err = rt.fn(r)
		}
		status := http.StatusOK
		if err != nil {
			status, reply = httpErrorReply(err)
			if status == http.StatusServiceUnavailable {
				a.n.log.Debug("http request failed", "route", rt.pattern, "error", err)
			}
		}
		writeJSON(w, status, reply)
		m.Observe(start, err != nil)
	})
}

// errorBody is the reply of every failure: {"error":"…"}.
type errorBody struct {
	Error string `json:"error"`
}

// apiError is a reply other than success, with its status and body.
type apiError struct {
	status int
	body   any
}

func (e *apiError) Error() string { return fmt.Sprintf("http %d: %v", e.status, e.body) }

func errorReply(status int, msg string) *apiError {
	return &apiError{status: status, body: errorBody{msg}}
}

var errUnauthorized = errorReply(http.StatusUnauthorized, "unauthorized")

// missingField is the 422 for a required field (or query parameter) that is absent.
func missingField(name string) error {
	return errorReply(http.StatusUnprocessableEntity, "missing field: "+name)
}

// invalidField is the 422 for a field (or query parameter) with a value we refuse.
func invalidField(name, why string) error {
	return errorReply(http.StatusUnprocessableEntity, "invalid field: "+name+": "+why)
}

// httpErrorReply maps an error to its status and JSON body.
func httpErrorReply(err error) (int, any) {
	var ae *apiError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.body
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge,
			errorBody{fmt.Sprintf("request body too large (limit %d bytes)", tooLarge.Limit)}
	case errors.Is(err, cache.ErrLimit):
		return http.StatusRequestEntityTooLarge, errorBody{err.Error()}
	case errors.Is(err, cache.ErrEmptyKey):
		return http.StatusUnprocessableEntity, errorBody{"key must not be empty"}
	case errors.Is(err, ErrInvalidCursor):
		return http.StatusUnprocessableEntity, errorBody{"invalid field: cursor: " + err.Error()}
	default:
		return http.StatusServiceUnavailable, errorBody{err.Error()}
	}
}

// writeJSON writes the one reply of a request. HTML characters are not escaped: the reply
// is JSON for programs, and values read back as they were stored.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // cannot happen with the reply types used here
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":"encode reply"}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// checker is a request body that can tell whether its required fields are present.
type checker interface{ check() error }

// withBody adapts a handler of a JSON request body of type T: the body is decoded and
// checked before fn runs.
func withBody[T any, P interface {
	*T
	checker
}](fn func(r *http.Request, req P) (any, error)) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		req := P(new(T))
		if err := decodeBody(r.Body, req); err != nil {
			return nil, err
		}
		if err := req.check(); err != nil {
			return nil, err
		}
		return fn(r, req)
	}
}

// decodeBody decodes exactly one JSON value from body into v: an empty body, malformed
// JSON or anything after the value is a 400, a value of the wrong type a 422, and a body
// over the limit surfaces as the reader's *http.MaxBytesError (413).
func decodeBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return errorReply(http.StatusBadRequest, "malformed JSON: data after the request body")
		}
		return bodyError(err)
	}
	return nil
}

func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return err
	case errors.Is(err, io.EOF):
		return errorReply(http.StatusBadRequest, "malformed JSON: empty request body")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errorReply(http.StatusUnprocessableEntity, "request body must be a JSON object")
		}
		// Fields of embedded structs come as "ttlFields.ttl_ms"; clients know only the last part.
		field := typ.Field[strings.LastIndexByte(typ.Field, '.')+1:]
		return invalidField(field, "got "+typ.Value+", want "+jsonTypeName(typ.Type))
	default:
		return errorReply(http.StatusBadRequest, "malformed JSON: "+err.Error())
	}
}

// jsonTypeName names a Go type as a JSON client would.
func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array of " + jsonTypeName(t.Elem()) + "s"
	default:
		return "object"
	}
}

// muxErrorWriter turns the ServeMux's own text replies into JSON and counts them under
// the command "unknown": 404 for an unknown path, 405 for a known path with the wrong
// method (its Allow header is kept), and the redirect of a path that is not canonical
// ("/get//k", "/get/.."; a key holding "/" or dot segments must be escaped, %2F, %2E).
// Route replies — a 304 or 404 of a dashboard file included — pass through untouched,
// with their headers: wrap marks the writer as a route's before the route runs.
type muxErrorWriter struct {
	http.ResponseWriter
	start    time.Time
	metrics  *CommandMetrics
	route    bool // a route is replying, not the mux
	status   int  // the status written, 0 before
	replaced bool // the mux's body is being dropped
}

// routeReplies marks w, when it is the muxErrorWriter, as carrying a route's reply, and
// returns it (nil otherwise).
func routeReplies(w http.ResponseWriter) *muxErrorWriter {
	mw, ok := w.(*muxErrorWriter)
	if ok {
		mw.route = true
	}
	return mw
}

func (w *muxErrorWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	h := w.Header()
	redirect := status >= 300 && status < 400 && status != http.StatusNotModified
	if w.route || !(redirect || status == http.StatusNotFound || status == http.StatusMethodNotAllowed) {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.replaced = true
	h.Del("X-Content-Type-Options")
	msg := "unknown route"
	switch {
	case status == http.StatusMethodNotAllowed:
		msg = "method not allowed"
	case redirect:
		msg = "path is not canonical, see " + h.Get("Location")
	}
	writeJSON(w.ResponseWriter, status, errorBody{msg})
	w.metrics.Observe(w.start, true)
}

func (w *muxErrorWriter) Write(b []byte) (int, error) {
	if w.replaced {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *muxErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
