package collector

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ward-dlp/ward/collector/store"
)

// StoreConfig chooses the database. The default is SQLite in the state directory (one
// collector); PostgreSQL lets several collector replicas share one database
// (docs/operations.md, "Scale-out").
type StoreConfig struct {
	// Driver is sqlite (default) or postgres.
	Driver string `yaml:"driver"`
	// DSN is the PostgreSQL connection string (libpq URL or key=value), e.g.
	// "postgres://ward@db.internal/ward?sslmode=verify-full". DSNFile reads it from a file
	// instead (mode 0600), so the password stays out of the configuration.
	DSN     string `yaml:"dsn"`
	DSNFile string `yaml:"dsn_file"`
	// Replica names this collector among those sharing a PostgreSQL database; it must be
	// unique and stable across restarts (default: the host name).
	Replica string `yaml:"replica"`
}

func (c StoreConfig) validate() error {
	switch c.Driver {
	case "", store.DriverSQLite:
		if c.DSN != "" || c.DSNFile != "" || c.Replica != "" {
			return errors.New("store: dsn, dsn_file and replica apply to driver postgres only")
		}
	case store.DriverPostgres:
		if (c.DSN == "") == (c.DSNFile == "") {
			return errors.New("store: driver postgres needs exactly one of dsn and dsn_file")
		}
	default:
		return fmt.Errorf("store: driver %q: want sqlite or postgres", c.Driver)
	}
	return nil
}

// open opens the configured store; state is the collector's state directory (SQLite).
func (c StoreConfig) open(ctx context.Context, state string) (*store.Store, error) {
	if c.Driver != store.DriverPostgres {
		return store.Open(ctx, filepath.Join(state, "ward.db"))
	}
	dsn := c.DSN
	if c.DSNFile != "" {
		b, err := os.ReadFile(c.DSNFile)
		if err != nil {
			return nil, fmt.Errorf("store: dsn_file: %w", err)
		}
		dsn = strings.TrimSpace(string(b))
	}
	replica := c.Replica
	if replica == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("store: replica name: %w", err)
		}
		replica = h
	}
	return store.OpenPostgres(ctx, dsn, replica)
}
