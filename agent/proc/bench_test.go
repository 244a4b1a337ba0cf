package proc

import (
	"context"
	"testing"
	"time"
)

// BenchmarkFork and BenchmarkExec apply the same number of records to a warm table; their
// ratio is what a fork costs the agent relative to the exec it already handled. Pids are
// beyond pid_max and cgroup ids warm in the cache, so neither touches /proc.
func BenchmarkFork(b *testing.B) {
	tb := newTable(1 << 16)
	tb.Exec(Info{PID: 4100000, Exe: "/usr/bin/bash", Args: []string{"bash"}, CgroupID: 1, Start: time.Now()})
	tb.containers[1] = ""
	ctx := context.Background()
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tb.Fork(ctx, Fork{PID: 4100001 + uint32(i%30000), ParentTGID: 4100000, CgroupID: 1, At: now.Add(time.Duration(i))})
	}
}

func BenchmarkExec(b *testing.B) {
	tb := newTable(1 << 16)
	tb.Exec(Info{PID: 4100000, Exe: "/usr/bin/bash", Args: []string{"bash"}, CgroupID: 1, Start: time.Now()})
	tb.containers[1] = ""
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tb.Exec(Info{PID: 4100001 + uint32(i%30000), PPID: 4100000, Exe: "/usr/bin/cp", Args: []string{"cp", "a", "b"},
			CgroupID: 1, Start: now.Add(time.Duration(i))})
	}
}

// BenchmarkContainerID parses a typical v2 line of a kubelet container.
func BenchmarkContainerID(b *testing.B) {
	line := []byte("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4a7c2d3e_1b2f_4c5d_9e8f_0a1b2c3d4e5f.slice/cri-containerd-" + dockerID + ".scope\n")
	b.ReportAllocs()
	for b.Loop() {
		if id, _ := ContainerID(line); id != dockerID {
			b.Fatal(id)
		}
	}
}
