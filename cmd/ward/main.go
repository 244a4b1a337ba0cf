// Command ward is Ward's local tool for compliance staff. `ward scan PATH...` discovers
// Part 2 and PHI data at rest: it classifies every file (and the documents inside archives
// and Office files) with the agent's engine and prints what it found as a table or JSON
// lines. It never prints a matched value: only masked samples (***-**-6789) and keyed
// fingerprints. Exit status: 0 nothing found, 1 findings, 2 error.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/ward-dlp/ward/classifiers"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/extract"
)

const usage = `usage: ward scan [-o table|json] [--min-confidence N] [--edm FILE --edm-key KEYFILE]
                 [--key-file FILE] [--max-file-bytes N] PATH...

Scans files and directories (and the documents inside zip, gzip, DOCX, XLSX, PPTX, ODT,
UTF-16 and MIME files) for 42 CFR Part 2 and HIPAA PHI data. Prints masked samples only.
Exit status: 0 nothing found, 1 findings, 2 error (including any file that could not be
read or fully extracted, such as a zip bomb).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes of ward scan.
const (
	exitClean    = 0
	exitFindings = 1
	exitError    = 2
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "scan" {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	code, err := scan(ctx, args[1:], stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ward scan: %v\n", err)
		return exitError
	}
	return code
}

// fileResult is one scanned file's findings as printed.
type fileResult struct {
	Path     string         `json:"path"`
	Findings []engine.Match `json:"findings,omitempty"`
	Error    string         `json:"error,omitempty"`
}

func scan(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fl := flag.NewFlagSet("ward scan", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("o", "table", "output: table or json (one object per file with findings)")
	minConf := fl.Int("min-confidence", 60, "report matches at or above this confidence (0-100)")
	keyFile := fl.String("key-file", "", "fingerprint HMAC key (hex); default a random key per run")
	edmFile := fl.String("edm", "", "EDM index of known Part 2 patients (wardctl edm build)")
	edmKey := fl.String("edm-key", "", "key the EDM index was built with")
	maxFile := fl.Int64("max-file-bytes", 256<<20, "skip files larger than this")
	if err := fl.Parse(args); err != nil {
		return exitError, err
	}
	if *out != "table" && *out != "json" {
		return exitError, fmt.Errorf("-o %q: want table or json", *out)
	}
	if fl.NArg() == 0 {
		return exitError, errors.New("no PATH given")
	}
	key, err := fingerprintKey(*keyFile)
	if err != nil {
		return exitError, err
	}
	var opts classifiers.Options
	if *edmFile != "" {
		k, err := readHexKey(*edmKey)
		if err != nil {
			return exitError, fmt.Errorf("--edm-key: %w", err)
		}
		if opts.EDMIndex, err = classifiers.LoadEDM(*edmFile, k); err != nil {
			return exitError, err
		}
	}
	eng, err := classifiers.New(engine.Config{FingerprintKey: key}, opts)
	if err != nil {
		return exitError, err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := newProgress(stderr)
	var tw *tabwriter.Writer
	enc := json.NewEncoder(stdout)
	if *out == "table" {
		tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PATH\tCLASS\tDETECTOR\tCONF\tCOUNT\tSAMPLES\tEVIDENCE")
	}
	found, failed := 0, 0
	for _, root := range fl.Args() {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				failed++
				log.Warn("cannot read", "path", path, "err", err)
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			res := scanFile(eng, path, *maxFile, *minConf)
			p.file(res)
			if res.Error != "" {
				failed++
				log.Warn("file not fully scanned", "path", path, "err", res.Error)
			}
			if len(res.Findings) == 0 {
				return nil
			}
			found++
			if tw != nil {
				for _, m := range res.Findings {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", path, m.Class, m.Detector, m.Confidence, m.Count,
						strings.Join(m.Masked, ","), m.Evidence)
				}
				return nil
			}
			return enc.Encode(res)
		})
		if err != nil {
			p.done()
			return exitError, fmt.Errorf("walking %s: %w", root, err)
		}
	}
	p.done()
	if tw != nil {
		if err := tw.Flush(); err != nil {
			return exitError, fmt.Errorf("writing output: %w", err)
		}
	}
	switch {
	case failed > 0:
		fmt.Fprintf(stderr, "ward scan: %d files with findings, %d could not be fully scanned\n", found, failed)
		return exitError, nil
	case found > 0:
		return exitFindings, nil
	}
	return exitClean, nil
}

// scanFile reads, extracts and classifies one file, merging the matches of its parts.
func scanFile(eng *engine.Engine, path string, maxBytes int64, minConf int) fileResult {
	res := fileResult{Path: path}
	st, err := os.Stat(path)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if st.Size() > maxBytes {
		res.Error = fmt.Sprintf("larger than --max-file-bytes (%d)", maxBytes)
		return res
	}
	data, err := os.ReadFile(path)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	parts, err := extract.File(filepath.Base(path), data, extract.Limits{})
	if err != nil {
		res.Error = err.Error()
	}
	for _, part := range parts {
		for _, m := range eng.Classify(part.Text) {
			if m.Confidence >= minConf {
				res.Findings = append(res.Findings, m)
			}
		}
	}
	return res
}

func fingerprintKey(path string) ([]byte, error) {
	if path == "" {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("fingerprint key: %w", err)
		}
		return k, nil
	}
	return readHexKey(path)
}

func readHexKey(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("key file required")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	if k, err := hex.DecodeString(strings.TrimSpace(string(raw))); err == nil {
		return k, nil
	}
	return raw, nil
}

// progress prints a one-line counter on a terminal and nothing otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	files int
	bytes int64
	last  time.Time
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && isatty.IsTerminal(f.Fd())}
}

func (p *progress) file(r fileResult) {
	p.files++
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\rscanned %d files", p.files)
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprintf(p.w, "\rscanned %d files\n", p.files)
	}
}
