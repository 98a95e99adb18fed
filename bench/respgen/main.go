// Command respgen writes the memory-comparison data set as a stream of RESP commands on
// stdout, for `redis-cli --pipe` to load into Redis or into a TagCache node: n keys with
// values of a given size, each carrying two tags drawn from a pool. For Redis the tags
// are SADD sets (the usual way to keep tag indexes in Redis); for TagCache they ride on
// SET's TAGS option.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
)

func main() {
	target := flag.String("target", "tagcache", "tagcache (SET … TAGS t1,t2) or redis (SET plus one SADD per tag)")
	keys := flag.Int("keys", 1000000, "number of keys")
	valueSize := flag.Int("value-size", 100, "value size in bytes")
	tagPool := flag.Int("tag-pool", 10000, "number of distinct tags")
	flag.Parse()
	if *target != "tagcache" && *target != "redis" {
		fmt.Fprintln(os.Stderr, "respgen: --target must be tagcache or redis")
		os.Exit(2)
	}
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	value := make([]byte, *valueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	for i := 0; i < *keys; i++ {
		key := "key:" + strconv.Itoa(i)
		t1 := "tag:" + strconv.Itoa(i%*tagPool)
		t2 := "tag:" + strconv.Itoa((i/7+*tagPool/2)%*tagPool)
		if *target == "redis" {
			command(w, "SET", key, string(value))
			command(w, "SADD", t1, key)
			command(w, "SADD", t2, key)
		} else {
			command(w, "SET", key, string(value), "TAGS", t1+","+t2)
		}
	}
}

func command(w *bufio.Writer, args ...string) {
	fmt.Fprintf(w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
	}
}
