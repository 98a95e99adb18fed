package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The live tests run the real binary the way the rendered pod would: the container's
// arguments and environment (the Downward API and the Secrets resolved as the kubelet
// would), with only the ports moved to free ones so that tests can share a machine. The
// node binds the chart's address (0.0.0.0), so password checks are on as in a pod; its
// --join name does not resolve here, so it finds nobody, as the first pod of a
// StatefulSet does.

// externalSecrets stand for the Secrets an operator makes before installing with
// existingSecret (ci/existing-secret-values.yaml).
var externalSecrets = map[string]map[string]string{
	"tagcache-credentials": {
		"client-password": "operator-made-client-password-0123456789",
		"gossip-key":      "operator-made-cluster-key-0123456789abcdef",
	},
}

// node is a tagcache server started from a rendered container.
type node struct {
	cmd      *exec.Cmd
	local    map[string]int // container port name → the local port it listens on
	env      map[string]string
	logs     *syncBuffer
	done     chan struct{}
	exitErr  error
	started  time.Time
	shutdown time.Duration // --shutdown-timeout
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// resolveEnv gives a container's environment as the kubelet would.
func resolveEnv(t *testing.T, c corev1.Container, o *objects, podName string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "status.podIP":
				env[e.Name] = "127.0.0.1"
			case "metadata.name":
				env[e.Name] = podName
			case "metadata.namespace":
				env[e.Name] = releaseNamespace
			default:
				t.Fatalf("env %s: field %s not simulated", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := o.secretValue(ref.Name, ref.Key, externalSecrets)
			if !ok {
				t.Fatalf("env %s: Secret %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			t.Fatalf("env %s: source %+v not simulated", e.Name, e.ValueFrom)
		}
	}
	return env
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) with the value of an env var defined earlier, as the kubelet does.
func expand(s string, env map[string]string) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

func envList(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// freePorts finds n ports free for TCP and UDP on every address.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		closers = append(closers, l)
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		closers = append(closers, u)
		ports = append(ports, p)
	}
	return ports
}

// startNode runs the StatefulSet's container of o as pod podName.
func startNode(t *testing.T, o *objects, podName string) *node {
	t.Helper()
	c := o.statefulSet.Spec.Template.Spec.Containers[0]
	env := resolveEnv(t, c, o, podName)
	n := &node{local: map[string]int{}, env: env, logs: &syncBuffer{}, done: make(chan struct{})}
	var args []string
	for _, a := range c.Args {
		args = append(args, expand(a, env))
	}
	flags := parseFlagArgs(t, "tagcache container", c.Args[1:])
	d, err := time.ParseDuration(flags["shutdown-timeout"])
	if err != nil {
		t.Fatalf("--shutdown-timeout: %v", err)
	}
	n.shutdown = d
	// Move every port to a free one: the later flag wins.
	free := freePorts(t, 5)
	byFlag := map[string]int{}
	for _, name := range []string{"text", "http", "resp", "gossip-tcp", "peer"} {
		byFlag[portFlags[name]] = free[len(byFlag)]
	}
	for _, p := range c.Ports {
		n.local[p.Name] = byFlag[portFlags[p.Name]]
	}
	for flag, port := range byFlag {
		args = append(args, fmt.Sprintf("--%s=%d", flag, port))
	}
	n.cmd = exec.Command(tagcacheBin, args...)
	n.cmd.Env = envList(env) // nothing of the test's own environment
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	n.started = time.Now()
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.exitErr = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		select {
		case <-n.done:
		default:
			n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("node %s logs:\n%s", podName, n.logs.String())
		}
	})
	return n
}

// get does an HTTP GET on the node's container port by name, with credentials if user
// is not empty.
func (n *node) get(port, path, user, password string) (int, string, error) {
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", n.local[port], path), nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// probe does what the kubelet does for an HTTP probe of c: 200–399 succeeds.
func (n *node) probe(p *corev1.Probe) (bool, string) {
	port := p.HTTPGet.Port.StrVal
	code, body, err := n.get(port, p.HTTPGet.Path, "", "")
	if err != nil {
		return false, err.Error()
	}
	return code >= 200 && code < 400, fmt.Sprintf("%d %s", code, body)
}

// waitFor polls cond until it holds or timeout passes (or the node exits).
func (n *node) waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			t.Fatalf("node exited (%v) while waiting for %s", n.exitErr, what)
		default:
		}
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
}

// stop sends SIGTERM, as the kubelet does after preStop, and waits for the graceful leave.
func (n *node) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(n.shutdown + 5*time.Second):
		t.Fatalf("node still running %s after SIGTERM (--shutdown-timeout %s)", n.shutdown+5*time.Second, n.shutdown)
	}
	if n.exitErr != nil {
		t.Errorf("node exited with %v after SIGTERM, want 0", n.exitErr)
	}
	return time.Since(start)
}

// TestEveryVariantStartsANodeThatStopsGracefully: the binary accepts the arguments and
// environment of every variant, answers the startup probe, and leaves on SIGTERM in time.
func TestEveryVariantStartsANodeThatStopsGracefully(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			o := decodeAll(t, render(t, v))
			c := o.statefulSet.Spec.Template.Spec.Containers[0]
			n := startNode(t, o, fullname+"-0")
			n.waitFor(t, "startup probe", 10*time.Second, func() (bool, string) { return n.probe(c.StartupProbe) })
			if ok, detail := n.probe(c.LivenessProbe); !ok {
				t.Errorf("liveness probe fails on a started node: %s", detail)
			}
			took := n.stop(t)
			t.Logf("graceful stop took %s", took.Round(time.Millisecond))
			if strings.Contains(n.logs.String(), `"@level":"error"`) {
				t.Errorf("node logged errors:\n%s", n.logs.String())
			}
		})
	}
}

// TestNodeServesWithTheChartsArgumentsAndPassesTheHelmTest runs one node as the default
// chart's pod would run, checks its probes answer as the chart expects (not ready while
// joining, ready once it serves alone), that /metrics answers the ServiceMonitor without
// credentials, and then runs the chart's `helm test` steps against it: they pass, and the
// step that checks the invalidation fails when the invalidation is left out.
func TestNodeServesWithTheChartsArgumentsAndPassesTheHelmTest(t *testing.T) {
	v := variant{name: "live", sets: []string{"serviceMonitor.enabled=true", "auth.username=chart-test"}}
	o := decodeAll(t, render(t, v))
	c := o.statefulSet.Spec.Template.Spec.Containers[0]
	n := startNode(t, o, fullname+"-0")

	n.waitFor(t, "startup probe", 10*time.Second, func() (bool, string) { return n.probe(c.StartupProbe) })
	if ok, detail := n.probe(c.LivenessProbe); !ok {
		t.Errorf("liveness probe: %s", detail)
	}
	// Joining: --join names a Service nobody answers at here, so the node is not ready
	// for its first 10 s, then serves alone.
	if ok, detail := n.probe(c.ReadinessProbe); time.Since(n.started) < 9*time.Second {
		if ok || !strings.Contains(detail, "503") || !strings.Contains(detail, "joining") {
			t.Errorf("readiness probe while joining: %s, want 503 joining", detail)
		}
	}
	n.waitFor(t, "readiness probe", 20*time.Second, func() (bool, string) { return n.probe(c.ReadinessProbe) })
	t.Logf("ready %s after start", time.Since(n.started).Round(100*time.Millisecond))

	// /metrics as the ServiceMonitor scrapes it: no credentials.
	ep := o.serviceMonitor.Spec.Endpoints[0]
	svcPort := map[string]string{}
	for _, sp := range o.services[fullname+"-headless"].Spec.Ports {
		svcPort[sp.Name] = sp.TargetPort.StrVal
	}
	code, body, err := n.get(svcPort[ep.Port], ep.Path, "", "")
	if err != nil || code != 200 || !strings.Contains(body, "tagcache_") {
		t.Errorf("GET %s without credentials: %d %v %.200s", ep.Path, code, err, body)
	}
	// The client ports take the chart's credentials, and only them.
	user, pass := n.env["TAGCACHE_USERNAME"], n.env["TAGCACHE_PASSWORD"]
	if code, _, _ := n.get("http", "/stats", user, pass); code != 200 {
		t.Errorf("GET /stats with the chart's credentials: %d", code)
	}
	if code, _, _ := n.get("http", "/stats", "admin", "password"); code != 401 {
		t.Errorf("GET /stats with admin/password: %d, want 401", code)
	}

	steps := testSteps(t, o)
	for _, name := range []string{"put", "get", "invalidate", "check-invalidated"} {
		if _, ok := steps.byName[name]; !ok {
			t.Fatalf("the helm test has no step %q", name)
		}
	}
	// Without the invalidation, the check must catch the stale value.
	for _, name := range []string{"put", "get"} {
		if out, err := steps.run(t, n, name); err != nil {
			t.Fatalf("step %s: %v\n%s", name, err, out)
		}
	}
	out, err := steps.run(t, n, "check-invalidated")
	if err == nil {
		t.Fatalf("step check-invalidated passed with the stale value still stored: it checks nothing\n%s", out)
	}
	if !strings.Contains(out, "unexpected reply to g bench:0") {
		t.Fatalf("step check-invalidated failed, but not by counting the stale value as an error:\n%s", out)
	}
	// The whole test, in order.
	for _, name := range steps.order {
		out, err := steps.run(t, n, name)
		if err != nil {
			t.Fatalf("step %s: %v\n%s", name, err, out)
		}
		t.Logf("step %s: ok", name)
	}
	// It leaves nothing behind.
	for tag := range 4 {
		code, body, _ := n.get("http", "/keys-by-tag?tag=btag:"+strconv.Itoa(tag), user, pass)
		var reply struct{ Keys []string }
		if json.Unmarshal([]byte(body), &reply); code != 200 || len(reply.Keys) != 0 {
			t.Errorf("after the helm test, tag btag:%d: %d %s, want no keys", tag, code, body)
		}
	}
	took := n.stop(t)
	t.Logf("graceful stop took %s", took.Round(time.Millisecond))
}

// helmTestSteps are the containers of the helm test pod, in the order they run.
type helmTestSteps struct {
	order  []string
	byName map[string]corev1.Container
	o      *objects
}

func testSteps(t *testing.T, o *objects) *helmTestSteps {
	t.Helper()
	if o.testPod == nil {
		t.Fatal("no helm test pod")
	}
	s := &helmTestSteps{byName: map[string]corev1.Container{}, o: o}
	for _, c := range append(o.testPod.Spec.InitContainers, o.testPod.Spec.Containers...) {
		s.order = append(s.order, c.Name)
		s.byName[c.Name] = c
	}
	return s
}

// run runs one step against n, its client Service address moved to the node's ports.
func (s *helmTestSteps) run(t *testing.T, n *node, name string) (string, error) {
	t.Helper()
	c := s.byName[name]
	clientHost := fullname + "." + releaseNamespace + ".svc.cluster.local"
	local := map[string]int{} // client Service port → the node's local port
	for _, sp := range s.o.services[fullname].Spec.Ports {
		local[strconv.Itoa(int(sp.Port))] = n.local[sp.TargetPort.StrVal]
	}
	var args []string
	for _, a := range c.Args {
		name, v, isFlag := strings.Cut(a, "=")
		switch {
		case isFlag && name == "--host" && v == clientHost:
			a = "--host=127.0.0.1"
		case isFlag && name == "--port":
			a = fmt.Sprintf("--port=%d", local[v])
		case isFlag && name == "--targets":
			host, port, _ := strings.Cut(v, ":")
			if host == clientHost {
				a = fmt.Sprintf("--targets=127.0.0.1:%d", local[port])
			}
		}
		if strings.Contains(a, clientHost) {
			t.Fatalf("step %s: argument %q not mapped to the local node", name, a)
		}
		args = append(args, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tagcacheBin, args...)
	cmd.Env = envList(resolveEnv(t, c, s.o, "test"))
	out, err := cmd.CombinedOutput()
	return fmt.Sprintf("$ tagcache %s\n%s", strings.Join(args, " "), out), err
}
