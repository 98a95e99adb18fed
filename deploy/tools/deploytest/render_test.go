package deploytest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	monv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// variant is one set of values the chart is rendered with: the defaults, or the
// defaults plus one of the chart's ci/*-values.yaml files and --set arguments.
type variant struct {
	name  string
	file  string   // under the chart's ci/, or ""
	sets  []string // --set arguments
	extra []string // more helm arguments
}

// variants are the defaults and every ci/*-values.yaml of the chart.
func variants(t *testing.T) []variant {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s: %v", chartDir, err)
	}
	vs := []variant{{name: "default"}}
	for _, f := range files {
		vs = append(vs, variant{name: strings.TrimSuffix(filepath.Base(f), "-values.yaml"), file: filepath.Join("ci", filepath.Base(f))})
	}
	return vs
}

func (v variant) helmArgs() []string {
	var args []string
	if v.file != "" {
		args = append(args, "--values", filepath.Join(chartDir, v.file))
	}
	for _, s := range v.sets {
		args = append(args, "--set", s)
	}
	return append(args, v.extra...)
}

// values are the variant's values as helm merges them: values.yaml, then the file. (The
// --set arguments of a variant are not merged here; the tests that use them check what
// they set themselves.)
func (v variant) values(t *testing.T) map[string]any {
	t.Helper()
	base := readYAMLMap(t, filepath.Join(chartDir, "values.yaml"))
	if v.file != "" {
		mergeValues(base, readYAMLMap(t, filepath.Join(chartDir, v.file)))
	}
	return base
}

func readYAMLMap(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func mergeValues(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeValues(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// value reads a dotted path out of values.
func value(vals map[string]any, path string) any {
	var cur any = vals
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[p]
	}
	return cur
}

// render runs helm template for a variant.
func render(t *testing.T, v variant) string {
	t.Helper()
	args := append([]string{"template", releaseName, chartDir, "--namespace", releaseNamespace, "--kube-version", kubeVersion}, v.helmArgs()...)
	out, err := helm(args...)
	if err != nil {
		t.Fatalf("variant %s: %v", v.name, err)
	}
	return out
}

// objects are the rendered objects of one variant, decoded strictly.
type objects struct {
	all             []any
	statefulSet     *appsv1.StatefulSet
	services        map[string]*corev1.Service
	secrets         map[string]*corev1.Secret
	serviceAccounts map[string]*corev1.ServiceAccount
	pdb             *policyv1.PodDisruptionBudget
	networkPolicy   *networkingv1.NetworkPolicy
	serviceMonitor  *monv1.ServiceMonitor
	testPod         *corev1.Pod
}

// kinds are the API types the chart may render, by apiVersion and kind. A kind not
// listed fails the test: add it here with its Go type, so that it is decoded strictly.
var kinds = map[string]func() any{
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"v1/Pod":                                  func() any { return &corev1.Pod{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monv1.ServiceMonitor{} },
}

// decodeStrict decodes one YAML document into its Kubernetes type: unknown fields,
// duplicate fields, fields in the wrong case and values of the wrong type all fail.
func decodeStrict(doc []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, fmt.Errorf("type: %w", err)
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q is not a type this test knows (see kinds)", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	return obj, nil
}

// decodeAll splits helm's output into documents and decodes each strictly.
func decodeAll(t *testing.T, manifest string) *objects {
	t.Helper()
	o := &objects{
		services:        map[string]*corev1.Service{},
		secrets:         map[string]*corev1.Secret{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split manifest: %v", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("decode %v\n%s", err, doc)
		}
		o.all = append(o.all, obj)
		name := metaOf(obj).Name
		dup := func(kind string) { t.Errorf("two %s objects named %s", kind, name) }
		switch x := obj.(type) {
		case *appsv1.StatefulSet:
			if o.statefulSet != nil {
				dup("StatefulSet")
			}
			o.statefulSet = x
		case *corev1.Service:
			if o.services[name] != nil {
				dup("Service")
			}
			o.services[name] = x
		case *corev1.Secret:
			if o.secrets[name] != nil {
				dup("Secret")
			}
			o.secrets[name] = x
		case *corev1.ServiceAccount:
			o.serviceAccounts[name] = x
		case *corev1.Pod:
			if o.testPod != nil {
				dup("Pod")
			}
			o.testPod = x
		case *policyv1.PodDisruptionBudget:
			o.pdb = x
		case *networkingv1.NetworkPolicy:
			o.networkPolicy = x
		case *monv1.ServiceMonitor:
			o.serviceMonitor = x
		}
	}
	if o.statefulSet == nil {
		t.Fatal("no StatefulSet rendered")
	}
	return o
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

func metaOf(obj any) *metav1.ObjectMeta {
	switch x := obj.(type) {
	case *appsv1.StatefulSet:
		return &x.ObjectMeta
	case *corev1.Service:
		return &x.ObjectMeta
	case *corev1.Secret:
		return &x.ObjectMeta
	case *corev1.ServiceAccount:
		return &x.ObjectMeta
	case *corev1.Pod:
		return &x.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		return &x.ObjectMeta
	case *networkingv1.NetworkPolicy:
		return &x.ObjectMeta
	case *monv1.ServiceMonitor:
		return &x.ObjectMeta
	}
	panic(fmt.Sprintf("metaOf: %T", obj))
}

func kindOf(obj any) string { return strings.TrimPrefix(fmt.Sprintf("%T", obj), "*") }

// summary lists the rendered objects, for logs.
func (o *objects) summary() string {
	var names []string
	for _, obj := range o.all {
		names = append(names, kindOf(obj)+"/"+metaOf(obj).Name)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// selects reports whether a label selector (matchLabels) picks an object with labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// secretValue finds a Secret key's value among the rendered Secrets, or in external
// (the Secrets an operator made outside the chart).
func (o *objects) secretValue(name, key string, external map[string]map[string]string) (string, bool) {
	if s, ok := o.secrets[name]; ok {
		if v, ok := s.Data[key]; ok {
			return string(v), true
		}
		v, ok := s.StringData[key]
		return v, ok
	}
	v, ok := external[name][key]
	return v, ok
}

func sortedKeys[M ~map[string]V, V any](m M) []string { return slices.Sorted(maps.Keys(m)) }
