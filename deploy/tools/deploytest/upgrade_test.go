package deploytest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeAPIServer answers the few Kubernetes API requests `helm template --dry-run=server`
// makes for the chart's lookup of its own Secret: discovery, the server version, and a GET
// of Secrets (the ones it holds, else 404).
type fakeAPIServer struct {
	*httptest.Server
	mu       sync.Mutex
	secrets  map[string]*corev1.Secret // by name, in releaseNamespace
	requests []string
}

func newFakeAPIServer(t *testing.T) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{secrets: map[string]*corev1.Secret{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	secretsPath := "/api/v1/namespaces/" + releaseNamespace + "/secrets/"
	switch {
	case r.URL.Path == "/version":
		major, minor, _ := strings.Cut(kubeVersion, ".")
		minor, _, _ = strings.Cut(minor, ".")
		reply(map[string]string{"major": major, "minor": minor, "gitVersion": "v" + kubeVersion})
	case r.URL.Path == "/api":
		reply(metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"}})
	case r.URL.Path == "/apis":
		reply(metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}})
	case r.URL.Path == "/api/v1":
		reply(metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "v1",
			APIResources: []metav1.APIResource{{Name: "secrets", Namespaced: true, Kind: "Secret", Verbs: []string{"get", "list"}}}})
	case r.Method == "GET" && strings.HasPrefix(r.URL.Path, secretsPath):
		s, ok := f.secrets[strings.TrimPrefix(r.URL.Path, secretsPath)]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Reason: metav1.StatusReasonNotFound, Code: 404})
			return
		}
		reply(s)
	default:
		http.NotFound(w, r)
	}
}

// kubeconfig writes a kubeconfig that points at the fake server.
func (f *fakeAPIServer) kubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: " + f.URL +
		"\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {}\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpgradeKeepsTheGeneratedSecrets: a first install generates the password and the
// cluster key; an upgrade (the Secret now exists) renders the same ones, so the pods
// keep their credentials and their cluster; a value given explicitly wins.
func TestUpgradeKeepsTheGeneratedSecrets(t *testing.T) {
	api := newFakeAPIServer(t)
	kubeconfig := api.kubeconfig(t)
	renderServer := func(sets ...string) *objects {
		t.Helper()
		args := []string{"template", releaseName, chartDir, "--namespace", releaseNamespace, "--dry-run=server", "--kubeconfig", kubeconfig, "--kube-version", kubeVersion}
		for _, s := range sets {
			args = append(args, "--set", s)
		}
		out, err := helm(args...)
		if err != nil {
			t.Fatal(err)
		}
		return decodeAll(t, out)
	}

	first := renderServer().secrets[fullname]
	if first == nil {
		t.Fatalf("first install renders no Secret %s", fullname)
	}
	again := renderServer().secrets[fullname]
	if string(again.Data["password"]) == string(first.Data["password"]) {
		t.Fatal("two first installs generated the same password: the lookup cannot be what keeps it")
	}

	// The Secret is installed: upgrades find it and keep both values.
	api.mu.Lock()
	api.secrets[fullname] = first
	api.mu.Unlock()
	var checksums []string
	for range 2 {
		o := renderServer()
		up := o.secrets[fullname]
		for _, key := range []string{"password", "cluster-key"} {
			if string(up.Data[key]) != string(first.Data[key]) {
				t.Errorf("upgrade changed %s: %q → %q", key, first.Data[key], up.Data[key])
			}
		}
		checksums = append(checksums, o.statefulSet.Spec.Template.Annotations["checksum/secret"])
	}
	// An upgrade that changes nothing in the Secret does not roll the pods.
	if checksums[0] == "" || checksums[0] != checksums[1] {
		t.Errorf("pod template checksum/secret differs between two upgrades with the same Secret: %q, %q", checksums[0], checksums[1])
	}
	// An explicit value replaces the stored one.
	changed := renderServer("auth.password=chosen-by-the-operator-0123456789")
	if changed.statefulSet.Spec.Template.Annotations["checksum/secret"] == checksums[0] {
		t.Error("a new password does not change the pod template: the pods would keep the old one")
	}
	up := changed.secrets[fullname]
	if string(up.Data["password"]) != "chosen-by-the-operator-0123456789" {
		t.Errorf("auth.password did not replace the stored password: %q", up.Data["password"])
	}
	if string(up.Data["cluster-key"]) != string(first.Data["cluster-key"]) {
		t.Error("changing the password changed the cluster key")
	}
	api.mu.Lock()
	looked := strings.Join(api.requests, "\n")
	api.mu.Unlock()
	if !strings.Contains(looked, "GET /api/v1/namespaces/"+releaseNamespace+"/secrets/"+fullname) {
		t.Errorf("helm never looked the Secret up; requests:\n%s", looked)
	}
}
