package filewrite

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkUnwatchedWrite measures what the probe adds to a write(2) that is
// not under any watched directory: the syscall tracepoint plus one tracked
// map lookup. Both sub-benchmarks run in the same process so they compare
// like with like; IgnoreTGID is left 0 so the lookup path is exercised.
func BenchmarkUnwatchedWrite(b *testing.B) {
	buf := make([]byte, 64)
	write := func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "bench"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := unix.Write(fd, buf); err != nil {
				b.Fatal(err)
			}
			if i%4096 == 4095 { // keep the file small
				b.StopTimer()
				if _, err := unix.Seek(fd, 0, 0); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
	}
	b.Run("without-agent", write)
	withAgent := func(cfg Config) func(b *testing.B) {
		return func(b *testing.B) {
			if os.Geteuid() != 0 {
				b.Skip("needs root to load BPF programs")
			}
			p, err := Load(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			if _, err := p.Watch(b.TempDir()); err != nil { // unrelated dir
				b.Fatal(err)
			}
			write(b)
		}
	}
	b.Run("with-agent", withAgent(Config{}))
	// Same, but this process is the ignored agent tgid: the program returns
	// before the map lookup, so the gap to with-agent is the lookup itself
	// and the gap to without-agent is the syscall-tracepoint machinery.
	b.Run("with-agent-self-ignored", withAgent(Config{IgnoreTGID: uint32(os.Getpid())}))
}
