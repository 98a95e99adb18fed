package clustertests

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The dashboard's end-to-end test: headless Chromium (Debian's chromium package, driven
// by chromedp) against a real 3-node cluster. It starts processes and a browser, so it
// runs only with TAGCACHE_CLUSTER_TESTS=1 (make e2e) and skips when chromium is absent.
const (
	// envChromium is the browser to run. Default: chromium on $PATH.
	envChromium = "TAGCACHE_CHROMIUM"
	// envArtifacts is the folder for the screenshots, one PNG per view. Default: a
	// temporary folder, logged.
	envArtifacts = "TAGCACHE_E2E_ARTIFACTS"
)

// e2eTimeout bounds the whole browser session; e2eWait bounds one wait for the page.
const (
	e2eTimeout = 3 * time.Minute
	e2eWait    = 20 * time.Second
)

func TestDashboardEndToEnd(t *testing.T) {
	needClusterTests(t)
	browser := os.Getenv(envChromium)
	if browser == "" {
		var err error
		if browser, err = exec.LookPath("chromium"); err != nil {
			t.Skipf("skipped: no chromium on PATH (apt-get install -y chromium, or set %s)", envChromium)
		}
	}
	artifacts := os.Getenv(envArtifacts)
	if artifacts == "" {
		artifacts = t.TempDir()
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", artifacts)

	c := startCluster(t, 3, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), e2eTimeout)
	defer cancel()

	// Data written through the API, spread over every node: the keys of one user carry
	// its tag; others carry other tags, so the invalidation must pick the right ones.
	const tag = "e2e-user:42"
	var userKeys []string
	for i := range 6 {
		key := fmt.Sprintf("user:42:item:%d", i)
		userKeys = append(userKeys, key)
		body := map[string]any{"key": key, "value": fmt.Sprintf(`{"item":%d,"owner":"ada"}`, i),
			"tags": []string{tag, "items"}, "ttl_ms": 600000}
		if _, err := c.call(ctx, c.Node(i%3), "POST", "/put", body, nil); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	for i := range 30 {
		if err := c.Put(ctx, i%3, fmt.Sprintf("page:/p/%d", i), "<html>", "pages", fmt.Sprintf("user:%d", i%5)); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	// Keys a browser cannot put in a URL path, a number a JS number would round, and two
	// tags that differ only by a leading space.
	for _, e := range [][3]string{{".", `{"id":12345678901234567891}`, " e2e-spaced"}, {"..", "dots", "dots"}, {"e2e-twin", "twin", "e2e-spaced"}} {
		body := map[string]any{"key": e[0], "value": e[1], "tags": []string{e[2]}, "ttl_ms": 600000}
		if _, err := c.call(ctx, c.Node(0), "POST", "/put", body, nil); err != nil {
			t.Fatalf("put %q: %v", e[0], err)
		}
	}
	// has reports whether node i finds key (in the body: "." and ".." cannot be paths).
	has := func(i int, key string) bool {
		t.Helper()
		var got struct{ Items []struct{ Key string } }
		if _, err := c.call(ctx, c.Node(i), "POST", "/keys/bulk/get", map[string]any{"keys": []string{key}}, &got); err != nil {
			t.Fatalf("bulk get %q through %s: %v", key, c.Node(i).Name, err)
		}
		return len(got.Items) == 1
	}
	// Some traffic for the charts, while the test runs.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() {
		for i := 0; loadCtx.Err() == nil; i++ {
			c.Get(loadCtx, i%3, fmt.Sprintf("page:/p/%d", i%40))
			select {
			case <-loadCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(browser),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()

	// Start the browser on a context without a per-step timeout: it lives as long as it.
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	p := &page{t: t, ctx: bctx, dir: artifacts}
	user, pass := c.Credentials()
	base := "http://" + c.Node(0).Endpoint().HTTP

	// Log in.
	p.run("open the dashboard", chromedp.Navigate(base+"/"))
	p.wait("the login form", `!document.getElementById('login-view').hidden`)
	p.screenshot("login")
	p.run("log in",
		chromedp.SendKeys(chromedp.ID("login-username"), user),
		chromedp.SendKeys(chromedp.ID("login-password"), pass),
		chromedp.Click(chromedp.ID("login-submit")))

	// Overview: three members, alive, with their figures.
	p.wait("three alive members on the overview",
		`document.querySelectorAll('#members-body tr[data-state="alive"]').length === 3`)
	p.wait("every member's figures and request rate",
		`[...document.querySelectorAll('#members-body tr')].every(r => !r.lastChild.textContent.includes('–'))`)
	p.wait("the test's traffic in the request rate", `parseFloat(document.getElementById('card-ops').textContent) > 5`)
	if got := p.text("#card-alive"); got != "3 of 3" {
		t.Errorf("members alive card %q, want 3 of 3", got)
	}
	p.screenshot("overview")

	// Ring: one cell per partition, three owners.
	p.run("open the ring", chromedp.Navigate(base+"/ui/#ring"))
	p.wait("the ring grid", `document.querySelectorAll('#ring-grid rect').length === 271`)
	p.wait("three owners", `new Set([...document.querySelectorAll('#ring-grid rect')].map(r => r.dataset.owner)).size === 3`)
	p.screenshot("ring")

	// Keys: find the user's keys by their tag and open one.
	p.run("open keys", chromedp.Navigate(base+"/ui/#keys"))
	p.run("search by tag",
		chromedp.WaitVisible(chromedp.ID("search-form")),
		chromedp.SetValue(chromedp.ID("search-mode"), "tag"),
		chromedp.SendKeys(chromedp.ID("search-q"), tag),
		chromedp.Click(chromedp.ID("search-submit")))
	p.wait("the tag's six keys", `document.querySelectorAll('#keys-body tr[data-key]').length === 6`)
	found := eval[[]string](p, `[...document.querySelectorAll('#keys-body tr[data-key]')].map(r => r.dataset.key)`)
	if !slices.Equal(found, userKeys) {
		t.Errorf("keys found by tag %q: %v, want %v", tag, found, userKeys)
	}
	p.run("open a key", chromedp.Click(chromedp.CSS(`#keys-body tr[data-key="user:42:item:3"] button`)))
	p.wait("the key's value", `document.getElementById('key-value').textContent.includes('"item": 3')`)
	if got := p.text("#key-tags"); !strings.Contains(got, tag) {
		t.Errorf("key tags %q, want %s among them", got, tag)
	}
	p.screenshot("keys")

	// Search by key prefix, and delete a key from the page.
	p.run("search by prefix",
		chromedp.SetValue(chromedp.ID("search-mode"), "prefix"),
		chromedp.SetValue(chromedp.ID("search-q"), "page:/p/1"),
		chromedp.Click(chromedp.ID("search-submit")))
	p.wait("the 11 keys starting with page:/p/1", `document.querySelectorAll('#keys-body tr[data-key]').length === 11`)
	p.run("open page:/p/12", chromedp.Click(chromedp.CSS(`#keys-body tr[data-key="page:/p/12"] button`)))
	p.wait("its value", `document.getElementById('key-name').textContent === 'page:/p/12' && document.getElementById('key-value').textContent === '<html>'`)
	p.run("delete it", chromedp.Click(chromedp.ID("key-delete")))
	p.wait("the confirmation", `document.getElementById('confirm-dialog').open`)
	p.run("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait("the deletion", `document.getElementById('key-status').textContent === 'Deleted.'`)
	for i := range 3 {
		if v, ok, err := c.Get(ctx, i, "page:/p/12"); err != nil || ok {
			t.Errorf("GET page:/p/12 through %s after deleting it from the page: %q, found %v, err %v", c.Node(i).Name, v, ok, err)
		}
	}

	// The keys "." and "..": opened with every digit of their value, and deleted.
	p.run("search for the dot keys",
		chromedp.SetValue(chromedp.ID("search-mode"), "prefix"),
		chromedp.SetValue(chromedp.ID("search-q"), "."),
		chromedp.Click(chromedp.ID("search-submit")))
	p.wait("the keys . and ..", `document.querySelectorAll('#keys-body tr[data-key]').length === 2`)
	p.run("open .", chromedp.Click(chromedp.CSS(`#keys-body tr[data-key="."] button`)))
	p.wait("its value with every digit", `document.getElementById('key-name').textContent === '.' && document.getElementById('key-value').textContent.includes('12345678901234567891')`)
	p.run("open ..", chromedp.Click(chromedp.CSS(`#keys-body tr[data-key=".."] button`)))
	p.wait("its value", `document.getElementById('key-name').textContent === '..' && document.getElementById('key-value').textContent === 'dots'`)
	p.run("delete ..", chromedp.Click(chromedp.ID("key-delete")))
	p.wait("the confirmation", `document.getElementById('confirm-dialog').open`)
	p.run("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait("the deletion", `document.getElementById('key-status').textContent === 'Deleted.'`)
	for i := range 3 {
		if has(i, "..") || !has(i, ".") {
			t.Errorf("through %s after deleting .. from the page: .. found %v, . found %v; want only .", c.Node(i).Name, has(i, ".."), has(i, "."))
		}
	}

	// Tags: the tag is listed; invalidate it from the page, with confirmation.
	p.run("open tags", chromedp.Navigate(base+"/ui/#tags"))
	p.wait("the tag in the list", fmt.Sprintf(`!!document.querySelector('#tags-body tr[data-tag=%q]')`, tag))
	p.run("ask to invalidate", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#tags-body tr[data-tag=%q] button`, tag))))
	p.wait("the confirmation", `document.getElementById('confirm-dialog').open`)
	p.screenshot("tags-confirm")
	p.run("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait("the invalidation report", `document.getElementById('invalidate-result').dataset.success === 'true'`)
	if got := p.text("#invalidate-count"); got != "6" {
		t.Errorf("invalidation removed %q entries, want 6", got)
	}
	nodes := eval[[]string](p, `[...document.querySelectorAll('#invalidate-body tr')].map(r => r.dataset.node)`)
	if len(nodes) != 3 {
		t.Errorf("invalidation report lists nodes %v, want all three", nodes)
	}
	p.screenshot("tags")

	// Through the API, on every node: the keys are gone, the others are not.
	for i := range 3 {
		var byTag struct{ Keys []string }
		if _, err := c.call(ctx, c.Node(i), "GET", "/keys-by-tag?tag="+url.QueryEscape(tag), nil, &byTag); err != nil {
			t.Fatal(err)
		}
		if len(byTag.Keys) != 0 {
			t.Errorf("%s still lists %v under %s", c.Node(i).Name, byTag.Keys, tag)
		}
		for _, k := range userKeys {
			if v, ok, err := c.Get(ctx, i, k); err != nil || ok {
				t.Errorf("GET %s through %s after the invalidation: %q, found %v, err %v", k, c.Node(i).Name, v, ok, err)
			}
		}
		if _, ok, err := c.Get(ctx, i, "page:/p/7"); err != nil || !ok {
			t.Errorf("GET page:/p/7 through %s: found %v, err %v; an untagged key must survive", c.Node(i).Name, ok, err)
		}
	}

	// A tag is invalidated exactly as listed: " e2e-spaced" is not "e2e-spaced".
	p.run("ask to invalidate the spaced tag", chromedp.Click(chromedp.CSS(`#tags-body tr[data-tag=" e2e-spaced"] button`)))
	p.wait("the confirmation with the exact tag", `document.getElementById('confirm-dialog').open && document.getElementById('confirm-text').textContent.includes('“ e2e-spaced”')`)
	p.run("confirm", chromedp.Click(chromedp.ID("confirm-yes")))
	p.wait("its report", `document.getElementById('invalidate-result').dataset.tag === ' e2e-spaced' && document.getElementById('invalidate-result').dataset.success === 'true'`)
	for i := range 3 {
		if has(i, ".") || !has(i, "e2e-twin") {
			t.Errorf("through %s after invalidating %q: . found %v, e2e-twin found %v; want only e2e-twin", c.Node(i).Name, " e2e-spaced", has(i, "."), has(i, "e2e-twin"))
		}
	}

	// Charts: the traffic above, per command.
	p.run("open charts", chromedp.Navigate(base+"/ui/#charts"))
	p.wait("lines on both charts", `document.querySelectorAll('#chart-ops path.series').length > 0 && document.querySelectorAll('#chart-p99 path.series').length > 0`)
	p.wait("the GET traffic in the table", `parseFloat(document.querySelector('#commands-body tr[data-command="http get"] td')?.textContent) > 5`)
	p.screenshot("charts")

	// The ring changes as a node joins and leaves.
	p.run("open the ring again", chromedp.Navigate(base+"/ui/#ring"))
	p.wait("the ring grid", `document.querySelectorAll('#ring-grid rect').length === 271`)
	v0 := eval[string](p, `document.getElementById('ring-grid').dataset.version`)
	joined, err := c.Add(ctx)
	if err != nil {
		t.Fatalf("add a node: %v", err)
	}
	p.wait("four owners after the join", `new Set([...document.querySelectorAll('#ring-grid rect')].map(r => r.dataset.owner)).size === 4`)
	p.wait("cells outlined as moved", `document.querySelectorAll('#ring-grid rect.moved').length > 0`)
	if v := eval[string](p, `document.getElementById('ring-grid').dataset.version`); v == v0 {
		t.Errorf("ring version still %s after a join", v)
	}
	p.screenshot("ring-after-join")
	if _, err := c.Leave(ctx, joined); err != nil {
		t.Fatalf("leave: %v", err)
	}
	p.wait("three owners after the leave", `new Set([...document.querySelectorAll('#ring-grid rect')].map(r => r.dataset.owner)).size === 3`)

	// The node the page talks to goes away: the page says so.
	stopLoad()
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	p.wait("the unreachable banner", `!document.getElementById('banner').hidden && document.getElementById('banner').textContent.includes('unreachable')`)
	p.screenshot("unreachable")
}

// page drives one browser tab and fails the test, with a screenshot, when a step fails.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string
}

func (p *page) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, e2eWait)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail("%s: %v", what, err)
	}
}

// eval returns the value of the JavaScript expression expr.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, e2eWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls the JavaScript expression cond until it is true, for at most e2eWait.
func (p *page) wait(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.fail("waiting %s for %s (%s): not true (last error %v)", e2eWait, what, cond, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *page) text(sel string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, e2eWait)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.fail("read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, e2eWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.fail("screenshot %s: %v", name, err)
	}
	path := filepath.Join(p.dir, "dashboard-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *page) fail(format string, args ...any) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		path := filepath.Join(p.dir, "dashboard-failure.png")
		os.WriteFile(path, png, 0o644)
		args = append(args, path)
		format += " (screenshot %s)"
	}
	p.t.Fatalf(format, args...)
}
