package deploytest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValuesSchemaRejectsUnknownKeysAndWrongTypes: values.schema.json refuses what would
// otherwise be ignored or break a node at start, before anything reaches a cluster.
func TestValuesSchemaRejectsUnknownKeysAndWrongTypes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // in helm's error
	}{
		{"unknown top-level key", []string{"--set", "replicas=3"}, "replicas"},
		{"unknown nested key", []string{"--set", "tagcache.maxmemory=1Gi"}, "maxmemory"},
		{"unknown key in a values file", []string{"--values", writeValues(t, "serviceMonitor:\n  enabled: true\n  intervall: 10s\n")}, "intervall"},
		{"string for an integer", []string{"--set", "replicaCount=three"}, "replicaCount"},
		{"string for a port", []string{"--set-string", "ports.http=8080"}, "http"},
		{"string for a boolean", []string{"--set-string", "tagcache.logJSON=yes"}, "logJSON"},
		{"object for a string", []string{"--set", "auth.username.first=ada"}, "username"},
		{"port out of range", []string{"--set", "ports.gossip=70000"}, "gossip"},
		{"no such anti-affinity", []string{"--set", "podAntiAffinity=sometimes"}, "podAntiAffinity"},
		{"no such preset", []string{"--set", "tagcache.clusterPreset=wan"}, "clusterPreset"},
		{"the well-known password", []string{"--set", "auth.password=password"}, "password"},
		{"not a memory quantity", []string{"--set", "resources.limits.memory=lots"}, "memory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range [][]string{
				{"template", releaseName, chartDir, "--kube-version", kubeVersion},
				{"lint", chartDir, "--kube-version", kubeVersion},
			} {
				out, err := helm(append(cmd, tc.args...)...)
				if err == nil {
					t.Fatalf("helm %s %v succeeded; the schema must refuse it:\n%.300s", cmd[0], tc.args, out)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("helm %s %v failed without naming %q: %v", cmd[0], tc.args, tc.want, err)
				}
			}
		})
	}
}

// TestChartRefusesValuesThatWouldBreakTheCluster: the checks the schema cannot express.
func TestChartRefusesValuesThatWouldBreakTheCluster(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a flag the chart sets, in extraArgs", []string{"--set", "tagcache.extraArgs={--join=10.0.0.1:7946}"}, "--join is set by the chart"},
		{"a secret in extraArgs", []string{"--set", "tagcache.extraArgs={--cluster-key=abc}"}, "--cluster-key is set by the chart"},
		{"not a flag in extraArgs", []string{"--set", "tagcache.extraArgs={-- max-memory}"}, "extraArgs"},
		{"max-memory over what the limit allows", []string{"--set", "tagcache.maxMemory=1Gi"}, "does not fit resources.limits.memory"},
		{"no memory limit and no max-memory", []string{"--set", "resources.limits=null"}, "set resources.limits.memory"},
		{"a limit too small for a node", []string{"--set", "resources.limits.memory=100Mi"}, "below 128Mi"},
		{"a memory quantity the chart cannot read", []string{"--set", "resources.limits.memory=1e9"}, "memory"},
		{"Kubernetes older than 1.30", []string{"--kube-version", "1.29.0"}, "kubeVersion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", releaseName, chartDir, "--kube-version", kubeVersion}, tc.args...)
			out, err := helm(args...)
			if err == nil {
				t.Fatalf("helm template %v succeeded; want a failure naming %q:\n%.300s", tc.args, tc.want, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template %v failed without naming %q: %v", tc.args, tc.want, err)
			}
		})
	}
}

// TestMemoryQuantities: --max-memory follows the container limit in every unit operators
// write it in, or the explicit value.
func TestMemoryQuantities(t *testing.T) {
	for _, tc := range []struct {
		sets []string
		want string
	}{
		{[]string{"resources.limits.memory=512Mi"}, "--max-memory=298MiB"},
		{[]string{"resources.limits.memory=1Gi"}, "--max-memory=640MiB"},
		{[]string{"resources.limits.memory=1.5Gi"}, "--max-memory=981MiB"},
		{[]string{"resources.limits.memory=2G"}, "--max-memory=1228MiB"},
		{[]string{"resources.limits.memory=1073741824"}, "--max-memory=640MiB"},
		{[]string{"resources.limits.memory=4Gi", "tagcache.maxMemory=2Gi"}, "--max-memory=2048MiB"},
		{[]string{"resources.limits=null", "tagcache.maxMemory=0"}, "--max-memory=0"},
	} {
		t.Run(strings.Join(tc.sets, ","), func(t *testing.T) {
			v := variant{name: "memory"}
			for _, s := range tc.sets {
				v.sets = append(v.sets, s)
			}
			o := decodeAll(t, render(t, v))
			args := o.statefulSet.Spec.Template.Spec.Containers[0].Args
			found := false
			for _, a := range args {
				found = found || a == tc.want
			}
			if !found {
				t.Errorf("args %v lack %s", args, tc.want)
			}
		})
	}
}

// TestNotesTellHowToConnect renders NOTES.txt (helm template leaves it out) through a copy
// of the chart that wraps it in a ConfigMap.
func TestNotesTellHowToConnect(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(chartDir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), notes, 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes.yaml"), []byte(wrapper), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sets []string
		want []string
	}{
		{nil, []string{
			"tc-tagcache.cache.svc.cluster.local", "text protocol 1984, HTTP 8080, Redis protocol (RESP) 6380",
			"get secret tc-tagcache -o jsonpath='{.data.password}'", "port-forward svc/tc-tagcache", "helm test tc",
		}},
		{[]string{"replicaCount=2"}, []string{"WARNING: 2 nodes lose their majority"}},
		{[]string{"auth.existingSecret=creds", "auth.existingSecretPasswordKey=pw"}, []string{"get secret creds -o jsonpath='{.data.pw}'"}},
	} {
		args := []string{"template", releaseName, dir, "--namespace", releaseNamespace, "--kube-version", kubeVersion, "--show-only", "templates/zz-notes.yaml"}
		for _, s := range tc.sets {
			args = append(args, "--set", s)
		}
		out, err := helm(args...)
		if err != nil {
			t.Fatal(err)
		}
		out = strings.ReplaceAll(out, `\n`, "\n")
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("NOTES with %v lack %q:\n%s", tc.sets, w, out)
			}
		}
	}
}

func writeValues(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
