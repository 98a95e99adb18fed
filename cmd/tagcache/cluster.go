package main

// `tagcache cluster members|ring`: the cluster as one node sees it, from its HTTP API
// (GET /cluster/members, GET /cluster/ring). A client command like the others: the same
// connection flags, credentials and --json.

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"text/tabwriter"

	"github.com/tagcache/tagcache/node"
)

func init() {
	commands[clusterCommand.name] = command{clusterCommand.summary, clusterCommand.main}
}

var clusterCommand = clientCommand{
	name:     "cluster",
	summary:  "show the cluster's members, or its ring of partitions and owners",
	synopsis: []string{"members", "ring [--partitions]"},
	setup: func(fs *flag.FlagSet) action {
		partitions := fs.Bool("partitions", false, "ring: list every partition with its owner")
		return func(c *client, args []string) error {
			kind, rest, err := subcommand(args, "members", "ring")
			if err != nil {
				return err
			}
			if err := wantArgs(rest); err != nil {
				return err
			}
			if kind == "members" {
				if *partitions {
					return usageErrorf("--partitions goes with 'cluster ring'")
				}
				return c.clusterMembers()
			}
			return c.clusterRing(*partitions)
		}
	},
}

// clusterMembers prints one row per member. The node that answered is marked (self).
func (c *client) clusterMembers() error {
	var reply struct {
		Members *[]node.MemberInfo `json:"members"`
	}
	if err := c.call(http.MethodGet, "/cluster/members", nil, nil, &reply); err != nil {
		return err
	}
	if reply.Members == nil {
		return errors.New("the node's reply has no members")
	}
	if c.json {
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tGOSSIP\tPEER\tHTTP\tPARTITIONS\tITEMS\tHIT RATIO")
	var failed []node.MemberInfo
	for _, m := range *reply.Members {
		name := m.Name
		if m.Self {
			name += " (self)"
		}
		items, ratio := "-", "-"
		if m.Stats != nil {
			items = fmt.Sprint(m.Stats.Items)
			ratio = fmt.Sprintf("%.2f%%", 100*m.Stats.HitRatio)
		} else if m.StatsError != "" {
			failed = append(failed, m)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			name, m.State, dash(m.Gossip), dash(m.Peer), dash(m.HTTP), m.Partitions, items, ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range failed {
		fmt.Fprintf(c.stdout, "No statistics from %s: %s\n", m.Name, m.StatsError)
	}
	return nil
}

// clusterRing prints the ring's version and each member's partition count, and with
// partitions every partition's owner.
func (c *client) clusterRing(partitions bool) error {
	var ring node.RingInfo
	if err := c.call(http.MethodGet, "/cluster/ring", nil, nil, &ring); err != nil {
		return err
	}
	if c.json {
		return nil
	}
	if len(ring.Owners) != ring.Partitions {
		return fmt.Errorf("the node's ring has %d partitions but %d owners", ring.Partitions, len(ring.Owners))
	}
	owned := map[string]int{}
	for _, o := range ring.Owners {
		owned[o]++
	}
	c.printf("Ring version %d: %s over %s\n", ring.Version,
		plural(int64(ring.Partitions), "partition", "partitions"), plural(int64(len(ring.Members)), "member", "members"))
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tPARTITIONS")
	for _, m := range ring.Members {
		fmt.Fprintf(tw, "%s\t%d\n", m, owned[m])
		delete(owned, m)
	}
	for _, o := range slices.Sorted(maps.Keys(owned)) { // a reply that is not consistent
		fmt.Fprintf(tw, "%s (not a member)\t%d\n", o, owned[o])
	}
	if partitions {
		fmt.Fprintln(tw, "\nPARTITION\tOWNER")
		for p, o := range ring.Owners {
			fmt.Fprintf(tw, "%d\t%s\n", p, o)
		}
	}
	return tw.Flush()
}

// dash is s, or "-" when it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
