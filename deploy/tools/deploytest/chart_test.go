package deploytest

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// portFlags maps the chart's container port names to the flags that set them.
var portFlags = map[string]string{
	"text":       "tcp-port",
	"http":       "http-port",
	"resp":       "resp-port",
	"gossip-tcp": "gossip-port",
	"gossip-udp": "gossip-port",
	"peer":       "peer-port",
}

func TestHelmLintPassesForEveryVariant(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			args := append([]string{"lint", chartDir, "--strict", "--namespace", releaseNamespace, "--kube-version", kubeVersion}, v.helmArgs()...)
			if _, err := helm(args...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRenderedObjectsDecodeStrictlyAndKeepTheInvariants(t *testing.T) {
	for _, v := range variants(t) {
		t.Run(v.name, func(t *testing.T) {
			o := decodeAll(t, render(t, v))
			t.Logf("rendered: %s", o.summary())
			checkInvariants(t, o, v.values(t))
		})
	}
}

// checkInvariants checks what the chart promises, for any values.
func checkInvariants(t *testing.T, o *objects, vals map[string]any) {
	t.Helper()
	server := commandHelp(t, "server")
	sts := o.statefulSet
	pod := &sts.Spec.Template
	podLabels := pod.Labels
	headlessName := fullname + "-headless"
	headless := o.services[headlessName]
	client := o.services[fullname]
	if headless == nil || client == nil {
		t.Fatalf("want Services %s and %s, have %v", fullname, headlessName, sortedKeys(o.services))
	}

	// Every object: in the release's namespace, valid names and labels.
	for _, obj := range o.all {
		m := metaOf(obj)
		what := kindOf(obj) + "/" + m.Name
		if m.Namespace != releaseNamespace {
			t.Errorf("%s: namespace %q, want %q", what, m.Namespace, releaseNamespace)
		}
		for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
			t.Errorf("%s: name: %s", what, msg)
		}
		for k, v := range m.Labels {
			for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
				t.Errorf("%s: label %s=%s: %s", what, k, v, msg)
			}
		}
		if m.Labels["app.kubernetes.io/instance"] != releaseName || m.Labels["app.kubernetes.io/name"] != "tagcache" {
			t.Errorf("%s: labels %v lack the release's", what, m.Labels)
		}
	}
	for name, svc := range o.services {
		for _, msg := range validation.IsDNS1123Label(name) {
			t.Errorf("Service %s: name: %s", name, msg)
		}
		if !selects(svc.Spec.Selector, podLabels) {
			t.Errorf("Service %s selector %v does not pick the pods (%v)", name, svc.Spec.Selector, podLabels)
		}
	}

	// StatefulSet: Parallel, the headless Service, replicas, its own selector.
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q, want Parallel", sts.Spec.PodManagementPolicy)
	}
	if sts.Spec.ServiceName != headlessName {
		t.Errorf("serviceName %q, want the headless Service %s", sts.Spec.ServiceName, headlessName)
	}
	if want := int32(toInt(t, value(vals, "replicaCount"))); sts.Spec.Replicas == nil || *sts.Spec.Replicas != want {
		t.Errorf("replicas %s, want %d", ptrString(sts.Spec.Replicas), want)
	}
	if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("StatefulSet selector %v does not pick its own pods %v", sts.Spec.Selector, podLabels)
	}
	if headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("headless Service: clusterIP %q publishNotReadyAddresses %v, want None and true", headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses)
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("command %v: the image's entrypoint (tagcache) must run", c.Command)
	}
	if len(c.Args) == 0 || c.Args[0] != "server" {
		t.Fatalf("args %v, want `server` and its flags", c.Args)
	}

	// Every flag the chart passes exists in `tagcache server --help`; the secrets are not
	// among them (a command line shows in ps).
	flags := parseFlagArgs(t, "tagcache container", c.Args[1:])
	for name := range flags {
		if _, ok := server.flags[name]; !ok {
			t.Errorf("the chart passes --%s, which `tagcache server --help` does not list", name)
		}
	}
	for _, secret := range []string{"password", "cluster-key"} {
		if _, ok := flags[secret]; ok {
			t.Errorf("--%s is on the command line; it must come from a Secret through TAGCACHE_%s", secret, strings.ToUpper(strings.ReplaceAll(secret, "-", "_")))
		}
	}

	// Environment: every TAGCACHE_* is a flag; referenced $(VARS) are defined before use.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s defined twice", e.Name)
		}
		env[e.Name] = e
		if f := envFlag(e.Name); f != "" {
			if _, ok := server.flags[f]; !ok {
				t.Errorf("env %s sets --%s, which `tagcache server --help` does not list", e.Name, f)
			}
			if _, both := flags[f]; both {
				t.Errorf("--%s is set both by a flag and by env %s", f, e.Name)
			}
		}
		for _, msg := range validation.IsEnvVarName(e.Name) {
			t.Errorf("env %s: %s", e.Name, msg)
		}
	}
	for _, a := range c.Args {
		for _, m := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(a, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("argument %q uses $(%s), which the container's env does not define", a, m[1])
			}
		}
	}
	fieldRef := func(name, path string) {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
			t.Errorf("env %s must come from the Downward API field %s, got %+v", name, path, e)
		}
	}
	fieldRef("POD_IP", "status.podIP")
	fieldRef("POD_NAME", "metadata.name")
	if flags["advertise"] != "$(POD_IP)" {
		t.Errorf("--advertise=%q, want the pod IP from the Downward API, $(POD_IP)", flags["advertise"])
	}
	if flags["node-name"] != "$(POD_NAME)" {
		t.Errorf("--node-name=%q, want the stable pod name $(POD_NAME) (a restarted pod rejoins under its name)", flags["node-name"])
	}

	// Secrets: the password and the cluster key, from a Secret the chart renders or the
	// one the values name.
	for envName, valuesPath := range map[string]string{"TAGCACHE_PASSWORD": "auth", "TAGCACHE_CLUSTER_KEY": "clusterKey"} {
		e, ok := env[envName]
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("env %s must come from a Secret, got %+v", envName, e)
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if existing, _ := value(vals, valuesPath+".existingSecret").(string); existing != "" {
			if ref.Name != existing {
				t.Errorf("env %s from Secret %s, want the existing Secret %s", envName, ref.Name, existing)
			}
			if o.secrets[existing] != nil {
				t.Errorf("the chart renders Secret %s, which the values say exists already", existing)
			}
			continue
		}
		v, ok := o.secretValue(ref.Name, ref.Key, nil)
		if !ok {
			t.Errorf("env %s from Secret %s key %s, which the chart does not render", envName, ref.Name, ref.Key)
			continue
		}
		if len(v) < 32 || v == "password" {
			t.Errorf("env %s: generated value %q is too weak (want 32+ random characters)", envName, v)
		}
	}

	// Ports: each container port is its flag's value; the defaults are the binary's.
	ports := map[string]corev1.ContainerPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
		for _, msg := range validation.IsValidPortName(p.Name) {
			t.Errorf("container port %s: %s", p.Name, msg)
		}
	}
	for name, flag := range portFlags {
		p, ok := ports[name]
		if !ok {
			t.Errorf("no container port %q", name)
			continue
		}
		if got := flags[flag]; got != strconv.Itoa(int(p.ContainerPort)) {
			t.Errorf("container port %s is %d but --%s=%s", name, p.ContainerPort, flag, got)
		}
		wantProto := corev1.ProtocolTCP
		if name == "gossip-udp" {
			wantProto = corev1.ProtocolUDP
		}
		if p.Protocol != wantProto {
			t.Errorf("container port %s: protocol %s, want %s", name, p.Protocol, wantProto)
		}
	}
	if ports["gossip-tcp"].ContainerPort != ports["gossip-udp"].ContainerPort {
		t.Errorf("gossip TCP %d and UDP %d differ", ports["gossip-tcp"].ContainerPort, ports["gossip-udp"].ContainerPort)
	}
	for name, flag := range portFlags {
		valuesKey := strings.TrimSuffix(strings.TrimSuffix(name, "-tcp"), "-udp")
		if want := server.defaults[flag]; toInt(t, value(defaultValues(t), "ports."+valuesKey)) != atoi(t, want) {
			t.Errorf("values.yaml ports.%s is %v but the binary's --%s defaults to %s", valuesKey, value(defaultValues(t), "ports."+valuesKey), flag, want)
		}
	}

	// --join names the headless Service, on the gossip port.
	join := flags["join"]
	if !strings.HasPrefix(join, "dns+") || strings.Contains(join, ",") {
		t.Errorf("--join=%q, want one dns+<headless service>:<gossip port>", join)
	} else {
		host, port, ok := strings.Cut(strings.TrimPrefix(join, "dns+"), ":")
		if want := headlessName + "." + releaseNamespace + ".svc.cluster.local"; !ok || host != want {
			t.Errorf("--join host %q, want the headless Service %s", host, want)
		}
		if port != flags["gossip-port"] {
			t.Errorf("--join port %s, want the gossip port %s", port, flags["gossip-port"])
		}
	}
	if flags["cluster-name"] == "" {
		t.Error("no --cluster-name: two releases on one network could merge")
	}

	// Services: target ports resolve to the container's, with the right protocol.
	checkServicePorts := func(svc *corev1.Service, want map[string]corev1.Protocol) {
		got := map[string]bool{}
		for _, sp := range svc.Spec.Ports {
			got[sp.Name] = true
			cp, ok := resolvePort(sp.TargetPort, c.Ports, sp.Protocol)
			if !ok {
				t.Errorf("Service %s port %s targets %s, which is no %s port of the container", svc.Name, sp.Name, sp.TargetPort.String(), sp.Protocol)
				continue
			}
			if proto, ok := want[sp.Name]; ok && (sp.Protocol != proto || cp.Protocol != proto) {
				t.Errorf("Service %s port %s: protocol %s, want %s", svc.Name, sp.Name, sp.Protocol, proto)
			}
		}
		for name := range want {
			if !got[name] {
				t.Errorf("Service %s has no port %s", svc.Name, name)
			}
		}
	}
	checkServicePorts(client, map[string]corev1.Protocol{"text": "TCP", "http": "TCP", "resp": "TCP"})
	checkServicePorts(headless, map[string]corev1.Protocol{"gossip-tcp": "TCP", "gossip-udp": "UDP", "peer": "TCP"})
	for _, sp := range client.Spec.Ports {
		if cp, _ := resolvePort(sp.TargetPort, c.Ports, sp.Protocol); strings.HasPrefix(cp.Name, "gossip") || cp.Name == "peer" {
			t.Errorf("the client Service exposes the peer-only port %s", cp.Name)
		}
	}

	// Probes: /ready for readiness, /health for liveness and startup, on the HTTP port.
	httpPort := ports["http"]
	for _, pr := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/ready"}, {"liveness", c.LivenessProbe, "/health"}, {"startup", c.StartupProbe, "/health"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", pr.what)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s probe path %s, want %s", pr.what, pr.probe.HTTPGet.Path, pr.path)
		}
		if cp, ok := resolvePort(pr.probe.HTTPGet.Port, c.Ports, "TCP"); !ok || cp.ContainerPort != httpPort.ContainerPort {
			t.Errorf("%s probe on port %s, want the HTTP port %d (--http-port)", pr.what, pr.probe.HTTPGet.Port.String(), httpPort.ContainerPort)
		}
	}

	// Graceful leave: preStop, then --shutdown-timeout, within the grace period.
	shutdown, err := time.ParseDuration(flags["shutdown-timeout"])
	if err != nil {
		t.Errorf("--shutdown-timeout=%q: %v", flags["shutdown-timeout"], err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if c.Lifecycle.PreStop.Sleep == nil {
			t.Errorf("preStop %+v: the image has no shell, use the sleep action", c.Lifecycle.PreStop)
		} else {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
	} else if toInt(t, value(vals, "preStopSleepSeconds")) > 0 {
		t.Error("no preStop hook")
	}
	if grace := pod.Spec.TerminationGracePeriodSeconds; grace == nil {
		t.Error("no terminationGracePeriodSeconds")
	} else if time.Duration(*grace)*time.Second < preStop+shutdown+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %d is shorter than preStop %s + --shutdown-timeout %s + 5s", *grace, preStop, shutdown)
	}

	// Memory: the limit reaches --max-memory with room for the Go runtime (docs/memory.md:
	// limit ≥ 1.5 × max-memory + 64 MiB), and the derived value uses that room.
	checkMemory(t, c, flags["max-memory"], vals)

	// Security.
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, a non-zero runAsUser, seccomp RuntimeDefault", psc)
	}
	checkContainerSecurity(t, "tagcache", c.SecurityContext)
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; the node calls no Kubernetes API")
	}
	if sa := pod.Spec.ServiceAccountName; value(vals, "serviceAccount.create") == true && o.serviceAccounts[sa] == nil {
		t.Errorf("serviceAccountName %q is not rendered", sa)
	}

	// Scheduling: anti-affinity (soft by default, hard on request) and spread, both on
	// the pods' own labels.
	switch mode := value(vals, "podAntiAffinity"); {
	case value(vals, "affinity") != nil && len(value(vals, "affinity").(map[string]any)) > 0:
	case mode == "soft":
		aa := pod.Spec.Affinity
		if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 ||
			len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
			t.Errorf("want soft (preferred) pod anti-affinity only, got %+v", aa)
		} else if term := aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm; term.LabelSelector == nil ||
			!selects(term.LabelSelector.MatchLabels, podLabels) || term.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("soft anti-affinity term %+v does not keep the pods apart per node", term)
		}
	case mode == "hard":
		aa := pod.Spec.Affinity
		if aa == nil || aa.PodAntiAffinity == nil || len(aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) == 0 {
			t.Errorf("want hard (required) pod anti-affinity, got %+v", aa)
		} else if term := aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0]; term.LabelSelector == nil ||
			!selects(term.LabelSelector.MatchLabels, podLabels) || term.TopologyKey != "kubernetes.io/hostname" {
			t.Errorf("hard anti-affinity term %+v does not keep the pods apart per node", term)
		}
	}
	if value(vals, "topologySpread.enabled") == true {
		if len(pod.Spec.TopologySpreadConstraints) == 0 {
			t.Error("no topologySpreadConstraints")
		}
		for _, tsc := range pod.Spec.TopologySpreadConstraints {
			if tsc.LabelSelector == nil || !selects(tsc.LabelSelector.MatchLabels, podLabels) {
				t.Errorf("topology spread %+v does not select the pods", tsc)
			}
		}
	}

	// PodDisruptionBudget: one pod at a time.
	if value(vals, "podDisruptionBudget.enabled") == true {
		if o.pdb == nil {
			t.Error("no PodDisruptionBudget")
		} else {
			if o.pdb.Spec.MaxUnavailable == nil || *o.pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
				t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", o.pdb.Spec.MaxUnavailable)
			}
			if o.pdb.Spec.Selector == nil || !selects(o.pdb.Spec.Selector.MatchLabels, podLabels) {
				t.Errorf("PodDisruptionBudget selector %v does not pick the pods", o.pdb.Spec.Selector)
			}
		}
	}

	checkServiceMonitor(t, o, vals, c)
	checkNetworkPolicy(t, o, vals, c)
	checkTestPod(t, o, vals, c)
}

// checkMemory checks that the container's memory limit reaches --max-memory.
func checkMemory(t *testing.T, c corev1.Container, maxMemory string, vals map[string]any) {
	t.Helper()
	const mib = 1 << 20
	m := regexp.MustCompile(`^([0-9]+)MiB$`).FindStringSubmatch(maxMemory)
	if maxMemory == "0" {
		if given, _ := value(vals, "tagcache.maxMemory").(string); given != "0" {
			t.Error("--max-memory=0 (unlimited) although tagcache.maxMemory is not \"0\"")
		}
		return
	}
	if m == nil {
		t.Fatalf("--max-memory=%q, want <n>MiB", maxMemory)
	}
	maxBytes := int64(atoi(t, m[1])) * mib
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatalf("--max-memory=%s but no memory limit: the kernel, not the node, would decide when memory runs out", maxMemory)
	}
	limitBytes := limit.Value()
	// The node sets Go's soft memory limit to max-memory × 1.25 + 64 MiB; garbage between
	// collections needs the rest (docs/memory.md).
	if need := maxBytes*3/2 + 64*mib; need > limitBytes {
		t.Errorf("memory limit %s is below 1.5 × --max-memory (%s) + 64Mi = %d bytes: the container would be OOM-killed before the node evicts", limit.String(), maxMemory, need)
	}
	if soft := maxBytes*5/4 + 64*mib; soft >= limitBytes {
		t.Errorf("the node's Go soft memory limit (%d bytes) reaches the container limit %s", soft, limit.String())
	}
	if given, _ := value(vals, "tagcache.maxMemory").(string); given == "" {
		want := (limitBytes - 64*mib) * 2 / 3 / mib * mib
		if maxBytes != want {
			t.Errorf("--max-memory=%s, want (limit %s − 64Mi) / 1.5 = %dMiB", maxMemory, limit.String(), want/mib)
		}
	} else {
		q := resource.MustParse(given)
		if q.Value()/mib*mib != maxBytes {
			t.Errorf("--max-memory=%s, want tagcache.maxMemory %s", maxMemory, given)
		}
	}
	if float64(maxBytes) < 0.5*float64(limitBytes-64*mib)/1.5 {
		t.Logf("note: --max-memory %s uses less than half of what limit %s allows", maxMemory, limit.String())
	}
}

func checkContainerSecurity(t *testing.T, name string, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("container %s: no securityContext", name)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("container %s: runAsNonRoot not set", name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container %s: readOnlyRootFilesystem not set", name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s: allowPrivilegeEscalation not false", name)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("container %s: capabilities %+v, want drop ALL and add none", name, sc.Capabilities)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container %s: seccomp %+v, want RuntimeDefault", name, sc.SeccompProfile)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("container %s: privileged", name)
	}
}

func checkServiceMonitor(t *testing.T, o *objects, vals map[string]any, c corev1.Container) {
	t.Helper()
	enabled := value(vals, "serviceMonitor.enabled") == true
	if !enabled {
		if o.serviceMonitor != nil {
			t.Error("ServiceMonitor rendered while serviceMonitor.enabled is false")
		}
		return
	}
	sm := o.serviceMonitor
	if sm == nil {
		t.Fatal("serviceMonitor.enabled but no ServiceMonitor rendered")
	}
	// It selects exactly one Service (two would scrape every pod twice), in the release's
	// namespace, and scrapes /metrics on a port of that Service that is the HTTP port.
	var picked []*corev1.Service
	for _, svc := range o.services {
		if selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
			picked = append(picked, svc)
		}
	}
	if len(picked) != 1 {
		t.Fatalf("ServiceMonitor selector %v picks %d Services, want 1", sm.Spec.Selector.MatchLabels, len(picked))
	}
	if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, releaseNamespace) {
		t.Errorf("ServiceMonitor namespaceSelector %+v misses %s", sm.Spec.NamespaceSelector, releaseNamespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor has %d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor path %q, want /metrics", ep.Path)
	}
	var target *corev1.ContainerPort
	for _, sp := range picked[0].Spec.Ports {
		if ep.Port != "" && sp.Name == ep.Port {
			cp, ok := resolvePort(sp.TargetPort, c.Ports, sp.Protocol)
			if ok {
				target = &cp
			}
		}
	}
	if target == nil || target.Name != "http" {
		t.Errorf("ServiceMonitor port %v is not the HTTP port of Service %s", ep.Port, picked[0].Name)
	}
}

func checkNetworkPolicy(t *testing.T, o *objects, vals map[string]any, c corev1.Container) {
	t.Helper()
	if value(vals, "networkPolicy.enabled") != true {
		if o.networkPolicy != nil {
			t.Error("NetworkPolicy rendered while networkPolicy.enabled is false")
		}
		return
	}
	np := o.networkPolicy
	if np == nil {
		t.Fatal("networkPolicy.enabled but no NetworkPolicy rendered")
	}
	podLabels := o.statefulSet.Spec.Template.Labels
	if !selects(np.Spec.PodSelector.MatchLabels, podLabels) {
		t.Errorf("NetworkPolicy podSelector %v does not pick the pods", np.Spec.PodSelector.MatchLabels)
	}
	// For each port the pods listen on: who may reach it.
	type access struct {
		anyone   bool
		peers    bool // pods of this release
		testPod  bool
		rulesFor int
	}
	got := map[string]*access{}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			cp, ok := resolvePort(*p.Port, c.Ports, proto)
			if !ok {
				t.Errorf("NetworkPolicy port %s/%s is no container port", p.Port.String(), proto)
				continue
			}
			a := got[cp.Name]
			if a == nil {
				a = &access{}
				got[cp.Name] = a
			}
			a.rulesFor++
			if len(rule.From) == 0 {
				a.anyone = true
			}
			for _, from := range rule.From {
				if from.PodSelector != nil && from.NamespaceSelector == nil {
					if selects(from.PodSelector.MatchLabels, podLabels) {
						a.peers = true
					}
					if o.testPod != nil && selects(from.PodSelector.MatchLabels, o.testPod.Labels) {
						a.testPod = true
					}
				}
			}
		}
	}
	for _, name := range []string{"gossip-tcp", "gossip-udp", "peer"} {
		a := got[name]
		if a == nil || !a.peers {
			t.Errorf("NetworkPolicy: peers cannot reach %s", name)
		} else if a.anyone {
			t.Errorf("NetworkPolicy: anyone can reach the peer-only port %s", name)
		}
	}
	labelled := value(vals, "networkPolicy.clients") == "labelled"
	for _, name := range []string{"text", "http", "resp"} {
		a := got[name]
		switch {
		case a == nil:
			t.Errorf("NetworkPolicy: no client reaches %s", name)
		case labelled && a.anyone:
			t.Errorf("NetworkPolicy: anyone reaches %s although clients is labelled", name)
		case labelled && o.testPod != nil && !a.testPod:
			t.Errorf("NetworkPolicy: the helm test pod cannot reach %s", name)
		case !labelled && !a.anyone:
			t.Errorf("NetworkPolicy: clients is all but %s is restricted", name)
		}
	}
}

// checkTestPod checks the `helm test` pod: every step is a tagcache command with flags the
// command has, aimed at the client Service.
func checkTestPod(t *testing.T, o *objects, vals map[string]any, server corev1.Container) {
	t.Helper()
	if value(vals, "tests.enabled") != true {
		return
	}
	p := o.testPod
	if p == nil {
		t.Fatal("no helm test pod")
	}
	if p.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("test pod hook annotation %q, want test", p.Annotations["helm.sh/hook"])
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("test pod restartPolicy %q, want Never", p.Spec.RestartPolicy)
	}
	clientHost := fullname + "." + releaseNamespace + ".svc.cluster.local"
	client := o.services[fullname]
	svcPorts := map[string]bool{}
	for _, sp := range client.Spec.Ports {
		svcPorts[strconv.Itoa(int(sp.Port))] = true
	}
	steps := append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...)
	if len(steps) < 4 {
		t.Fatalf("test pod has %d steps", len(steps))
	}
	for _, s := range steps {
		if s.Image != server.Image {
			t.Errorf("test step %s runs image %s, want the chart's %s", s.Name, s.Image, server.Image)
		}
		checkContainerSecurity(t, "test step "+s.Name, s.SecurityContext)
		if len(s.Args) == 0 {
			t.Errorf("test step %s has no arguments", s.Name)
			continue
		}
		h := commandHelp(t, s.Args[0])
		var flagArgs []string
		for _, a := range s.Args[1:] {
			if strings.HasPrefix(a, "-") {
				flagArgs = append(flagArgs, a)
			}
		}
		flags := parseFlagArgs(t, "test step "+s.Name, flagArgs)
		for name, v := range flags {
			if _, ok := h.flags[name]; !ok {
				t.Errorf("test step %s passes --%s, which `tagcache %s --help` does not list", s.Name, name, s.Args[0])
			}
			switch name {
			case "host":
				if v != clientHost {
					t.Errorf("test step %s: --host=%s, want the client Service %s", s.Name, v, clientHost)
				}
			case "port":
				if !svcPorts[v] {
					t.Errorf("test step %s: --port=%s is no port of the client Service", s.Name, v)
				}
			case "targets":
				host, port, _ := strings.Cut(v, ":")
				if host != clientHost || !svcPorts[port] {
					t.Errorf("test step %s: --targets=%s, want the client Service %s on one of its ports", s.Name, v, clientHost)
				}
			}
		}
		for _, e := range s.Env {
			if f := envFlag(e.Name); f != "" {
				if _, ok := h.flags[f]; !ok {
					t.Errorf("test step %s: env %s, but `tagcache %s` has no --%s", s.Name, e.Name, s.Args[0], f)
				}
			}
		}
	}
}

// resolvePort finds the container port a Service target port, probe port or
// NetworkPolicy port names (by name or number).
func resolvePort(p intstr.IntOrString, ports []corev1.ContainerPort, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, cp := range ports {
		if cp.Protocol != proto {
			continue
		}
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func defaultValues(t *testing.T) map[string]any {
	t.Helper()
	return variant{name: "default"}.values(t)
}

func toInt(t *testing.T, v any) int {
	t.Helper()
	switch x := v.(type) {
	case int:
		return x
	case int64:
		return int(x)
	case float64:
		return int(x)
	}
	t.Fatalf("%v (%T) is not a number", v, v)
	return 0
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
