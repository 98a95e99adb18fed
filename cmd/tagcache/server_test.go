package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
