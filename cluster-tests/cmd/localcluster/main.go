// Command localcluster runs a TagCache cluster of N nodes on this machine's loopback for
// people: `make cluster-up`, `make cluster-status` and `make cluster-down` call it.
//
//	localcluster up     [-n 3] [-dir .cluster] [-binary bin/tagcache] [-base-port 20000]
//	localcluster status [-dir .cluster]
//	localcluster down   [-dir .cluster]
//	localcluster run    [-n 3] …   (in the foreground: Ctrl-C tears it down)
//
// `up` starts a supervisor in the background that starts the nodes (the cluster-tests
// harness), writes <dir>/state.json once every node is ready and the ring agrees, and
// waits; `down` signals it, and it kills every node. The nodes die with the supervisor
// even if it is killed itself. Each node logs to <dir>/<name>.log, the supervisor to
// <dir>/localcluster.log. No root needed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	clustertests "github.com/tagcache/tagcache/cluster-tests"
)

// state is <dir>/state.json: the running cluster, for status and down.
type state struct {
	Supervisor int         `json:"supervisor"` // pid of the process that owns the nodes
	Started    time.Time   `json:"started"`
	Username   string      `json:"username"`
	Password   string      `json:"password"`
	Binary     string      `json:"binary"`
	Nodes      []nodeState `json:"nodes"`
}

type nodeState struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	Text   string `json:"text"`
	HTTP   string `json:"http"`
	RESP   string `json:"resp"`
	Gossip string `json:"gossip"`
	Log    string `json:"log"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", ".cluster", "folder of the nodes' logs and the cluster's state")
	n := fs.Int("n", 3, "number of nodes (up, run)")
	binary := fs.String("binary", "bin/tagcache", "tagcache binary (up, run)")
	basePort := fs.Int("base-port", 20000, "node i listens on base+10i (text), +1 (HTTP), +2 (RESP), +3 (gossip), +4 (peer); 0 picks free ports (up, run)")
	daemon := fs.Bool("daemon", false, "internal: run as the background supervisor of `up`")
	fs.Parse(args)
	var err error
	switch cmd {
	case "up":
		err = up(*dir, *n, *binary, *basePort)
	case "run":
		err = run(*dir, *n, *binary, *basePort, *daemon)
	case "status":
		err = status(*dir)
	case "down":
		err = down(*dir)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: localcluster up|status|down|run [-n N] [-dir .cluster] [-binary bin/tagcache] [-base-port 20000]")
	os.Exit(2)
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func readState(dir string) (*state, error) {
	data, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &st, nil
}

// alive reports whether process pid runs: it exists and is not a zombie (a process
// that exited but that nobody reaped, as in a container without an init that reaps).
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// prepareDir creates dir with a .gitignore that keeps it out of git.
func prepareDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("*\n"), 0o644)
}

// up starts the supervisor in the background and waits until it reports the cluster
// ready (or fails).
func up(dir string, n int, binary string, basePort int) error {
	if st, err := readState(dir); err == nil && alive(st.Supervisor) {
		return fmt.Errorf("a cluster is already running (supervisor pid %d): make cluster-down first", st.Supervisor)
	}
	if err := prepareDir(dir); err != nil {
		return err
	}
	os.Remove(statePath(dir))
	for _, f := range mustGlob(filepath.Join(dir, "n*.log")) {
		os.Remove(f) // a new cluster, new logs
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "localcluster.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "run", "-daemon", "-dir", dir, "-n", fmt.Sprint(n), "-binary", binary, "-base-port", fmt.Sprint(basePort))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives the terminal and make
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(2 * time.Minute)
	for {
		if st, err := readState(dir); err == nil && st.Supervisor == cmd.Process.Pid {
			printCluster(dir, st)
			return nil
		}
		select {
		case err := <-exited:
			tail, _ := os.ReadFile(logPath)
			return fmt.Errorf("the supervisor exited (%v):\n%s", err, tail)
		case <-deadline:
			syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
			return fmt.Errorf("the cluster was not ready in 2 minutes; see %s", logPath)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// run starts the cluster and keeps it until a signal; with daemon, it is the
// background supervisor of up.
func run(dir string, n int, binary string, basePort int, daemon bool) error {
	if err := prepareDir(dir); err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-sig; cancel() }() // a signal during the start stops it
	c, err := clustertests.Start(ctx, n, clustertests.Options{LogDir: dir, Binary: binary, BasePort: basePort, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Close(); err != nil {
			logf("teardown: %v", err)
		}
		os.Remove(statePath(dir))
		logf("cluster torn down")
	}()
	user, pass := c.Credentials()
	st := &state{Supervisor: os.Getpid(), Started: time.Now(), Username: user, Password: pass, Binary: c.Binary()}
	for i := range c.Size() {
		nd := c.Node(i)
		ep := nd.Endpoint()
		st.Nodes = append(st.Nodes, nodeState{Name: nd.Name, PID: c.PID(i), Text: ep.Text, HTTP: ep.HTTP, RESP: ep.RESP,
			Gossip: fmt.Sprintf("%s:%d", nd.Host, nd.GossipPort), Log: nd.LogPath})
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, statePath(dir)); err != nil {
		return err
	}
	if !daemon {
		printCluster(dir, st)
		fmt.Println("Ctrl-C stops it.")
	}
	reported := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
			for _, crash := range c.Unexpected() {
				if !reported[crash] {
					reported[crash] = true
					logf("node crashed: %s", crash)
				}
			}
		}
	}
}

// printCluster prints each node's addresses and lines to paste.
func printCluster(dir string, st *state) {
	fmt.Printf("TagCache cluster of %d nodes on loopback (supervisor pid %d); logs in %s/\n\n", len(st.Nodes), st.Supervisor, dir)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tTEXT\tHTTP\tRESP\tGOSSIP\tLOG")
	for _, nd := range st.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", nd.Name, nd.Text, nd.HTTP, nd.RESP, nd.Gossip, nd.Log)
	}
	tw.Flush()
	if len(st.Nodes) == 0 {
		return
	}
	first := st.Nodes[0]
	host, port := splitHostPort(first.HTTP)
	_, textPort := splitHostPort(first.Text)
	_, respPort := splitHostPort(first.RESP)
	cli := "bin/tagcache"
	fmt.Printf("\nCredentials: %s / %s. Try:\n\n", st.Username, st.Password)
	fmt.Printf("  %s cluster members --host %s --port %s\n", cli, host, port)
	fmt.Printf("  %s put greeting hello --tags demo --host %s --port %s\n", cli, host, port)
	if len(st.Nodes) > 1 {
		h2, p2 := splitHostPort(st.Nodes[len(st.Nodes)-1].HTTP)
		fmt.Printf("  %s get key greeting --host %s --port %s\n", cli, h2, p2)
	}
	fmt.Printf("  printf 'GET\\tgreeting\\n' | nc -q1 %s %s\n", host, textPort)
	fmt.Printf("  redis-cli -h %s -p %s GET greeting\n", host, respPort)
	fmt.Printf("\nmake cluster-status shows it; make cluster-down stops it.\n")
}

func splitHostPort(hp string) (string, string) {
	i := strings.LastIndex(hp, ":")
	if i < 0 {
		return hp, ""
	}
	return hp[:i], hp[i+1:]
}

// status prints each node's process, readiness and ring as it sees it.
func status(dir string) error {
	st, err := readState(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("no local cluster is running (make cluster-up starts one)")
		return nil
	}
	if err != nil {
		return err
	}
	if !alive(st.Supervisor) {
		fmt.Printf("the supervisor (pid %d) is gone; its nodes died with it. make cluster-down cleans up\n", st.Supervisor)
	}
	fmt.Printf("TagCache cluster started %s (supervisor pid %d); logs in %s/\n\n", st.Started.Format(time.RFC3339), st.Supervisor, dir)
	client := &http.Client{Timeout: 2 * time.Second}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPID\tPROCESS\tREADY\tRING MEMBERS\tHTTP")
	for _, nd := range st.Nodes {
		proc := "running"
		if !alive(nd.PID) {
			proc = "gone"
		}
		ready := "-"
		if body, code, err := get(client, "http://"+nd.HTTP+"/ready", "", ""); err == nil {
			ready = "yes"
			if code != http.StatusOK {
				var r struct {
					Reason string `json:"reason"`
				}
				json.Unmarshal(body, &r)
				ready = "no: " + r.Reason
			}
		}
		members := "-"
		if body, code, err := get(client, "http://"+nd.HTTP+"/cluster/ring", st.Username, st.Password); err == nil && code == http.StatusOK {
			var r struct {
				Members []string `json:"members"`
			}
			if json.Unmarshal(body, &r) == nil {
				members = strings.Join(r.Members, ",")
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", nd.Name, nd.PID, proc, ready, members, nd.HTTP)
	}
	return tw.Flush()
}

func get(client *http.Client, url, user, pass string) ([]byte, int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return body, resp.StatusCode, err
}

// down stops the supervisor, which kills its nodes; nodes that outlive it are killed
// here.
func down(dir string) error {
	st, err := readState(dir)
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("no local cluster is running")
		return nil
	}
	if err != nil {
		return err
	}
	if alive(st.Supervisor) {
		syscall.Kill(st.Supervisor, syscall.SIGTERM)
		for deadline := time.Now().Add(15 * time.Second); alive(st.Supervisor) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(st.Supervisor) {
			syscall.Kill(st.Supervisor, syscall.SIGKILL)
		}
	}
	var left []string
	for _, nd := range st.Nodes {
		if alive(nd.PID) && isTagcache(nd.PID) {
			syscall.Kill(nd.PID, syscall.SIGKILL)
			time.Sleep(100 * time.Millisecond)
			if alive(nd.PID) {
				left = append(left, fmt.Sprintf("%s (pid %d)", nd.Name, nd.PID))
			}
		}
	}
	os.Remove(statePath(dir))
	if len(left) > 0 {
		return fmt.Errorf("still running: %s", strings.Join(left, ", "))
	}
	fmt.Printf("local cluster stopped; logs kept in %s/\n", dir)
	return nil
}

// isTagcache reports whether pid still runs a tagcache server (and not a process that
// reused the pid).
func isTagcache(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "tagcache") && strings.Contains(string(cmdline), "server")
}

func mustGlob(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	return m
}
