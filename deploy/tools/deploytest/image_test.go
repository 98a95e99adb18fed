package deploytest

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is deploy/Dockerfile read instruction by instruction (continuation lines
// joined, comments dropped). No Docker engine runs where this test does, so it checks the
// instructions; the build command itself is the one TestMain builds the binary with.
type dockerfile struct {
	stages [][]string // instructions per FROM
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(dockerDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d dockerfile
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		ins := strings.TrimSpace(cur.String())
		cur.Reset()
		if ins == "" {
			continue
		}
		if strings.HasPrefix(strings.ToUpper(ins), "FROM ") {
			d.stages = append(d.stages, nil)
		}
		if len(d.stages) > 0 {
			d.stages[len(d.stages)-1] = append(d.stages[len(d.stages)-1], ins)
		}
	}
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(d.stages))
	}
	return d
}

// last returns the last instruction of a stage with the keyword, without the keyword.
func last(stage []string, keyword string) (string, bool) {
	for i := len(stage) - 1; i >= 0; i-- {
		if k, rest, _ := strings.Cut(stage[i], " "); strings.EqualFold(k, keyword) {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

func execForm(t *testing.T, what, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s %s: want the exec (JSON) form: %v", what, s, err)
	}
	return v
}

func TestImageBuildsAStaticBinaryThatRunsANodeAsNonRoot(t *testing.T) {
	d := readDockerfile(t)
	build, runtime := d.stages[0], d.stages[len(d.stages)-1]

	// Build: static (no cgo), the binary's package.
	var goBuild string
	for _, ins := range build {
		if strings.HasPrefix(ins, "RUN ") && strings.Contains(ins, "go build") {
			goBuild = ins
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/tagcache", "-X main.version="} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("build stage's go build %q lacks %s", goBuild, want)
		}
	}
	// The binary built that way (by TestMain, or `make build` for TAGCACHE_BIN) is
	// static: no interpreter, no shared libraries, so it runs on distroless/static.
	f, err := elf.Open(tagcacheBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}

	// Runtime: a minimal base, a numeric non-root user that the chart's runAsUser matches.
	from, _ := last(runtime, "FROM")
	if !strings.HasPrefix(from, "gcr.io/distroless/static") && from != "scratch" {
		t.Errorf("runtime base %q: want distroless/static or scratch", from)
	}
	user, ok := last(runtime, "USER")
	uid, gid, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); !ok || err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root uid (runAsNonRoot checks a number)", user)
	}
	vals := defaultValues(t)
	if want := strconv.Itoa(toInt(t, value(vals, "podSecurityContext.runAsUser"))); uid != want {
		t.Errorf("image USER %s but the chart's runAsUser %s", uid, want)
	}
	if want := strconv.Itoa(toInt(t, value(vals, "podSecurityContext.runAsGroup"))); gid != want {
		t.Errorf("image group %s but the chart's runAsGroup %s", gid, want)
	}
	for _, ins := range runtime {
		if strings.HasPrefix(ins, "RUN ") {
			t.Errorf("runtime stage runs %q: the base has no shell", ins)
		}
	}

	// The entrypoint is the binary; the default command runs a node with flags it has.
	ep, _ := last(runtime, "ENTRYPOINT")
	entry := execForm(t, "ENTRYPOINT", ep)
	if len(entry) != 1 || !strings.HasSuffix(entry[0], "/tagcache") {
		t.Errorf("ENTRYPOINT %v, want the tagcache binary alone (the chart passes only arguments)", entry)
	}
	var copied bool
	for _, ins := range runtime {
		copied = copied || (strings.HasPrefix(ins, "COPY ") && strings.HasSuffix(ins, " "+entry[0]))
	}
	if !copied {
		t.Errorf("the runtime stage does not COPY the binary to %s", entry[0])
	}
	cmdLine, _ := last(runtime, "CMD")
	cmd := execForm(t, "CMD", cmdLine)
	if len(cmd) == 0 || cmd[0] != "server" {
		t.Fatalf("CMD %v, want `server` (the image's default command runs a node)", cmd)
	}
	server := commandHelp(t, "server")
	for name := range parseFlagArgs(t, "CMD", cmd[1:]) {
		if _, ok := server.flags[name]; !ok {
			t.Errorf("CMD passes --%s, which `tagcache server --help` does not list", name)
		}
	}

	// EXPOSE lists the node's default ports, gossip for TCP and UDP.
	expose, _ := last(runtime, "EXPOSE")
	exposed := strings.Fields(expose)
	for _, flag := range []string{"tcp-port", "http-port", "resp-port", "gossip-port", "peer-port"} {
		want := server.defaults[flag] + "/tcp"
		if !slices.Contains(exposed, want) {
			t.Errorf("EXPOSE %v lacks %s (--%s)", exposed, want, flag)
		}
	}
	if !slices.Contains(exposed, server.defaults["gossip-port"]+"/udp") {
		t.Errorf("EXPOSE %v lacks the gossip port over UDP", exposed)
	}

	// The chart runs that image without overriding its entrypoint.
	if !regexp.MustCompile(`(?m)^\s+args:\s*$`).MatchString(readFile(t, filepath.Join(chartDir, "templates", "statefulset.yaml"))) {
		t.Error("the chart's StatefulSet passes no args")
	}
}

// TestDockerignoreKeepsTheBuildContextToTheSources: the context (the repository root)
// leaves out what the build does not need, but not the module's Go sources.
func TestDockerignoreKeepsTheBuildContextToTheSources(t *testing.T) {
	ignore := strings.Fields(readFile(t, filepath.Join(dockerDir, "Dockerfile.dockerignore")))
	for _, must := range []string{".git", "bin"} {
		if !slices.Contains(ignore, must) {
			t.Errorf("Dockerfile.dockerignore does not leave out %s", must)
		}
	}
	for _, keep := range []string{"cmd", "node", "cache", "ring", "transport", "go.mod", "go.sum"} {
		if slices.Contains(ignore, keep) || slices.Contains(ignore, "*") {
			t.Errorf("Dockerfile.dockerignore leaves out %s, which the build needs", keep)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
