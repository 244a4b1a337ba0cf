package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Collector is a ward-collector process started for a run.
type Collector struct {
	Home       string
	Listen     string
	MetricsURL string
	Admin      *Admin
	cmd        *exec.Cmd
	exited     chan struct{}
	waitErr    error
}

// CollectorConfig says how to start one.
type CollectorConfig struct {
	// Binary is the ward-collector executable.
	Binary string
	// Home is its state root (created).
	Home string
	// ExtraYAML is appended to the generated configuration (store, sinks, limits).
	ExtraYAML string
	// LogPath receives its stderr; default Home/collector.log.
	LogPath string
}

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartCollector starts ward-collector with a configuration listening on loopback ports and
// waits until its admin API answers.
func StartCollector(ctx context.Context, cfg CollectorConfig) (*Collector, error) {
	listen, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	metrics, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Home, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(cfg.Home, "collector.yaml")
	y := fmt.Sprintf("home: %s\nlisten: %s\nmetrics_listen: %s\n", cfg.Home, listen, metrics) + cfg.ExtraYAML
	if err := os.WriteFile(conf, []byte(y), 0o600); err != nil {
		return nil, err
	}
	logPath := cfg.LogPath
	if logPath == "" {
		logPath = filepath.Join(cfg.Home, "collector.log")
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(cfg.Binary, "--config", conf, "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("loadtest: start collector: %w", err)
	}
	c := &Collector{Home: cfg.Home, Listen: listen, MetricsURL: "http://" + metrics + "/metrics",
		Admin: NewAdmin(filepath.Join(cfg.Home, "collector", "admin.sock")), cmd: cmd, exited: make(chan struct{})}
	go func() { c.waitErr = cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Admin.Healthy(hctx)
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case <-c.exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("loadtest: collector exited during start (%v):\n%s", c.waitErr, log)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Kill()
			return nil, fmt.Errorf("loadtest: collector not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID is the collector's process id.
func (c *Collector) PID() int { return c.cmd.Process.Pid }

// CAFile is the collector CA certificate agents verify it against.
func (c *Collector) CAFile() string { return filepath.Join(c.Home, "collector", "pki", "ca.crt") }

// Stop asks the collector to shut down (SIGTERM) and waits up to timeout before killing it.
func (c *Collector) Stop(timeout time.Duration) error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		var ee *exec.ExitError
		if errors.As(c.waitErr, &ee) {
			return fmt.Errorf("loadtest: collector exited with %v", c.waitErr)
		}
		return nil
	case <-time.After(timeout):
		c.Kill()
		return fmt.Errorf("loadtest: collector did not stop within %s of SIGTERM", timeout)
	}
}

// Kill ends the collector at once, as a crash would.
func (c *Collector) Kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}
