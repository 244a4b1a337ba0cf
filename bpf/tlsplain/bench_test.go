package tlsplain

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/ward-dlp/ward/bpf/internal/kernel"
)

// sslBenchClient calls SSL_write n times on one connection and prints the wall and CPU
// nanoseconds the loop took: the per-call cost is measured inside the client, without its
// start-up and handshake.
const sslBenchClient = `#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(int argc, char **argv) {
	int port = atoi(argv[1]), size = atoi(argv[2]);
	long n = atol(argv[3]);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("connect"); return 1; }
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, s);
	if (SSL_connect(ssl) != 1) { fprintf(stderr, "handshake failed\n"); return 1; }
	char *buf = malloc(size);
	memset(buf, 'x', size);
	long long w0 = ns(CLOCK_MONOTONIC), c0 = ns(CLOCK_PROCESS_CPUTIME_ID);
	for (long i = 0; i < n; i++)
		if (SSL_write(ssl, buf, size) != size) { fprintf(stderr, "short write\n"); return 1; }
	long long w1 = ns(CLOCK_MONOTONIC), c1 = ns(CLOCK_PROCESS_CPUTIME_ID);
	printf("%lld %lld\n", w1 - w0, c1 - c0);
	return 0;
}
`

var buildClient struct {
	once sync.Once
	path string
	err  error
}

func sslClient(b *testing.B) string {
	b.Helper()
	buildClient.once.Do(func() {
		cc, err := exec.LookPath("cc")
		if err != nil {
			buildClient.err = err
			return
		}
		dir, err := os.MkdirTemp("", "ward-sslbench-")
		if err != nil {
			buildClient.err = err
			return
		}
		src := filepath.Join(dir, "client.c")
		buildClient.path = filepath.Join(dir, "client")
		if err := os.WriteFile(src, []byte(sslBenchClient), 0o644); err != nil {
			buildClient.err = err
			return
		}
		if out, err := exec.Command(cc, "-O2", "-o", buildClient.path, src, "-lssl", "-lcrypto").CombinedOutput(); err != nil {
			buildClient.err = fmt.Errorf("%v: %s", err, out)
		}
	})
	if buildClient.err != nil {
		b.Skipf("cannot build the OpenSSL client (cc, libssl-dev): %v", buildClient.err)
	}
	return buildClient.path
}

// sink is a TLS server on loopback that discards everything.
func sink(b *testing.B) net.Listener {
	b.Helper()
	srv := serverConfig(&testing.T{})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln
}

// benchMode sets up one way of running: no probe, the empty uprobe (the floor), or Ward's
// probe with a reader draining its ring as the agent does.
func benchMode(b *testing.B, mode, path string, lib Library, goWrite uint64) func() {
	b.Helper()
	if mode == "none" {
		return func() {}
	}
	if os.Geteuid() != 0 {
		b.Skip("needs root to load BPF programs")
	}
	p, err := Load(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if mode == "noop" {
		ex, err := link.OpenExecutable(path)
		if err != nil {
			b.Fatal(err)
		}
		var links []link.Link
		err = p.ring.Maps(func(l *kernel.Loader) error {
			prog, err := l.Program("noop")
			if err != nil {
				return err
			}
			for _, fn := range functions[lib] {
				if fn.recv {
					continue
				}
				opts := &link.UprobeOptions{Address: goWrite}
				up, err := ex.Uprobe(fn.symbol, prog, opts)
				if err != nil {
					if errors.Is(err, link.ErrNoSymbol) {
						continue
					}
					return err
				}
				links = append(links, up)
				if lib != GoTLS {
					ret, err := ex.Uretprobe(fn.symbol, prog, nil)
					if err != nil {
						return err
					}
					links = append(links, ret)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return func() {
			for _, l := range links {
				l.Close()
			}
			p.Close()
		}
	}
	if _, err := p.Attach(Target{Path: path, Library: lib, GoWrite: goWrite}); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := p.Next(); errors.Is(err, ErrClosed) {
				return
			}
		}
	}()
	return func() {
		if d, err := p.Drops(); err == nil && d["ringbuf_full"] > 0 {
			b.ReportMetric(float64(d["ringbuf_full"]), "ring-drops")
		}
		p.Close()
		<-done
	}
}

// BenchmarkSSLWrite measures one SSL_write of the system OpenSSL from a C client, without a
// probe, with an empty uprobe+uretprobe on SSL_write/SSL_write_ex (the floor: two traps per
// call), and with Ward's probe (capture, socket join, ring). Figures are the client's own
// per-call wall and CPU time; ns/op includes process start and the handshake and is not the
// figure to read.
func BenchmarkSSLWrite(b *testing.B) {
	client := sslClient(b)
	libssl := ""
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libssl.so.3", "/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib64/libssl.so.3"} {
		if _, err := os.Stat(p); err == nil {
			libssl = p
			break
		}
	}
	if libssl == "" {
		b.Skip("no libssl.so.3")
	}
	ln := sink(b)
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, size := range []int{1024, 16384} {
		for _, mode := range []string{"none", "noop", "ward"} {
			b.Run(fmt.Sprintf("%dB/%s", size, mode), func(b *testing.B) {
				stop := benchMode(b, mode, libssl, OpenSSL, 0)
				defer stop()
				out, err := exec.Command(client, port, strconv.Itoa(size), strconv.Itoa(b.N)).Output()
				if err != nil {
					b.Fatalf("client: %v", err)
				}
				f := strings.Fields(string(out))
				wall, _ := strconv.ParseFloat(f[0], 64)
				cpu, _ := strconv.ParseFloat(f[1], 64)
				b.ReportMetric(wall/float64(b.N), "call-ns")
				b.ReportMetric(cpu/float64(b.N), "call-cpu-ns")
			})
		}
	}
}

// BenchmarkGoTLSWrite measures (*tls.Conn).Write in this process without a probe, with an
// empty uprobe on it, and with Ward's (entry-only) Go probe.
func BenchmarkGoTLSWrite(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	off, ok, err := GoWriteOffset(exe)
	if err != nil || !ok {
		b.Fatalf("GoWriteOffset: %v %v", ok, err)
	}
	ln := sink(b)
	defer ln.Close()
	for _, size := range []int{1024, 16384} {
		for _, mode := range []string{"none", "noop", "ward"} {
			b.Run(fmt.Sprintf("%dB/%s", size, mode), func(b *testing.B) {
				stop := benchMode(b, mode, exe, GoTLS, off)
				defer stop()
				c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				buf := make([]byte, size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkUnrelatedWrite measures what the socket-binding tracepoints cost every write(2)
// on the host that is not inside a TLS call: 4 KiB to /dev/null with and without the probe.
func BenchmarkUnrelatedWrite(b *testing.B) {
	for _, mode := range []string{"none", "ward"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "ward" {
				if os.Geteuid() != 0 {
					b.Skip("needs root")
				}
				p, err := Load(Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
			}
			fd, err := unix.Open("/dev/null", unix.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			buf := make([]byte, 4096)
			b.ResetTimer()
			for range b.N {
				if _, err := unix.Write(fd, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
