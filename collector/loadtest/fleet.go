package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/ward-dlp/ward/agent/identity"
)

// Admin talks to a collector's local admin API over its unix socket, as wardctl does.
type Admin struct {
	hc *http.Client
}

// NewAdmin returns a client for the admin socket at path.
func NewAdmin(path string) *Admin {
	return &Admin{hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Healthy reports whether the collector answers its health check.
func (a *Admin) Healthy(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ward/v1/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("healthz: %s: %s", resp.Status, b)
	}
	return nil
}

// Token creates a single-use enrolment token.
func (a *Admin) Token(ctx context.Context, ttl time.Duration) (string, error) {
	body, _ := json.Marshal(map[string]string{"ttl": ttl.String()})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://ward/v1/enrollment-tokens", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("loadtest: create token: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("loadtest: create token: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("loadtest: create token: %s: %s", resp.Status, b)
	}
	var tr struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &tr); err != nil || tr.Token == "" {
		return "", fmt.Errorf("loadtest: create token: bad answer %q: %v", b, err)
	}
	return tr.Token, nil
}

// EnrollConfig says where a fleet enrols.
type EnrollConfig struct {
	// Collector is the agent-facing address enrolment goes to.
	Collector string
	// CAFile is the collector CA, as an agent installation ships it.
	CAFile string
	// Admin creates the enrolment tokens.
	Admin *Admin
	// StateDir receives one identity directory per agent.
	StateDir string
	// Agents is the fleet size.
	Agents int
	// Parallel bounds concurrent enrolments (default 16).
	Parallel int
}

// EnrollFleet enrols cfg.Agents agents through the real path: a token from the admin API,
// a fresh P-256 key and CSR per agent, the Enroll RPC over TLS with the collector
// authenticated by its CA, and the issued certificate stored as the agent stores it.
func EnrollFleet(ctx context.Context, cfg EnrollConfig) ([]*identity.Identity, error) {
	if cfg.Agents <= 0 {
		return nil, errors.New("loadtest: enrol: need at least one agent")
	}
	par := cfg.Parallel
	if par <= 0 {
		par = 16
	}
	ids := make([]*identity.Identity, cfg.Agents)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan int)
	quiet := slog.New(slog.DiscardHandler)
	for range par {
		wg.Go(func() {
			for i := range work {
				tok, err := cfg.Admin.Token(ctx, time.Hour)
				if err == nil {
					ids[i], err = identity.Enroll(ctx, filepath.Join(cfg.StateDir, fmt.Sprintf("agent-%04d", i)), identity.EnrollConfig{
						Collector: cfg.Collector, Token: tok, CAFile: cfg.CAFile,
						Hostname: fmt.Sprintf("ws-%04d.clinic.example", i), MachineID: fmt.Sprintf("%032x", i),
						AgentVersion: "loadtest",
					}, identity.WithLogger(quiet))
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("agent %d: %w", i, err))
					mu.Unlock()
				}
			}
		})
	}
	for i := range cfg.Agents {
		select {
		case work <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("loadtest: enrol fleet: %d failures, first: %w", len(errs), errs[0])
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ids, nil
}
