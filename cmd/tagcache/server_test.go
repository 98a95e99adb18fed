package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tagcache/tagcache/cache"
	"github.com/tagcache/tagcache/node"
)

// writeConfig writes a config file for `tagcache server --config` and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tagcache.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeEnv returns a getenv that knows only vars.
func fakeEnv(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestServerFlagsCommandLineBeatsEnvironmentBeatsFileBeatsDefault(t *testing.T) {
	path := writeConfig(t, `
# every layer sets http-port; fewer layers set the others
http-port = 1001
tcp-port = 1002
max-memory = 64MiB
password = "from file # not a comment"
log-level = debug
`)
	env := fakeEnv(map[string]string{
		"TAGCACHE_HTTP_PORT":    "2001",
		"TAGCACHE_TCP_PORT":     "2002",
		"TAGCACHE_IDLE_TIMEOUT": "90s",
	})
	f := newServerFlags(&bytes.Buffer{})
	if err := f.parse([]string{"--config", path, "--http-port", "3001", "--log-json"}, env); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"http-port (command line)", f.httpPort, 3001},
		{"log-json (command line)", f.logJSON, true},
		{"tcp-port (environment)", f.tcpPort, 2002},
		{"idle-timeout (environment)", f.idleTimeout, 90 * time.Second},
		{"max-memory (file)", int64(f.maxMemory), int64(64 << 20)},
		{"password (file, quoted)", f.password, "from file # not a comment"},
		{"log-level (file)", f.logLevel, "debug"},
		{"bind (default)", f.bind, node.DefaultBind},
		{"partitions (default)", f.partitions, cache.DefaultPartitions},
		{"max-value-bytes (default)", int64(f.maxValueBytes), int64(cache.DefaultMaxValueBytes)},
		{"shutdown-timeout (default)", f.shutdownTimeout, 30 * time.Second},
		{"shutdown-delay (default)", f.shutdownDelay, 250 * time.Millisecond},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if err := f.validate(); err != nil {
		t.Errorf("validate: %v", err)
	}

	// The environment can name the config file too.
	f = newServerFlags(&bytes.Buffer{})
	if err := f.parse(nil, fakeEnv(map[string]string{"TAGCACHE_CONFIG": path})); err != nil {
		t.Fatal(err)
	}
	if f.httpPort != 1001 || f.tcpPort != 1002 {
		t.Errorf("config from TAGCACHE_CONFIG: http-port %d, tcp-port %d; want 1001, 1002", f.httpPort, f.tcpPort)
	}
}

func TestServerFlagsRejectBadSettings(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string // in the error
	}{
		{name: "unknown setting", file: "http-port = 1\nno-such-thing = 2\n", want: `:2: unknown setting "no-such-thing"`},
		{name: "config names config", file: "config = /etc/other\n", want: "cannot name another config file"},
		{name: "line without =", file: "http-port 1\n", want: ":1: expected name = value"},
		{name: "bad value in file", file: "max-memory = lots\n", want: ":1: max-memory: "},
		{name: "bad value in environment", env: map[string]string{"TAGCACHE_TCP_PORT": "x"}, want: "environment TAGCACHE_TCP_PORT"},
		{name: "missing file", args: []string{"--config", "/nonexistent/tagcache.conf"}, want: "config file"},
		{name: "positional argument", args: []string{"extra"}, want: "unexpected arguments: extra"},
		{name: "unknown flag", args: []string{"--no-such-flag"}, want: "not defined"},
	} {
		args := c.args
		if c.file != "" {
			args = append([]string{"--config", writeConfig(t, c.file)}, args...)
		}
		err := newServerFlags(&bytes.Buffer{}).parse(args, fakeEnv(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"512", 512}, {"10b", 10}, {"1k", 1000}, {"1KB", 1000}, {"1KiB", 1024},
		{"2MiB", 2 << 20}, {"2mb", 2_000_000}, {"3GiB", 3 << 30}, {"1G", 1e9}, {"1TiB", 1 << 40},
		{" 4 MiB ", 4 << 20},
	} {
		got, err := parseByteSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5GiB", "12 parsecs", "1 2", "99999999999TiB"} {
		if got, err := parseByteSize(in); err == nil {
			t.Errorf("parseByteSize(%q) = %d, want an error", in, got)
		}
	}
	for _, c := range []struct {
		in   byteSize
		want string
	}{{0, "0"}, {1000, "1000"}, {1 << 10, "1KiB"}, {3 << 20, "3MiB"}, {5 << 30, "5GiB"}, {1<<20 + 1, "1048577"}} {
		if got := c.in.String(); got != c.want {
			t.Errorf("byteSize(%d).String() = %q, want %q", int64(c.in), got, c.want)
		}
	}
}

func TestServerHelpListsEveryFlag(t *testing.T) {
	r := tagcache("server", "--help")
	if r.code != 0 {
		t.Fatalf("server --help: exit %d", r.code)
	}
	help := r.stdout + r.stderr
	n := 0
	newServerFlags(&bytes.Buffer{}).fs.VisitAll(func(fl *flag.Flag) {
		n++
		if !strings.Contains(help, "\n  -"+fl.Name+" ") && !strings.Contains(help, "\n  -"+fl.Name+"\n") {
			t.Errorf("server --help does not list -%s", fl.Name)
		}
	})
	if n < 20 {
		t.Errorf("server has only %d flags", n)
	}
	for _, def := range []string{`(default "127.0.0.1")`, "(default 1984)", "(default 8080)", "(default 30s)", "TAGCACHE_"} {
		if !strings.Contains(help, def) {
			t.Errorf("server --help does not mention %s:\n%s", def, help)
		}
	}
}

func TestAutoGOMAXPROCSPrefersFlagThenEnvThenOneOnSmallMachines(t *testing.T) {
	for _, c := range []struct {
		flag, cpus int
		env        string
		want       int
	}{
		{3, 2, "", 3}, {3, 8, "4", 3}, // the flag wins
		{0, 2, "2", 0},               // $GOMAXPROCS, already applied by Go
		{0, 1, "", 1}, {0, 2, "", 1}, // small machines: one P
		{0, 4, "", 0}, {0, 64, "", 0}, // larger: Go's default
	} {
		if got := autoGOMAXPROCS(c.flag, c.cpus, c.env); got != c.want {
			t.Errorf("autoGOMAXPROCS(%d, %d, %q) = %d, want %d", c.flag, c.cpus, c.env, got, c.want)
		}
	}
}

// clusterConfigOf parses args and env as `tagcache server` does and returns the
// node's cluster configuration.
func clusterConfigOf(t *testing.T, args []string, env map[string]string) *node.ClusterConfig {
	t.Helper()
	f := newServerFlags(&bytes.Buffer{})
	if err := f.parse(args, fakeEnv(env)); err != nil {
		t.Fatal(err)
	}
	if err := f.validate(); err != nil {
		t.Fatal(err)
	}
	cc := f.nodeConfig(hclog.NewNullLogger()).Cluster
	if cc == nil {
		t.Fatal("tagcache server built a standalone node: Config.Cluster is nil")
	}
	return cc
}

func TestServerClusterFlagsMapToClusterConfig(t *testing.T) {
	cc := clusterConfigOf(t, []string{
		"--bind", "10.1.2.3", "--node-name", "cache-a", "--gossip-port", "8946", "--peer-port", "8947",
		"--advertise", "192.0.2.7", "--join", "10.1.2.4:8946, dns+tagcache-headless.default.svc:7946,",
		"--cluster-key", "sekrit-sekrit-sekrit", "--cluster-name", "prod", "--cluster-preset", "local",
		"--invalidation-timeout", "750ms", "--forward-timeout", "1500ms", "--dead-forget", "90s",
	}, nil)
	want := node.ClusterConfig{
		NodeName: "cache-a", Bind: "10.1.2.3", Advertise: "192.0.2.7", GossipPort: 8946, PeerPort: 8947,
		Join: []string{"10.1.2.4:8946", "dns+tagcache-headless.default.svc:7946"},
		Key:  []byte("sekrit-sekrit-sekrit"), Name: "prod", Preset: "local",
		InvalidationTimeout: 750 * time.Millisecond, ForwardTimeout: 1500 * time.Millisecond, DeadForget: 90 * time.Second,
	}
	if !reflect.DeepEqual(*cc, want) {
		t.Errorf("cluster config\n got %+v\nwant %+v", *cc, want)
	}
}

func TestServerClusterDefaults(t *testing.T) {
	cc := clusterConfigOf(t, nil, nil)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(host) + `-[0-9a-f]{6}$`).MatchString(cc.NodeName) {
		t.Errorf("node name %q, want %s-<6 hex digits>", cc.NodeName, host)
	}
	if other := clusterConfigOf(t, nil, nil).NodeName; other == cc.NodeName {
		t.Errorf("two nodes both got the default name %q", other)
	}
	cc.NodeName = ""
	want := node.ClusterConfig{
		Bind: node.DefaultBind, GossipPort: 7946, PeerPort: 7947, Name: "tagcache",
		InvalidationTimeout: 2 * time.Second, ForwardTimeout: 2 * time.Second, DeadForget: 5 * time.Minute,
	}
	// No key on loopback, no peers to join, the preset left to the node (local on loopback).
	if !reflect.DeepEqual(*cc, want) {
		t.Errorf("default cluster config\n got %+v\nwant %+v", *cc, want)
	}
}

func TestServerClusterKeyFromEnvironmentOrConfigFile(t *testing.T) {
	cc := clusterConfigOf(t, []string{"--bind", "0.0.0.0"}, map[string]string{"TAGCACHE_CLUSTER_KEY": "from-env"})
	if string(cc.Key) != "from-env" {
		t.Errorf("key %q, want the one in TAGCACHE_CLUSTER_KEY", cc.Key)
	}
	path := writeConfig(t, "cluster-key = \"from file\"\njoin = 10.0.0.1:7946\n")
	cc = clusterConfigOf(t, []string{"--config", path, "--bind", "0.0.0.0"}, nil)
	if string(cc.Key) != "from file" || len(cc.Join) != 1 {
		t.Errorf("key %q, join %q; want the config file's", cc.Key, cc.Join)
	}
}

func TestServerGeneratesAClusterKeyOnANonLoopbackBindAndWarnsWithoutShowingIt(t *testing.T) {
	f := newServerFlags(&bytes.Buffer{})
	if err := f.parse([]string{"--bind", "0.0.0.0"}, fakeEnv(nil)); err != nil {
		t.Fatal(err)
	}
	cc := f.clusterConfig()
	if len(cc.Key) < 16 {
		t.Fatalf("generated key %q, want at least 16 random bytes", cc.Key)
	}
	if again := f.clusterConfig(); bytes.Equal(again.Key, cc.Key) {
		t.Errorf("two starts generated the same key %q", cc.Key)
	}
	var logs bytes.Buffer
	f.warnGeneratedClusterKey(hclog.New(&hclog.LoggerOptions{Output: &logs}), cc)
	out := logs.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "[WARN]") || !strings.Contains(out, "TAGCACHE_CLUSTER_KEY") ||
		!strings.Contains(out, "no other node can join") || strings.Contains(out, string(cc.Key)) {
		t.Errorf("warning %q: want one Warn line that says how to set a key and does not show the generated one", out)
	}

	// A configured key is not generated, and not warned about.
	logs.Reset()
	f = newServerFlags(&bytes.Buffer{})
	if err := f.parse([]string{"--bind", "0.0.0.0", "--cluster-key", "k"}, fakeEnv(nil)); err != nil {
		t.Fatal(err)
	}
	f.warnGeneratedClusterKey(hclog.New(&hclog.LoggerOptions{Output: &logs}), f.clusterConfig())
	if logs.Len() != 0 {
		t.Errorf("warned about a configured key: %q", logs.String())
	}
}

func TestServerClusterFlagsRejectBadValues(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--gossip-port", "65536"}, "--gossip-port must be 0..65535"},
		{[]string{"--peer-port", "-1"}, "--peer-port must be 0..65535"},
		{[]string{"--gossip-port", "7000", "--peer-port", "7000"}, "--gossip-port and --peer-port are both 7000"},
		{[]string{"--cluster-preset", "wan"}, `--cluster-preset must be local or lan (or empty for auto), got "wan"`},
		{[]string{"--invalidation-timeout", "0s"}, "--invalidation-timeout must be positive"},
		{[]string{"--forward-timeout", "-1s"}, "--forward-timeout must be positive"},
		{[]string{"--dead-forget", "0s"}, "--dead-forget must be positive"},
		{[]string{"--cluster-name", ""}, "--cluster-name must not be empty"},
		{[]string{"--node-name", " a"}, "--node-name must not start or end with spaces"},
		{[]string{"--advertise", "10.0.0.1:7946"}, "--advertise is an address without a port"},
		{[]string{"--join", "10.0.0.1"}, `--join: "10.0.0.1": want host:port or dns+name:port`},
		{[]string{"--join", "a:1,dns+:7946"}, `--join: "dns+:7946": no host`},
		{[]string{"--join", "a:http"}, `--join: "a:http": port must be 1..65535`},
		{[]string{"--join", "a:0"}, `--join: "a:0": port must be 1..65535`},
		{[]string{"--bind", "0.0.0.0", "--join", "a:7946"}, "--join needs the cluster's key on a non-loopback --bind"},
	} {
		f := newServerFlags(&bytes.Buffer{})
		if err := f.parse(c.args, fakeEnv(nil)); err != nil {
			t.Errorf("%q: parse: %v", c.args, err)
			continue
		}
		if err := f.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one containing %q", c.args, err, c.want)
		}
	}
	// Through the command: exit 2 and the message.
	r := tagcache("server", "--cluster-preset", "wan")
	if r.code != 2 || !strings.Contains(r.stderr, "tagcache server: --cluster-preset must be local or lan") {
		t.Errorf("server --cluster-preset wan: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestServerHelpListsTheClusterFlagsWithTheirDefaults(t *testing.T) {
	r := tagcache("server", "--help")
	help := r.stdout
	for _, want := range []string{
		"\n  -node-name string\n", "<hostname>-<6 random hex digits>",
		"\n  -gossip-port int\n", "(default 7946)",
		"\n  -peer-port int\n", "(default 7947)",
		"\n  -advertise string\n", "\n  -join string\n", "dns+name:port",
		"\n  -cluster-key string\n", "Prefer TAGCACHE_CLUSTER_KEY to this flag",
		"\n  -cluster-name string\n", `(default "tagcache")`,
		"\n  -cluster-preset string\n", "local on a loopback --bind, else lan",
		"\n  -invalidation-timeout duration\n", "\n  -forward-timeout duration\n", "(default 2s)",
		"\n  -dead-forget duration\n", "(default 5m0s)",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("server --help lacks %q", want)
		}
	}
}
