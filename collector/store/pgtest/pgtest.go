// Package pgtest runs a throwaway PostgreSQL server for tests and benchmarks: a fresh
// cluster made by initdb in a temporary directory, started with pg_ctl as the postgres user,
// listening only on a unix socket in that directory (and, when asked, on a loopback port).
// It needs root (to act as postgres) and Debian's postgresql package; callers skip otherwise.
package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Server is a running throwaway PostgreSQL.
type Server struct {
	Dir  string
	Port int
	bin  string
	uid  int
	gid  int
}

// ErrUnavailable says why no server can be started here.
var ErrUnavailable = errors.New("pgtest: PostgreSQL unavailable")

// binDir finds the newest /usr/lib/postgresql/<v>/bin, or the directory of initdb on PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("%w: no initdb (install Debian's postgresql)", ErrUnavailable)
}

// Start initialises and starts a server. With tcp, it also listens on a free 127.0.0.1 port.
func Start(tcp bool) (*Server, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: need root to run the server as the postgres user", ErrUnavailable)
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: no postgres user: %v", ErrUnavailable, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "ward-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, bin: bin, uid: uid, gid: gid, Port: 5432}
	if err := os.Chown(dir, uid, gid); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if out, err := s.run("initdb", "-D", s.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	listen := "''"
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		s.Port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		listen = "127.0.0.1"
	}
	opts := fmt.Sprintf("-c listen_addresses=%s -c port=%d -c unix_socket_directories=%s -c max_connections=200 -c shared_buffers=128MB",
		listen, s.Port, dir)
	if out, err := s.run("pg_ctl", "-D", s.data(), "-o", opts, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.Dir, "data") }

func (s *Server) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=" + s.bin + ":/usr/bin:/bin", "LC_ALL=C.UTF-8", "LANG=C.UTF-8"}
	cmd.SysProcAttr = sysProcAttr(s.uid, s.gid)
	return cmd.CombinedOutput()
}

// CreateDB creates a database and returns its DSN (over the unix socket).
func (s *Server) CreateDB(name string) (string, error) {
	if out, err := s.run("createdb", "-h", s.Dir, "-p", strconv.Itoa(s.Port), "-U", "postgres", name); err != nil {
		return "", fmt.Errorf("pgtest: createdb %s: %v\n%s", name, err, out)
	}
	return s.DSN(name), nil
}

// DSN is the connection string of database name over the unix socket.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.Dir, s.Port, name)
}

// Stop shuts the server down fast and removes its directory.
func (s *Server) Stop() error {
	out, err := s.run("pg_ctl", "-D", s.data(), "-m", "fast", "-w", "stop")
	if rerr := os.RemoveAll(s.Dir); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("pgtest: stop: %v\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DB starts a server for tb (skipping when PostgreSQL is unavailable), creates a fresh
// database and returns its DSN; the server stops when tb ends.
func DB(tb testing.TB) string {
	tb.Helper()
	s, err := Start(false)
	if errors.Is(err, ErrUnavailable) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Error(err)
		}
	})
	dsn, err := s.CreateDB("ward")
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}
