package deploytest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	unitPath   = filepath.Join(dockerDir, "systemd", "tagcache.service")
	envExample = filepath.Join(dockerDir, "systemd", "tagcache.env.example")
)

// unit is a systemd unit file: section → key → values (a key may repeat).
type unit map[string]map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// readEnvFile reads NAME=value lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range strings.Split(readFile(t, path), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		env[k] = v
	}
	return env
}

func TestSystemdUnitRunsANodeSandboxed(t *testing.T) {
	u := readUnit(t, unitPath)
	server := commandHelp(t, "server")

	// ExecStart: the binary's server command, flags it has; the rest from the env file.
	exec := strings.Fields(u.get("Service", "ExecStart"))
	if len(exec) < 2 || exec[0] != "/usr/local/bin/tagcache" || exec[1] != "server" {
		t.Fatalf("ExecStart %v, want /usr/local/bin/tagcache server", exec)
	}
	for name := range parseFlagArgs(t, "ExecStart", exec[2:]) {
		if _, ok := server.flags[name]; !ok {
			t.Errorf("ExecStart passes --%s, which `tagcache server --help` does not list", name)
		}
	}
	if ef := strings.TrimPrefix(u.get("Service", "EnvironmentFile"), "-"); ef == "" {
		t.Error("no EnvironmentFile for the flags")
	}
	env := readEnvFile(t, envExample)
	for name := range env {
		f := envFlag(name)
		if f == "" {
			t.Errorf("%s sets %s, which the node does not read (TAGCACHE_<FLAG> only)", envExample, name)
			continue
		}
		if _, ok := server.flags[f]; !ok {
			t.Errorf("%s sets %s, but `tagcache server --help` has no --%s", envExample, name, f)
		}
	}
	for _, must := range []string{"TAGCACHE_PASSWORD", "TAGCACHE_CLUSTER_KEY", "TAGCACHE_BIND"} {
		if env[must] == "" {
			t.Errorf("%s does not show %s", envExample, must)
		}
	}

	// Sandboxing.
	for key, want := range map[string]string{
		"DynamicUser":           "yes",
		"NoNewPrivileges":       "yes",
		"ProtectSystem":         "strict",
		"ProtectHome":           "yes",
		"PrivateTmp":            "yes",
		"PrivateDevices":        "yes",
		"CapabilityBoundingSet": "",
		"RestrictSUIDSGID":      "yes",
	} {
		if vs, ok := u["Service"][key]; !ok || vs[len(vs)-1] != want {
			t.Errorf("[Service] %s=%v, want %q", key, vs, want)
		}
	}

	// Stopping: SIGTERM, and systemd waits longer than the graceful leave takes.
	if ks := u.get("Service", "KillSignal"); ks != "" && ks != "SIGTERM" {
		t.Errorf("KillSignal=%s: the node leaves gracefully on SIGTERM", ks)
	}
	stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	shutdown, err := time.ParseDuration(server.defaults["shutdown-timeout"])
	if err != nil {
		t.Fatalf("--shutdown-timeout default %q: %v", server.defaults["shutdown-timeout"], err)
	}
	if v := env["TAGCACHE_SHUTDOWN_TIMEOUT"]; v != "" {
		if shutdown, err = time.ParseDuration(v); err != nil {
			t.Fatalf("TAGCACHE_SHUTDOWN_TIMEOUT: %v", err)
		}
	}
	if stop < shutdown+5*time.Second {
		t.Errorf("TimeoutStopSec %s leaves the graceful leave (%s) no margin", stop, shutdown)
	}
}

// TestSystemdAnalyzeAcceptsTheUnit runs systemd's own checks where systemd-analyze is
// installed (Debian's systemd package): the unit loads with no warning, and its
// exposure score stays low.
func TestSystemdAnalyzeAcceptsTheUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	envFile, err := filepath.Abs(envExample)
	if err != nil {
		t.Fatal(err)
	}
	// The unit as installed, with the binary and the env file where this test has them.
	text := strings.NewReplacer(
		"ExecStart=/usr/local/bin/tagcache", "ExecStart="+tagcacheBin,
		"EnvironmentFile=/etc/tagcache/tagcache.env", "EnvironmentFile="+envFile,
	).Replace(readFile(t, unitPath))
	path := filepath.Join(dir, "tagcache.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// 2.0 of 10 at most ("OK" starts below 4.0).
	out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", path).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0 (%v)\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "Overall exposure level") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
