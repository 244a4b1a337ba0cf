package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ward-dlp/ward/collector"
	"github.com/ward-dlp/ward/collector/store"
)

// backupFormat names the archive layout; restore refuses anything else.
const backupFormat = "ward-collector-backup/1"

// Archive members besides the PKI files.
const (
	manifestName = "MANIFEST.json"
	dbName       = "ward.db"
	pkiPrefix    = "pki/"
)

// maxMemberBytes bounds one archive member on restore (the database is by far the largest).
const maxMemberBytes = 64 << 30

// manifest is the first member of a backup archive: what is in it and how to check it.
type manifest struct {
	Format    string            `json:"format"`
	CreatedAt time.Time         `json:"created_at"`
	Version   string            `json:"collector_version"`
	Store     store.BackupInfo  `json:"store"`
	SHA256    map[string]string `json:"sha256"`
}

// backupCmd is `ward-collector backup --home DIR FILE`: one archive with a consistent copy
// of the store (VACUUM INTO, safe while the collector runs) and the PKI directory — the CA
// key, the server key and the fleet fingerprint key — without which enrolled agents would
// have to enrol again and fingerprints would stop matching across the restore.
func backupCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ward-collector backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	home := fs.String("home", defaultHome(), "Ward state root (the collector's --home)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ward-collector backup [--home DIR] FILE\n\nFILE is a new gzip'ed tar archive (mode 0600): it holds the CA private key.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("backup: want exactly one FILE argument")
	}
	dest := fs.Arg(0)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	state := collector.Defaults(*home).StateDir()
	m, err := writeBackup(ctx, state, dest)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "backup %s: %d events, %d agents, schema %d, %d PKI files\n",
		dest, m.Store.Events, m.Store.Agents, m.Store.SchemaVersion, len(m.SHA256)-1)
	return nil
}

func writeBackup(ctx context.Context, state, dest string) (manifest, error) {
	pkiDir := filepath.Join(state, "pki")
	if _, err := os.Stat(filepath.Join(pkiDir, "ca.key")); err != nil {
		return manifest{}, fmt.Errorf("no collector CA under %s (wrong --home?): %w", state, err)
	}
	work, err := os.MkdirTemp(filepath.Dir(absOr(dest)), ".ward-backup-")
	if err != nil {
		return manifest{}, err
	}
	defer os.RemoveAll(work)
	dbCopy := filepath.Join(work, dbName)
	info, err := store.Backup(ctx, filepath.Join(state, dbName), dbCopy)
	if err != nil {
		return manifest{}, err
	}
	members := map[string]string{dbName: dbCopy}
	entries, err := os.ReadDir(pkiDir)
	if err != nil {
		return manifest{}, fmt.Errorf("read %s: %w", pkiDir, err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			members[pkiPrefix+e.Name()] = filepath.Join(pkiDir, e.Name())
		}
	}
	m := manifest{Format: backupFormat, CreatedAt: time.Now().UTC(), Version: version, Store: info, SHA256: map[string]string{}}
	for name, path := range members {
		sum, err := fileSHA256(path)
		if err != nil {
			return manifest{}, err
		}
		m.SHA256[name] = sum
	}

	tmp := filepath.Join(work, "archive")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return manifest{}, err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return manifest{}, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: manifestName, Mode: 0o600, Size: int64(len(mb)), ModTime: m.CreatedAt, Typeflag: tar.TypeReg}); err != nil {
		return manifest{}, err
	}
	if _, err := tw.Write(mb); err != nil {
		return manifest{}, err
	}
	names := make([]string, 0, len(members))
	for n := range members {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := addFile(tw, n, members[n]); err != nil {
			return manifest{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return manifest{}, err
	}
	if err := zw.Close(); err != nil {
		return manifest{}, err
	}
	if err := f.Sync(); err != nil {
		return manifest{}, err
	}
	if err := f.Close(); err != nil {
		return manifest{}, err
	}
	// Link, not rename: an existing FILE is never replaced.
	if err := os.Link(tmp, dest); err != nil {
		return manifest{}, fmt.Errorf("write %s: %w", dest, err)
	}
	return m, nil
}

func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func addFile(tw *tar.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: name, Mode: int64(st.Mode().Perm()), Size: st.Size(), ModTime: st.ModTime(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// restoreCmd is `ward-collector restore --home DIR FILE`. It checks every member against
// the manifest and the database with integrity_check before touching the target; it
// refuses to run while a collector serves that home, and to replace an existing store or
// CA unless --force. Restored files get the owner of the collector's state directory, so a
// restore run as root serves a collector that runs as its own user.
func restoreCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ward-collector restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	home := fs.String("home", defaultHome(), "Ward state root to restore into (the collector's --home)")
	force := fs.Bool("force", false, "replace an existing store and PKI")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ward-collector restore [--home DIR] [--force] FILE\n\nStop the collector first.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("restore: want exactly one FILE argument")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := collector.Defaults(*home)
	m, err := restoreBackup(ctx, fs.Arg(0), cfg.StateDir(), cfg.AdminSocketPath(), *force)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(stdout, "restored %s into %s: %d events, %d agents, schema %d (backup of %s by collector %s)\n",
		fs.Arg(0), cfg.StateDir(), m.Store.Events, m.Store.Agents, m.Store.SchemaVersion,
		m.CreatedAt.Format(time.RFC3339), m.Version)
	return nil
}

func restoreBackup(ctx context.Context, archive, state, adminSock string, force bool) (manifest, error) {
	if c, err := net.DialTimeout("unix", adminSock, time.Second); err == nil {
		_ = c.Close()
		return manifest{}, fmt.Errorf("a collector is serving %s (its admin socket %s answers): stop it first", state, adminSock)
	}
	parent := filepath.Dir(state)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return manifest{}, err
	}
	work, err := os.MkdirTemp(parent, ".ward-restore-")
	if err != nil {
		return manifest{}, err
	}
	defer os.RemoveAll(work)
	m, err := extractBackup(archive, work)
	if err != nil {
		return manifest{}, err
	}
	if _, err := store.Verify(ctx, filepath.Join(work, dbName)); err != nil {
		return manifest{}, fmt.Errorf("the archive's database is not sound: %w", err)
	}
	pkiDir := filepath.Join(state, "pki")
	if !force {
		for _, p := range []string{filepath.Join(state, dbName), filepath.Join(pkiDir, "ca.key")} {
			if _, err := os.Stat(p); err == nil {
				return manifest{}, fmt.Errorf("%s exists: this home already has a collector; use --force to replace it", p)
			}
		}
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return manifest{}, err
	}
	uid, gid, err := ownerOf(state)
	if err != nil {
		return manifest{}, err
	}
	// PKI first: a store without its CA is useless, a CA without the store is not.
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return manifest{}, err
	}
	for name := range m.SHA256 {
		rel, ok := strings.CutPrefix(name, pkiPrefix)
		if !ok {
			continue
		}
		dst := filepath.Join(pkiDir, rel)
		if err := os.Rename(filepath.Join(work, filepath.FromSlash(name)), dst); err != nil {
			return manifest{}, err
		}
		if err := os.Lchown(dst, uid, gid); err != nil {
			return manifest{}, err
		}
	}
	if err := os.Lchown(pkiDir, uid, gid); err != nil {
		return manifest{}, err
	}
	dbPath := filepath.Join(state, dbName)
	if _, err := store.Restore(ctx, filepath.Join(work, dbName), dbPath, true); err != nil {
		return manifest{}, err
	}
	if err := os.Lchown(dbPath, uid, gid); err != nil {
		return manifest{}, err
	}
	return m, nil
}

// ownerOf returns the owner of dir: a state directory the packages made belongs to the
// collector's user.
func ownerOf(dir string) (int, int, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return 0, 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("stat %s: no owner information", dir)
	}
	return int(sys.Uid), int(sys.Gid), nil
}

// extractBackup unpacks archive into dir, accepting only the members the manifest names
// (no paths outside dir, no links) and checking each one's SHA-256.
func extractBackup(archive, dir string) (manifest, error) {
	f, err := os.Open(archive)
	if err != nil {
		return manifest{}, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return manifest{}, fmt.Errorf("%s is not a Ward backup: %w", archive, err)
	}
	tr := tar.NewReader(zr)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != manifestName {
		return manifest{}, fmt.Errorf("%s is not a Ward backup: no %s first", archive, manifestName)
	}
	var m manifest
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&m); err != nil {
		return manifest{}, fmt.Errorf("%s: %w", manifestName, err)
	}
	if m.Format != backupFormat {
		return manifest{}, fmt.Errorf("unsupported backup format %q (want %q)", m.Format, backupFormat)
	}
	if _, ok := m.SHA256[dbName]; !ok {
		return manifest{}, fmt.Errorf("backup has no %s", dbName)
	}
	if _, ok := m.SHA256[pkiPrefix+"ca.key"]; !ok {
		return manifest{}, errors.New("backup has no CA key: agents enrolled with this collector would be refused")
	}
	seen := map[string]bool{}
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		return manifest{}, err
	}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return manifest{}, fmt.Errorf("read archive: %w", err)
		}
		want, ok := m.SHA256[hdr.Name]
		if !ok || hdr.Typeflag != tar.TypeReg || seen[hdr.Name] || strings.Contains(hdr.Name, "..") ||
			(hdr.Name != dbName && !strings.HasPrefix(hdr.Name, pkiPrefix)) || strings.Count(hdr.Name, "/") > 1 {
			return manifest{}, fmt.Errorf("unexpected archive member %q", hdr.Name)
		}
		if hdr.Size > maxMemberBytes {
			return manifest{}, fmt.Errorf("archive member %q is too large (%d bytes)", hdr.Name, hdr.Size)
		}
		seen[hdr.Name] = true
		dst := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(hdr.Mode).Perm()&0o644)
		if err != nil {
			return manifest{}, err
		}
		h := sha256.New()
		_, err = io.Copy(io.MultiWriter(out, h), io.LimitReader(tr, maxMemberBytes))
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return manifest{}, fmt.Errorf("extract %s: %w", hdr.Name, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return manifest{}, fmt.Errorf("archive member %s is damaged: sha256 %s, manifest says %s", hdr.Name, got, want)
		}
	}
	for name := range m.SHA256 {
		if !seen[name] {
			return manifest{}, fmt.Errorf("archive lacks %s, which its manifest lists", name)
		}
	}
	return m, nil
}
