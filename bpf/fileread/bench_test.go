package fileread

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkOpenat measures what the probe adds to open(2)+close(2) of a file, side by side in
// one run: no probe, probe loaded with nothing tagged (one array lookup), probe with 1000
// tagged inodes none of which is opened (fd walk + one hash miss), and opening a tagged file
// (hash hit; rate limited, so no ring-buffer record after the first).
func BenchmarkOpenat(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	plain, tagged := filepath.Join(dir, "plain"), filepath.Join(dir, "tagged")
	for _, p := range []string{plain, tagged} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	open := func(b *testing.B, path string) {
		for b.Loop() {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
	}
	b.Run("no-probe", func(b *testing.B) { open(b, plain) })
	p, err := Load(Config{IgnoreTGID: 0}, quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	go func() { // drain
		for {
			if _, err := p.Next(); err == ErrClosed {
				return
			}
		}
	}()
	b.Run("probe-empty-set", func(b *testing.B) { open(b, plain) })
	for i := range uint64(1000) {
		if err := p.Tag(1, 1_000_000+i, 1); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("probe-tagged-miss", func(b *testing.B) { open(b, plain) })
	var st unix.Stat_t
	if err := unix.Stat(tagged, &st); err != nil {
		b.Fatal(err)
	}
	if err := p.Tag(KernelDev(st.Dev), st.Ino, 1); err != nil {
		b.Fatal(err)
	}
	b.Run("probe-tagged-hit", func(b *testing.B) { open(b, tagged) })
}
