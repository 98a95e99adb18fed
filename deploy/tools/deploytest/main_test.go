package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Where things are, relative to this package's directory (deploy/tools/deploytest).
const (
	repoRoot  = "../../.."
	chartDir  = "../../helm/tagcache"
	dockerDir = "../.."
)

// The release every render uses.
const (
	releaseName      = "tc"
	releaseNamespace = "cache"
	fullname         = "tc-tagcache"
	// kubeVersion is the Kubernetes version helm renders for: the chart needs 1.30+.
	kubeVersion = "1.34.0"
)

var (
	helmBin     string // HELM, or built from the pinned module in TestMain
	tagcacheBin string // TAGCACHE_BIN, or built from the repository root in TestMain
	helmEnv     []string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploytest:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "deploytest-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	if helmBin = os.Getenv("HELM"); helmBin == "" {
		// The Helm the tools module pins (go.mod: tool helm.sh/helm/v3/cmd/helm), built
		// static as Helm's releases are. `go tool -n` builds it into the build cache once
		// and prints its path, so later runs start at once.
		cmd := exec.Command(goCmd, "tool", "-n", "helm")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			return 0, fmt.Errorf("build helm (go tool -n helm): %v\n%s", err, out)
		}
		helmBin = strings.TrimSpace(string(out))
		if _, err := os.Stat(helmBin); err != nil {
			return 0, fmt.Errorf("go tool -n helm printed %q: %v", helmBin, err)
		}
	}
	if tagcacheBin = os.Getenv("TAGCACHE_BIN"); tagcacheBin == "" {
		tagcacheBin = filepath.Join(tmp, "tagcache")
		// As deploy/Dockerfile builds it.
		cmd := exec.Command(goCmd, "build", "-trimpath", "-o", tagcacheBin, "./cmd/tagcache")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("build tagcache: %v\n%s", err, out)
		}
	}
	if tagcacheBin, err = filepath.Abs(tagcacheBin); err != nil {
		return 0, err
	}
	// Helm reads and writes nothing of the user's: no repositories, no plugins, no cache.
	helmEnv = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(tmp, "helm-cache"),
		"HELM_CONFIG_HOME="+filepath.Join(tmp, "helm-config"),
		"HELM_DATA_HOME="+filepath.Join(tmp, "helm-data"),
		"KUBECONFIG="+filepath.Join(tmp, "no-kubeconfig"),
	)
	return m.Run(), nil
}

// helm runs the pinned helm and returns its stdout, or an error with its stderr.
func helm(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin, args...)
	cmd.Env = helmEnv
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// help is what `tagcache <command> --help` says about the command's flags.
type help struct {
	text     string
	flags    map[string]string // flag name → its type word ("" for a bool flag)
	defaults map[string]string // flag name → its default, when the help shows one
}

var (
	helpMu    sync.Mutex
	helpCache = map[string]*help{}
)

var (
	flagLine    = regexp.MustCompile(`^  -([a-z0-9-]+)(?: (\S+))?$`)
	defaultText = regexp.MustCompile(`\(default ("[^"]*"|[^)]*)\)$`)
)

// commandHelp runs `tagcache <command> --help` once and parses its flag list.
func commandHelp(t *testing.T, command string) *help {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if h, ok := helpCache[command]; ok {
		return h
	}
	out, err := exec.Command(tagcacheBin, command, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("tagcache %s --help: %v\n%s", command, err, out)
	}
	h := &help{text: string(out), flags: map[string]string{}, defaults: map[string]string{}}
	var name string
	var desc strings.Builder
	flush := func() {
		if name == "" {
			return
		}
		if m := defaultText.FindStringSubmatch(strings.TrimSpace(desc.String())); m != nil {
			h.defaults[name] = strings.Trim(m[1], `"`)
		}
		desc.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flush()
			name = m[1]
			h.flags[name] = m[2]
			continue
		}
		if name != "" && strings.HasPrefix(line, "    \t") {
			desc.WriteString(" " + strings.TrimSpace(line))
		}
	}
	flush()
	if len(h.flags) == 0 {
		t.Fatalf("tagcache %s --help lists no flags:\n%s", command, out)
	}
	helpCache[command] = h
	return h
}

// parseFlagArgs splits `--name=value` arguments. Every argument must have that form:
// the chart writes flags one way, so that a reader (and this test) can tell a flag's
// value from the next argument.
func parseFlagArgs(t *testing.T, what string, args []string) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok || name == "" {
			t.Errorf("%s: argument %q is not --flag=value", what, a)
			continue
		}
		if _, dup := flags[name]; dup {
			t.Errorf("%s: --%s given twice", what, name)
		}
		flags[name] = value
	}
	return flags
}

// envFlag maps TAGCACHE_MAX_MEMORY to max-memory, as the binary does; "" for other names.
func envFlag(env string) string {
	rest, ok := strings.CutPrefix(env, "TAGCACHE_")
	if !ok {
		return ""
	}
	return strings.ToLower(strings.ReplaceAll(rest, "_", "-"))
}
