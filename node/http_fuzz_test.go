package node

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tagcache/tagcache/cache"
)

// FuzzHTTPBodies sends arbitrary bytes as the body of every route that reads one (POST
// and PUT rows of the route table, so a new route is fuzzed without editing this) and
// checks that the node neither panics nor answers anything but a JSON reply with one of
// the statuses a client error may produce.
func FuzzHTTPBodies(f *testing.F) {
	n, err := New(Config{
		Bind: "127.0.0.1", TCPPort: -1, HTTPPort: -1,
		MaxBodyBytes: 4096,
		Cache:        cache.Config{MaxKeyBytes: 64, MaxValueBytes: 256, MaxTags: 4, MaxTagBytes: 16, MaxMemory: 1 << 20},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	h := n.httpHandler()

	type target struct{ method, path string }
	var targets []target
	for _, rt := range (&httpAPI{n: n}).routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		if method == "POST" || method == "PUT" {
			targets = append(targets, target{method, strings.ReplaceAll(path, "{key}", "k")})
		}
	}

	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"key":"k","value":"v","tags":["a"],"ttl_ms":10}`,
		`{"key":"k","by":-9223372036854775808}`, `{"tags":["a","b"],"mode":"all"}`,
		`{"keys":["k","x"]}`, `{"tag_any":["a"],"limit":1000}`, `{"value":{"a":[1,2]}}`,
		`{"username":"admin","password":"password"}`, `{"new_password":"x"}`, `{"key":"k"} x`,
	} {
		f.Add([]byte(seed))
	}

	ok := map[int]bool{http.StatusOK: true, http.StatusBadRequest: true,
		http.StatusRequestEntityTooLarge: true, http.StatusUnprocessableEntity: true}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range targets {
			req := httptest.NewRequest(tg.method, tg.path, bytes.NewReader(body))
			req.Header.Set("Authorization", httpAdminAuth)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			// Rotate and change_password may have changed the credentials.
			n.auth.Reset()

			loginRefused := tg.path == "/auth/login" && rec.Code == http.StatusUnauthorized
			if !ok[rec.Code] && !loginRefused {
				t.Errorf("%s %s %q: status %d %s", tg.method, tg.path, body, rec.Code, rec.Body)
			}
			if !json.Valid(rec.Body.Bytes()) {
				t.Errorf("%s %s %q: reply is not JSON: %q", tg.method, tg.path, body, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != contentTypeJSON {
				t.Errorf("%s %s %q: Content-Type %q", tg.method, tg.path, body, ct)
			}
		}
	})
}
