package node

import (
	"context"
	"testing"
)

// benchmarkText measures the text protocol server's CPU per request without the
// network, as benchmarkRESP does for RESP: batches of 16 pipelined lines per read.
func benchmarkText(b *testing.B, line string) {
	n, err := New(Config{Bind: "127.0.0.1", TCPPort: -1, HTTPPort: -1, RESPPort: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	n.Store().Put("key:000001", []byte("xxx"), 0, nil)
	s := newTextServer(n)
	var batch []byte
	for range 16 {
		batch = append(batch, line+"\n"...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	s.serveConn(&respBenchConn{batch: batch, rounds: b.N/16 + 1})
}

func BenchmarkTextGet(b *testing.B) { benchmarkText(b, "GET\tkey:000001") }
func BenchmarkTextPut(b *testing.B) { benchmarkText(b, "PUT\tkey:000001\t-\t-\txxx") }
