package netcap

import (
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// pingPong runs b.N 64-byte request/response exchanges over one loopback TCP connection:
// every exchange is at least two packets through the egress hook (and, without the
// loopback skip, two through ingress).
func pingPong(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetNoDelay(true)
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	buf := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}

// stream sends b.N 16 KiB writes one way: throughput, with GSO packets of up to 64 KiB.
func stream(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 16<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	<-done
	b.StopTimer()
}

// BenchmarkLoopback compares the same loopback workload without and with the cgroup_skb
// capture programs attached (go test ./bpf/netcap -run '^$' -bench Loopback -count 5).
// The "with" runs report the packets the programs saw per operation.
func BenchmarkLoopback(b *testing.B) {
	for _, w := range []struct {
		name string
		fn   func(*testing.B)
	}{{"pingpong64", pingPong}, {"stream16k", stream}} {
		b.Run(w.name+"/without", w.fn)
		b.Run(w.name+"/with_cgroup_skb", func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("needs root")
			}
			p, err := Load(Config{Hook: HookCgroup}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			go func() { // drain the ring as the agent would
				for {
					if _, err := p.Next(); err == ErrClosed {
						return
					}
				}
			}()
			// The kernel's own accounting of program run time: exact per-packet cost,
			// unlike wall time on a loaded machine.
			stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				b.Fatalf("enable BPF run-time stats: %v", err)
			}
			defer stats.Close()
			progRun := func() (time.Duration, uint64) {
				var d time.Duration
				var n uint64
				for _, name := range []string{"cg_egress", "cg_ingress"} {
					prog, err := p.loader.Program(name)
					if err != nil {
						b.Fatal(err)
					}
					st, err := prog.Stats()
					if err != nil {
						b.Fatal(err)
					}
					d, n = d+st.Runtime, n+st.RunCount
				}
				return d, n
			}
			before, _ := p.Counters()
			t0, n0 := progRun()
			w.fn(b)
			t1, n1 := progRun()
			after, _ := p.Counters()
			b.ReportMetric(float64(after["packets"]-before["packets"])/float64(b.N), "pkts/op")
			if n1 > n0 {
				b.ReportMetric(float64(t1-t0)/float64(n1-n0), "bpf-ns/pkt")
			}
		})
	}
}
