package node

import (
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// --- the embedded files

// rawGet fetches path from the node with no credentials, not expecting JSON.
func (c *httpTestClient) rawGet(path string, header ...string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// Redirects are looked at, not followed.
	hc := &http.Client{Timeout: c.hc.Timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, string(b)
}

func TestDashboardFilesAreServedWithoutCredentialsWithTheirTypesAndAStrictCSP(t *testing.T) {
	_, c := startHTTPNode(t, Config{})
	for path, want := range map[string]string{
		"/ui/":          "text/html; charset=utf-8",
		"/ui/app.js":    "text/javascript; charset=utf-8",
		"/ui/style.css": "text/css; charset=utf-8",
	} {
		resp, body := c.rawGet(path)
		if resp.StatusCode != 200 || body == "" {
			t.Errorf("GET %s: %d, %d bytes; want 200 and the file", path, resp.StatusCode, len(body))
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != want {
			t.Errorf("GET %s: Content-Type %q, want %q", path, got, want)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, must := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, must) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, must)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("GET %s: Content-Security-Policy %q allows inline code", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("GET %s: headers %v, want nosniff and no-cache", path, resp.Header)
		}
		// The ETag lets the browser revalidate cheaply.
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Errorf("GET %s: no ETag", path)
			continue
		}
		if resp, _ := c.rawGet(path, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, resp.StatusCode)
		}
	}
	resp, _ := c.rawGet("/")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q, want 302 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := c.rawGet("/ui/missing.js")
	if resp.StatusCode != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("GET /ui/missing.js: %d %q, want a JSON 404", resp.StatusCode, body)
	}
}

// Every file the page loads — from index.html, and from each module's imports — is in
// the embed, no embedded file is unused, and nothing inline needs the CSP relaxed.
func TestDashboardEveryReferencedFileIsEmbeddedAndNothingIsInline(t *testing.T) {
	files := uiFS()
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:[^>]*)>\s*[^<\s]`),   // an inline script
		regexp.MustCompile(`\son[a-z]+\s*=`),               // an event handler attribute
		regexp.MustCompile(`\sstyle\s*=`),                  // a style attribute
		regexp.MustCompile(`(?:src|href)="(?:https?:)?//`), // another origin
	} {
		if m := bad.Find(index); m != nil {
			t.Errorf("index.html has %q, which the CSP forbids or the page must not need", m)
		}
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAll(index, -1) {
		if !strings.Contains(string(tag), `type="module"`) {
			t.Errorf("index.html has a classic script %q; the page is ES modules only", tag)
		}
	}
	used := map[string]bool{"index.html": true}
	queue := []string{}
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllSubmatch(index, -1) {
		queue = append(queue, string(m[1]))
	}
	imports := regexp.MustCompile(`(?m)^\s*import\s[^'"]*['"]\./([^'"]+)['"]`)
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if used[name] {
			continue
		}
		used[name] = true
		b, err := fs.ReadFile(files, name)
		if err != nil {
			t.Errorf("%s is referenced but not embedded: %v", name, err)
			continue
		}
		if strings.HasSuffix(name, ".js") {
			for _, m := range imports.FindAllSubmatch(b, -1) {
				queue = append(queue, string(m[1]))
			}
			if regexp.MustCompile(`\beval\(|new Function\(|innerHTML|outerHTML|insertAdjacentHTML|document\.write|createContextualFragment`).Match(b) {
				t.Errorf("%s builds code or HTML from strings", name)
			}
		}
	}
	fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !used[p] {
			t.Errorf("%s is embedded but nothing loads it", p)
		}
		return err
	})
}

// A revalidated file (304) and a missing one (404) are each one request of the ui route,
// never also an "unknown" error, and keep the page's security headers.
func TestDashboardNotModifiedAndNotFoundCountOnceAsTheUIRoute(t *testing.T) {
	n, c := startHTTPNode(t, Config{})
	resp, _ := c.rawGet("/ui/app.js")
	notModified, _ := c.rawGet("/ui/app.js", "If-None-Match", resp.Header.Get("ETag"))
	notFound, _ := c.rawGet("/ui/missing.js")
	for _, r := range []*http.Response{notModified, notFound} {
		if r.Header.Get("Content-Security-Policy") != uiCSP || r.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%d reply: headers %v, want the CSP and nosniff", r.StatusCode, r.Header)
		}
	}
	if notModified.StatusCode != http.StatusNotModified || notFound.StatusCode != http.StatusNotFound {
		t.Fatalf("statuses %d, %d; want 304, 404", notModified.StatusCode, notFound.StatusCode)
	}
	got := scrape(t, n.Metrics().Registry)
	for name, want := range map[string]float64{
		series("tagcache_requests_total", "command", "ui", "protocol", "http", "result", "ok"):         2,
		series("tagcache_requests_total", "command", "ui", "protocol", "http", "result", "error"):      1,
		series("tagcache_requests_total", "command", "unknown", "protocol", "http", "result", "error"): 0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}
