package node

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// The dashboard's files (docs/dashboard.md): hand-written ES modules and CSS under web/,
// embedded in the binary and served to anyone, with no build step and nothing fetched
// from elsewhere. They hold no data: the page gets everything from the authenticated
// JSON routes with the token it logs in for.
//
//	GET /      302 to /ui/
//	GET /ui/…  the files under web/

//go:embed web
var webFiles embed.FS

// uiCSP allows the page nothing but its own files and its own origin's API: no inline
// script or style, no other origin, no framing.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiTypes are the Content-Types of the files under web/, by extension; set here rather
// than read from the host's mime.types so that they never depend on the machine.
var uiTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// uiFS is web/ as the root of the dashboard's files.
func uiFS() fs.FS {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // web is embedded: cannot happen
	}
	return sub
}

// uiFile is one embedded file, read once.
type uiFile struct {
	body []byte
	etag string
}

// uiFiles reads every file under web/, keyed by its path below web/.
func uiFiles() (map[string]uiFile, error) {
	files := uiFS()
	out := map[string]uiFile{}
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[p] = uiFile{body: b, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the dashboard's files: %w", err)
	}
	return out, nil
}

// uiHandler serves the embedded files under /ui/, and only them: any other name (a
// folder included, never listed) is a JSON 404. Each reply carries a strong ETag (a hash
// of the file) and Cache-Control: no-cache, so a browser revalidates and gets a 304
// until the binary changes: a new version never runs with an old module.
func uiHandler() http.Handler {
	files, err := uiFiles()
	if err != nil {
		panic(err) // web is embedded: cannot happen
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/ui/")
		if name == "" {
			name = "index.html"
		}
		h := w.Header()
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		f, ok := files[name]
		if !ok {
			writeJSON(w, http.StatusNotFound, errorBody{"no such file"})
			return
		}
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		if ct, ok := uiTypes[path.Ext(name)]; ok {
			h.Set("Content-Type", ct)
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
	})
}

// uiRedirect sends GET / to the dashboard.
func uiRedirect(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Location", "/ui/")
	writeJSON(w, http.StatusFound, struct {
		See string `json:"see"`
	}{"/ui/"})
}
