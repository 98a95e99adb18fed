package node

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// The handlers of the HTTP API routes (http.go has the route table and the frame). Where
// we differ from the original server, the comment says so.

// Bounds of the listing routes (GET /keys, GET /tags, POST /search).
const (
	defaultListLimit = 100
	maxListLimit     = 1000
	// scanPage is how many entries one Backend.Scan call returns while POST /search
	// looks for the newest entries.
	scanPage = 1000
)

// Replies shared by several routes.
type (
	successReply struct {
		Success bool `json:"success"`
	}
	countReply struct {
		Success bool `json:"success"`
		Count   int  `json:"count"`
	}
	putReply struct {
		OK    bool   `json:"ok"`
		TTLMs *int64 `json:"ttl_ms"`
	}
)

var notFound = errorBody{"not_found"}

// ttlFields are the TTL fields of a write. ttl_ms wins over ttl_seconds; both absent (or
// null) mean no TTL; 0 means the entry has already expired, as in the original.
type ttlFields struct {
	TTLMs      *int64 `json:"ttl_ms"`
	TTLSeconds *int64 `json:"ttl_seconds"`
}

// ttl returns the TTL to pass to the backend and the ttl_ms to reply with (nil: none).
func (f ttlFields) ttl() (time.Duration, *int64, error) {
	var ms int64
	switch {
	case f.TTLMs != nil:
		ms = *f.TTLMs
		if ms < 0 || ms > maxTTLMillis {
			return 0, nil, invalidField("ttl_ms", "must be a non-negative integer of milliseconds")
		}
	case f.TTLSeconds != nil:
		s := *f.TTLSeconds
		if s < 0 || s > maxTTLMillis/1000 {
			return 0, nil, invalidField("ttl_seconds", "must be a non-negative integer of seconds")
		}
		ms = s * 1000
	default:
		return 0, nil, nil
	}
	if ms == 0 {
		return cache.ExpireNow, &ms, nil
	}
	return time.Duration(ms) * time.Millisecond, &ms, nil
}

// --- health, readiness, auth ---

func (a *httpAPI) health(*http.Request) (any, error) {
	return struct {
		Status string `json:"status"`
		Time   string `json:"time"`
	}{"ok", time.Now().UTC().Format(time.RFC3339)}, nil
}

type loginRequest struct {
	Username *string `json:"username"`
	Password *string `json:"password"`
}

func (q *loginRequest) check() error {
	if q.Username == nil {
		return missingField("username")
	}
	if q.Password == nil {
		return missingField("password")
	}
	return nil
}

func (a *httpAPI) login(_ *http.Request, q *loginRequest) (any, error) {
	token, ttl, ok := a.n.auth.Login(*q.Username, *q.Password)
	if !ok {
		return nil, errorReply(http.StatusUnauthorized, "invalid_credentials")
	}
	return struct {
		Token     string `json:"token"`
		ExpiresIn int64  `json:"expires_in"`
	}{token, int64(ttl / time.Second)}, nil
}

func (a *httpAPI) rotate(*http.Request) (any, error) {
	user, pass := a.n.auth.Rotate()
	return struct {
		OK       bool   `json:"ok"`
		Username string `json:"username"`
		Password string `json:"password"`
	}{true, user, pass}, nil
}

type changePasswordRequest struct {
	NewPassword *string `json:"new_password"`
}

// check refuses an empty password too (the original answers 200 {"success":false}).
func (q *changePasswordRequest) check() error {
	if q.NewPassword == nil || *q.NewPassword == "" {
		return missingField("new_password")
	}
	return nil
}

func (a *httpAPI) changePassword(_ *http.Request, q *changePasswordRequest) (any, error) {
	a.n.auth.ChangePassword(*q.NewPassword)
	return successReply{true}, nil
}

func (a *httpAPI) reset(*http.Request) (any, error) {
	a.n.auth.Reset()
	return successReply{true}, nil
}

// --- writes ---

// putRequest is the body of /put and /add. A missing tags is no tags (the original
// requires the field).
type putRequest struct {
	Key   *string  `json:"key"`
	Value *string  `json:"value"`
	Tags  []string `json:"tags"`
	ttlFields
}

func (q *putRequest) check() error {
	if q.Key == nil {
		return missingField("key")
	}
	if q.Value == nil {
		return missingField("value")
	}
	return nil
}

func (a *httpAPI) put(r *http.Request, q *putRequest) (any, error) {
	ttl, ttlMs, err := q.ttl()
	if err != nil {
		return nil, err
	}
	if err := a.n.backend.Put(r.Context(), *q.Key, []byte(*q.Value), ttl, q.Tags); err != nil {
		return nil, err
	}
	return putReply{true, ttlMs}, nil
}

func (a *httpAPI) add(r *http.Request, q *putRequest) (any, error) {
	ttl, ttlMs, err := q.ttl()
	if err != nil {
		return nil, err
	}
	added, err := a.n.backend.Add(r.Context(), *q.Key, []byte(*q.Value), ttl, q.Tags)
	if err != nil {
		return nil, err
	}
	return struct {
		OK    bool   `json:"ok"`
		Added bool   `json:"added"`
		TTLMs *int64 `json:"ttl_ms"`
	}{true, added, ttlMs}, nil
}

// countRequest is the body of /incr and /decr. Without a TTL the entry keeps the one it
// had; without tags it keeps its tags.
type countRequest struct {
	Key  *string  `json:"key"`
	By   *int64   `json:"by"`
	Tags []string `json:"tags"`
	ttlFields
}

func (q *countRequest) check() error {
	if q.Key == nil {
		return missingField("key")
	}
	return nil
}

func (a *httpAPI) incr(r *http.Request, q *countRequest) (any, error) { return a.count(r, q, false) }
func (a *httpAPI) decr(r *http.Request, q *countRequest) (any, error) { return a.count(r, q, true) }

// count runs INCR or DECR. A value that is not an integer, or a result out of range, is
// 200 {"ok":false,"error":…}: the request was fine, the stored value was not.
func (a *httpAPI) count(r *http.Request, q *countRequest, decr bool) (any, error) {
	ttl, ttlMs, err := q.ttl()
	if err != nil {
		return nil, err
	}
	by := int64(1)
	if q.By != nil {
		by = *q.By
	}
	var n int64
	if decr {
		n, err = a.n.backend.Decr(r.Context(), *q.Key, by, ttl, q.Tags)
	} else {
		n, err = a.n.backend.Incr(r.Context(), *q.Key, by, ttl, q.Tags)
	}
	if errors.Is(err, cache.ErrNotInteger) || errors.Is(err, cache.ErrOverflow) {
		return nil, &apiError{status: http.StatusOK, body: struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		}{false, err.Error()}}
	}
	if err != nil {
		return nil, err
	}
	return struct {
		OK    bool   `json:"ok"`
		Value int64  `json:"value"`
		TTLMs *int64 `json:"ttl_ms"`
	}{true, n, ttlMs}, nil
}

// putEntryRequest is the body of PUT /keys/{key}: value is any JSON, stored as the
// string itself or, for any other value, as its compact JSON text.
type putEntryRequest struct {
	Value json.RawMessage `json:"value"`
	Tags  []string        `json:"tags"`
	ttlFields
}

func (q *putEntryRequest) check() error {
	if len(q.Value) == 0 {
		return missingField("value")
	}
	return nil
}

func (a *httpAPI) putEntry(r *http.Request, q *putEntryRequest) (any, error) {
	ttl, ttlMs, err := q.ttl()
	if err != nil {
		return nil, err
	}
	var value []byte
	if q.Value[0] == '"' {
		var s string
		if err := json.Unmarshal(q.Value, &s); err != nil {
			return nil, bodyError(err)
		}
		value = []byte(s)
	} else {
		var buf bytes.Buffer
		if err := json.Compact(&buf, q.Value); err != nil {
			return nil, bodyError(err)
		}
		value = buf.Bytes()
	}
	if err := a.n.backend.Put(r.Context(), r.PathValue("key"), value, ttl, q.Tags); err != nil {
		return nil, err
	}
	return putReply{true, ttlMs}, nil
}

// --- reads ---

func (a *httpAPI) get(r *http.Request) (any, error) {
	v, ok, err := a.n.backend.Get(r.Context(), r.PathValue("key"))
	if err != nil {
		return nil, err
	}
	if !ok {
		return notFound, nil
	}
	return struct {
		Value string `json:"value"`
	}{string(v)}, nil
}

// entryReply is an entry with its value, as GET /keys/{key} and bulk get show it.
type entryReply struct {
	Key       string   `json:"key"`
	Value     any      `json:"value"` // json.RawMessage if the value is JSON, else the string
	TTLMs     *int64   `json:"ttl_ms"`
	Tags      []string `json:"tags"`
	CreatedMs int64    `json:"created_ms"`
}

func newEntryReply(e cache.Entry, nowMs int64) entryReply {
	var value any = string(e.Value)
	if json.Valid(e.Value) {
		value = json.RawMessage(e.Value)
	}
	return entryReply{e.Key, value, remainingTTL(e, nowMs), nonNil(e.Tags), e.Created}
}

// remainingTTL is the entry's remaining TTL in ms, or nil when it has none.
func remainingTTL(e cache.Entry, nowMs int64) *int64 {
	ms := e.TTLMillis(nowMs)
	if ms < 0 {
		return nil
	}
	return &ms
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (a *httpAPI) getEntry(r *http.Request) (any, error) {
	e, ok, err := a.n.backend.GetEntry(r.Context(), r.PathValue("key"))
	if err != nil {
		return nil, err
	}
	if !ok {
		return notFound, nil
	}
	return newEntryReply(e, time.Now().UnixMilli()), nil
}

type keysRequest struct {
	Keys []string `json:"keys"`
}

func (q *keysRequest) check() error {
	if q.Keys == nil {
		return missingField("keys")
	}
	return nil
}

// bulkGet returns the live entries among keys, in request order; the others are left out.
func (a *httpAPI) bulkGet(r *http.Request, q *keysRequest) (any, error) {
	items := make([]entryReply, 0, len(q.Keys))
	now := time.Now().UnixMilli()
	for _, k := range q.Keys {
		e, ok, err := a.n.backend.GetEntry(r.Context(), k)
		if err != nil {
			return nil, err
		}
		if ok {
			items = append(items, newEntryReply(e, now))
		}
	}
	return struct {
		Items []entryReply `json:"items"`
	}{items}, nil
}

// keysByTag lists the keys carrying ?tag=, sorted; ?limit= truncates (default: all).
func (a *httpAPI) keysByTag(r *http.Request) (any, error) {
	q := r.URL.Query()
	if !q.Has("tag") {
		return nil, missingField("tag")
	}
	limit, err := limitParam(r, 0, math.MaxInt)
	if err != nil {
		return nil, err
	}
	keys, err := a.n.backend.KeysByTag(r.Context(), q.Get("tag"), limit)
	if err != nil {
		return nil, err
	}
	return struct {
		Keys []string `json:"keys"`
	}{nonNil(keys)}, nil
}

func (a *httpAPI) stats(r *http.Request) (any, error) {
	st, err := a.n.backend.Stats(r.Context())
	if err != nil {
		return nil, err
	}
	return statsReplyOf(st), nil
}

// StatsReply is the JSON body of GET /stats (the CLI decodes it too).
type StatsReply struct {
	Hits          uint64  `json:"hits"`
	Misses        uint64  `json:"misses"`
	Puts          uint64  `json:"puts"`
	Invalidations uint64  `json:"invalidations"`
	HitRatio      float64 `json:"hit_ratio"`
	Items         int64   `json:"items"`
	Bytes         int64   `json:"bytes"`
	Tags          int64   `json:"tags"`
	Evictions     uint64  `json:"evictions"`
	Expirations   uint64  `json:"expirations"`
}

// listKeys is GET /keys. Ours: paginated by ?limit= (default 100, at most 1000) and the
// opaque ?cursor= of the previous page, in the backend's stable scan order (the original
// lists everything, newest first). next_cursor is left out on the last page.
func (a *httpAPI) listKeys(r *http.Request) (any, error) {
	limit, err := limitParam(r, defaultListLimit, maxListLimit)
	if err != nil {
		return nil, err
	}
	entries, next, err := a.n.backend.Scan(r.Context(), r.URL.Query().Get("cursor"), limit, "")
	if err != nil {
		return nil, err
	}
	type keyInfo struct {
		Key       string   `json:"key"`
		Size      int      `json:"size"`
		TTL       *int64   `json:"ttl"` // remaining ms; the original's name
		Tags      []string `json:"tags"`
		CreatedMs int64    `json:"created_ms"`
	}
	keys := make([]keyInfo, len(entries))
	now := time.Now().UnixMilli()
	for i, e := range entries {
		keys[i] = keyInfo{e.Key, len(e.Value), remainingTTL(e, now), nonNil(e.Tags), e.Created}
	}
	return struct {
		Keys       []keyInfo `json:"keys"`
		NextCursor string    `json:"next_cursor,omitempty"`
	}{keys, next}, nil
}

// tags is GET /tags (ours): tags with their key counts, largest first, ?limit= as GET /keys.
func (a *httpAPI) tags(r *http.Request) (any, error) {
	limit, err := limitParam(r, defaultListLimit, maxListLimit)
	if err != nil {
		return nil, err
	}
	counts, err := a.n.backend.Tags(r.Context(), limit)
	if err != nil {
		return nil, err
	}
	type tagInfo struct {
		Tag  string `json:"tag"`
		Keys int    `json:"keys"`
	}
	out := make([]tagInfo, len(counts))
	for i, c := range counts {
		out[i] = tagInfo{c.Tag, c.Keys}
	}
	return struct {
		Tags []tagInfo `json:"tags"`
	}{out}, nil
}

// limitParam reads the query parameter limit: def when absent, else an integer from 1 to
// max (422 otherwise).
func limitParam(r *http.Request, def, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, limitError(max)
	}
	return n, nil
}

func limitError(max int) error {
	if max == math.MaxInt {
		return invalidField("limit", "must be a positive integer")
	}
	return invalidField("limit", "must be an integer from 1 to "+strconv.Itoa(max))
}

// searchRequest is the body of POST /search. The first mode given wins: tag_all, tag_any,
// q (key prefix), else every key, newest first.
type searchRequest struct {
	Q      *string  `json:"q"`
	TagAny []string `json:"tag_any"`
	TagAll []string `json:"tag_all"`
	Limit  *int     `json:"limit"`
}

func (q *searchRequest) check() error {
	if q.Limit != nil && (*q.Limit < 1 || *q.Limit > maxListLimit) {
		return limitError(maxListLimit)
	}
	return nil
}

// search runs POST /search. The tag modes read the tags' key lists and then at most as
// many entries as they return; the prefix mode stops at limit matches; only the
// newest-first listing walks the whole store, keeping limit entries at a time. Results
// are in key order except for newest-first (the original's order was arbitrary).
func (a *httpAPI) search(r *http.Request, q *searchRequest) (any, error) {
	ctx := r.Context()
	limit := defaultListLimit
	if q.Limit != nil {
		limit = *q.Limit
	}
	var entries []cache.Entry
	var err error
	switch {
	case len(q.TagAll) > 0:
		entries, err = a.searchTags(ctx, q.TagAll, true, limit)
	case len(q.TagAny) > 0:
		entries, err = a.searchTags(ctx, q.TagAny, false, limit)
	case q.Q != nil:
		prefix := *q.Q
		entries, _, err = a.n.backend.Scan(ctx, "", limit, prefix)
	default:
		entries, err = a.newest(ctx, limit)
	}
	if err != nil {
		return nil, err
	}
	type found struct {
		Key       string   `json:"key"`
		TTLMs     *int64   `json:"ttl_ms"`
		Tags      []string `json:"tags"`
		CreatedMs int64    `json:"created_ms"`
	}
	keys := make([]found, len(entries))
	now := time.Now().UnixMilli()
	for i, e := range entries {
		keys[i] = found{e.Key, remainingTTL(e, now), nonNil(e.Tags), e.Created}
	}
	return struct {
		Keys []found `json:"keys"`
	}{keys}, nil
}

// searchTags returns up to limit live entries carrying all (or any) of tags, in key order.
func (a *httpAPI) searchTags(ctx context.Context, tags []string, all bool, limit int) ([]cache.Entry, error) {
	var keys []string
	for i, t := range tags {
		// Any-mode needs at most limit keys of each tag; all-mode intersects whole lists.
		perTag := limit
		if all {
			perTag = 0
		}
		tk, err := a.n.backend.KeysByTag(ctx, t, perTag)
		if err != nil {
			return nil, err
		}
		switch {
		case i == 0:
			keys = tk
		case all:
			keys = intersectSorted(keys, tk)
		default:
			keys = append(keys, tk...)
		}
		if all && len(keys) == 0 {
			return nil, nil
		}
	}
	if !all {
		slices.Sort(keys)
		keys = slices.Compact(keys)
	}
	// An entry may have changed between listing and reading: check its tags again.
	carries := func(e cache.Entry) bool {
		has := func(t string) bool { _, ok := slices.BinarySearch(e.Tags, t); return ok }
		if all {
			return !slices.ContainsFunc(tags, func(t string) bool { return !has(t) })
		}
		return slices.ContainsFunc(tags, has)
	}
	var out []cache.Entry
	for _, k := range keys {
		if len(out) >= limit {
			break
		}
		e, ok, err := a.n.backend.GetEntry(ctx, k)
		if err != nil {
			return nil, err
		}
		if ok && carries(e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// intersectSorted returns the strings in both sorted lists, reusing a's storage.
func intersectSorted(a, b []string) []string {
	out := a[:0]
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch strings.Compare(a[i], b[j]) {
		case -1:
			i++
		case 1:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// newest returns the limit most recently written live entries, newest first, scanning the
// store a page at a time and keeping at most limit+scanPage entries.
func (a *httpAPI) newest(ctx context.Context, limit int) ([]cache.Entry, error) {
	newer := func(x, y cache.Entry) int { // newest first; the stamp orders writes in one ms
		if c := cmp.Compare(y.Created, x.Created); c != 0 {
			return c
		}
		return cmp.Compare(y.Stamp, x.Stamp)
	}
	var top []cache.Entry
	cursor := ""
	for {
		page, next, err := a.n.backend.Scan(ctx, cursor, scanPage, "")
		if err != nil {
			return nil, err
		}
		top = append(top, page...)
		if len(top) > limit {
			slices.SortFunc(top, newer)
			top = top[:limit]
		}
		if next == "" {
			break
		}
		cursor = next
	}
	slices.SortFunc(top, newer)
	return top, nil
}

// --- deletes and invalidations ---

func (a *httpAPI) deleteEntry(r *http.Request) (any, error) {
	deleted, err := a.n.backend.Del(r.Context(), r.PathValue("key"))
	if err != nil {
		return nil, err
	}
	n := 0
	if deleted {
		n = 1
	}
	return struct {
		OK      bool `json:"ok"`
		Deleted int  `json:"deleted"`
	}{deleted, n}, nil
}

type keyRequest struct {
	Key *string `json:"key"`
}

func (q *keyRequest) check() error {
	if q.Key == nil {
		return missingField("key")
	}
	return nil
}

// invalidateKey replies {"success":bool} (the original adds "count":null).
func (a *httpAPI) invalidateKey(r *http.Request, q *keyRequest) (any, error) {
	n, err := a.n.backend.InvalidateKeys(r.Context(), []string{*q.Key})
	if err != nil {
		return nil, err
	}
	return successReply{n > 0}, nil
}

type tagRequest struct {
	Tag *string `json:"tag"`
}

func (q *tagRequest) check() error {
	if q.Tag == nil {
		return missingField("tag")
	}
	return nil
}

func (a *httpAPI) invalidateTag(r *http.Request, q *tagRequest) (any, error) {
	n, err := a.n.backend.InvalidateTag(r.Context(), *q.Tag)
	if err != nil {
		return nil, err
	}
	return countReply{n > 0, n}, nil
}

// tagsRequest is the body of /invalidate/tags. mode defaults to "any"; ours: any mode
// other than "any" or "all" is a 422 (the original treats every other string as "all").
type tagsRequest struct {
	Tags []string `json:"tags"`
	Mode *string  `json:"mode"`
}

func (q *tagsRequest) check() error {
	if q.Tags == nil {
		return missingField("tags")
	}
	if q.Mode != nil && *q.Mode != "any" && *q.Mode != "all" {
		return invalidField("mode", `must be "any" or "all"`)
	}
	return nil
}

func (a *httpAPI) invalidateTags(r *http.Request, q *tagsRequest) (any, error) {
	invalidate := a.n.backend.InvalidateTagsAny
	if q.Mode != nil && *q.Mode == "all" {
		invalidate = a.n.backend.InvalidateTagsAll
	}
	n, err := invalidate(r.Context(), q.Tags)
	if err != nil {
		return nil, err
	}
	return countReply{true, n}, nil
}

func (a *httpAPI) invalidateKeys(r *http.Request, q *keysRequest) (any, error) {
	n, err := a.n.backend.InvalidateKeys(r.Context(), q.Keys)
	if err != nil {
		return nil, err
	}
	return countReply{true, n}, nil
}

func (a *httpAPI) flush(r *http.Request) (any, error) {
	n, err := a.n.backend.Flush(r.Context())
	if err != nil {
		return nil, err
	}
	return countReply{true, n}, nil
}
