// Command tagcache is the TagCache binary: `tagcache server` runs a node, and the other
// subcommands are a command-line client of a running node's HTTP API.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand of the binary.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands lists every subcommand; client.go adds the client ones.
var commands = map[string]command{
	"server": {"run a TagCache node", runServer},
	"version": {"print the version", func(_ []string, stdout, _ io.Writer) int {
		fmt.Fprintln(stdout, "tagcache", version)
		return 0
	}},
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tagcache: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return cmd.run(args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: tagcache <command> [flags] [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-11s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'tagcache <command> --help' for a command's flags and their defaults.")
	fmt.Fprintln(w, strings.TrimSpace(`
Quick start:
  tagcache server                          # a node on 127.0.0.1 (text 1984, HTTP 8080)
  tagcache put greeting hello --tags demo  # store through the HTTP API
  tagcache get key greeting
  tagcache flush tag demo`))
}
