package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// BackupInfo describes a database file checked by Verify.
type BackupInfo struct {
	SchemaVersion int   `json:"schema_version"`
	Events        int64 `json:"events"`
	Agents        int64 `json:"agents"`
}

// Backup writes a consistent copy of the database at dbPath to dest with SQLite's
// `VACUUM INTO`. It reads one snapshot inside a read transaction, so it is safe while a
// collector is running and writing (WAL readers do not block the writer), and the copy is
// compacted and free of WAL state. dest must not exist. The copy is verified before
// Backup returns.
//
// When dbPath is not in use, opening it creates the -wal and -shm files as the calling
// user (normally root, while the collector runs as its own user); Backup hands any such
// file back to the owner of the database so the collector can open it again.
func Backup(ctx context.Context, dbPath, dest string) (BackupInfo, error) {
	st, err := os.Stat(dbPath)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	if _, err := os.Stat(dest); err == nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %s already exists", dest)
	}
	db, err := sql.Open("sqlite", dsn(dbPath, false))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: open %s: %w", dbPath, err)
	}
	_, err = db.ExecContext(ctx, `VACUUM INTO ?`, dest)
	if cerr := db.Close(); cerr != nil && err == nil {
		err = cerr
	}
	restoreOwner(dbPath, st)
	if err != nil {
		_ = os.Remove(dest)
		return BackupInfo{}, fmt.Errorf("store: backup %s into %s: %w", dbPath, dest, err)
	}
	if err := os.Chmod(dest, 0o600); err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup: %w", err)
	}
	info, err := Verify(ctx, dest)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: backup is not sound: %w", err)
	}
	return info, nil
}

// restoreOwner gives the database's side files the database's owner, when we created them.
func restoreOwner(dbPath string, db os.FileInfo) {
	sys, ok := db.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		_ = os.Lchown(dbPath+suffix, int(sys.Uid), int(sys.Gid))
	}
}

// dsn builds a connection string for maintenance connections (no migrations).
func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	if readOnly {
		q.Set("mode", "ro")
	}
	return "file:" + path + "?" + q.Encode()
}

// Verify checks that the database file at path is a sound Ward store: `PRAGMA
// integrity_check` passes and its schema version is one this build can open. It opens the
// file read-only and never migrates it.
func Verify(ctx context.Context, path string) (BackupInfo, error) {
	if _, err := os.Stat(path); err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify: open %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify %s: integrity_check: %w", path, err)
	}
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			_ = rows.Close()
			return BackupInfo{}, fmt.Errorf("store: verify %s: %w", path, err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify %s: integrity_check: %w", path, err)
	}
	_ = rows.Close()
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return BackupInfo{}, fmt.Errorf("store: verify %s: integrity_check failed: %s", path, strings.Join(problems, "; "))
	}
	var info BackupInfo
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify %s: not a Ward store (schema_migrations: %w)", path, err)
	}
	info.SchemaVersion = int(v.Int64)
	if info.SchemaVersion < 1 || info.SchemaVersion > len(migrations) {
		return BackupInfo{}, fmt.Errorf("store: verify %s: schema version %d, this build supports 1..%d", path, info.SchemaVersion, len(migrations))
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&info.Events); err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify %s: count events: %w", path, err)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM agents`).Scan(&info.Agents); err != nil {
		return BackupInfo{}, fmt.Errorf("store: verify %s: count agents: %w", path, err)
	}
	return info, nil
}

// ErrStoreExists is returned by Restore when the target already holds a database and force
// was not given.
var ErrStoreExists = errors.New("a store already exists there")

// Restore verifies the database file src and installs it as dbPath, replacing an existing
// database only when force is set. The copy is written beside dbPath, fsync'ed and renamed
// into place, and stale -wal/-shm files of the replaced database are removed first so
// SQLite cannot replay them into the restored one. The collector must not be running.
func Restore(ctx context.Context, src, dbPath string, force bool) (BackupInfo, error) {
	info, err := Verify(ctx, src)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: refusing an unsound backup: %w", err)
	}
	if _, err := os.Stat(dbPath); err == nil && !force {
		return BackupInfo{}, fmt.Errorf("store: restore into %s: %w (use --force to replace it)", dbPath, ErrStoreExists)
	}
	dir := filepath.Dir(dbPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".restore-*.db")
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	in, err := os.Open(src)
	if err != nil {
		_ = tmp.Close()
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	_, err = io.Copy(tmp, in)
	_ = in.Close()
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: copy %s: %w", src, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Remove(dbPath + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return BackupInfo{}, fmt.Errorf("store: restore: remove stale %s%s: %w", dbPath, suffix, err)
		}
	}
	if err := os.Rename(tmp.Name(), dbPath); err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return BackupInfo{}, fmt.Errorf("store: restore: %w", err)
	}
	return info, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
