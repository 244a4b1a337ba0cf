// Command ward-collector receives events from Ward agents over mTLS gRPC, stores them, and
// serves the local admin API that wardctl uses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ward-dlp/ward/collector"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "ward-collector: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "backup":
			return backupCmd(args[1:], stdout, stderr)
		case "restore":
			return restoreCmd(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("ward-collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	home := fs.String("home", defaultHome(), "Ward state root (default $WARD_HOME, else ./.ward)")
	listen := fs.String("listen", "", "agent listener address (default 127.0.0.1:7443)")
	configPath := fs.String("config", "", "optional YAML configuration file")
	var extraSANs stringList
	fs.Var(&extraSANs, "extra-san", "extra DNS name or IP for the server certificate (repeatable)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ward-collector [flags]\n       ward-collector backup [--home DIR] FILE\n       ward-collector restore [--home DIR] [--force] FILE\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *showVersion {
		fmt.Fprintf(stdout, "ward-collector %s\n", version)
		return nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	// Precedence: flags given on the command line, then the file, then environment/defaults.
	cfg := collector.Defaults(*home)
	if *configPath != "" {
		var err error
		if cfg, err = collector.LoadFile(*configPath, cfg); err != nil {
			return err
		}
	}
	if set["home"] {
		cfg.Home = *home
	}
	if set["listen"] {
		cfg.Listen = *listen
	}
	if set["extra-san"] {
		cfg.ExtraSANs = append(cfg.ExtraSANs, extraSANs...)
	}
	abs, err := filepath.Abs(cfg.Home)
	if err != nil {
		return fmt.Errorf("home %s: %w", cfg.Home, err)
	}
	cfg.Home = abs
	cfg.Version = version

	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go notifySystemd(ctx, cfg.AdminSocketPath(), log)
	return collector.Run(ctx, cfg, log)
}

func defaultHome() string {
	if h := os.Getenv("WARD_HOME"); h != "" {
		return h
	}
	return ".ward"
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
	}
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
