// Command ward-agent is Ward's endpoint agent: it watches process, file and network activity
// with eBPF, classifies regulated data leaving the host and ships findings to the collector.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ward-dlp/ward/agent"
	"github.com/ward-dlp/ward/agent/config"
	"github.com/ward-dlp/ward/agent/identity"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

const usage = `ward-agent: Ward's endpoint DLP agent.

Usage:
  ward-agent run     [--config FILE] [--state-dir DIR] [--watch DIR[,DIR…]] [--log-level LEVEL]
                     [--policy-key KEY]…
  ward-agent enroll  --collector HOST:PORT (--token TOKEN | --token-file FILE | $WARD_ENROLL_TOKEN)
                     (--ca-file FILE | --ca-pin sha256:HEX) [--state-dir DIR] [--server-name NAME]
  ward-agent analyze --pcap FILE [-o text|json] [--sanctioned FILE] [--catalog FILE]
  ward-agent doctor  [--config FILE] [--state-dir DIR] [-o text|json] [--skip-probes]
  ward-agent version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "enroll":
		err = enrollCmd(os.Args[2:])
	case "analyze":
		err = analyzeCmd(os.Args[2:])
	case "doctor":
		os.Exit(doctorCmd(os.Args[2:], os.Stdout, os.Stderr))
	case "version", "--version", "-version":
		fmt.Println("ward-agent", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "ward-agent: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ward-agent:", err)
		os.Exit(1)
	}
}

func newLogger(level, format string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "YAML config file (default: built-in defaults)")
	stateDir := fs.String("state-dir", "", "state directory (identity, spool); overrides the config")
	watch := fs.String("watch", "", "comma-separated directories to watch, added to the config's")
	level := fs.String("log-level", "", "debug, info, warn or error; overrides the config")
	format := fs.String("log-format", "text", "text or json")
	debugAddr := fs.String("debug-addr", "", "serve Go profiling (pprof) on this loopback address, e.g. 127.0.0.1:6060")
	var policyKeys []string
	fs.Func("policy-key", "pin a policy verifier key (wardctl policy keygen prints it); repeatable, added to the config's", func(k string) error {
		policyKeys = append(policyKeys, k)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *debugAddr != "" {
		if err := serveDebug(*debugAddr); err != nil {
			return err
		}
	}
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			return err
		}
	}
	if *stateDir != "" {
		cfg.StateDir = *stateDir
	}
	for _, w := range strings.Split(*watch, ",") {
		if w = strings.TrimSpace(w); w != "" {
			cfg.Watch = append(cfg.Watch, w)
		}
	}
	if *level != "" {
		cfg.LogLevel = *level
	}
	cfg.Policy.Keys = append(cfg.Policy.Keys, policyKeys...)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log, err := newLogger(cfg.LogLevel, *format, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go notifySystemd(ctx, cfg, log)
	return agent.Run(ctx, agent.Options{Config: cfg, Version: version, Log: log})
}

// serveDebug exposes pprof for performance work. Loopback only: profiles show file paths.
func serveDebug(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--debug-addr must be a loopback address, got %s", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.Serve(l, mux) }()
	return nil
}

func enrollCmd(args []string) error {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	collector := fs.String("collector", "", "collector address HOST:PORT")
	token := fs.String("token", "", "single-use enrolment token")
	tokenFile := fs.String("token-file", "", "read the token from this file (for configuration management)")
	caFile := fs.String("ca-file", "", "PEM file with the collector CA")
	caPin := fs.String("ca-pin", "", "sha256:HEX pin of the collector CA public key")
	serverName := fs.String("server-name", "", "name to verify in the collector certificate (default: host of --collector)")
	stateDir := fs.String("state-dir", config.Default().StateDir, "state directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok := *token
	if tok == "" && *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("read token file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		tok = os.Getenv("WARD_ENROLL_TOKEN")
	}
	switch {
	case *collector == "":
		return errors.New("enroll: --collector is required")
	case tok == "":
		return errors.New("enroll: a token is required (--token, --token-file or WARD_ENROLL_TOKEN)")
	case *caFile == "" && *caPin == "":
		return errors.New("enroll: the collector must be authenticated: give --ca-file or --ca-pin")
	}
	log, err := newLogger("info", "text", os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	host, _ := os.Hostname()
	id, err := identity.Enroll(ctx, agent.IdentityDir(*stateDir), identity.EnrollConfig{
		Collector: *collector, Token: tok, CAFile: *caFile, CAPin: *caPin, ServerName: *serverName,
		Hostname: host, AgentVersion: version, Timeout: 30 * time.Second,
	}, identity.WithLogger(log))
	if err != nil {
		return err
	}
	fmt.Printf("enrolled: agent %s with collector %s (certificate valid until %s)\n",
		id.AgentID(), id.Collector(), id.Certificate().NotAfter.UTC().Format(time.RFC3339))
	return nil
}
