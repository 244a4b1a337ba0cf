// Command ward is Ward's local tool for compliance staff. `ward scan PATH...` discovers
// Part 2 and PHI data at rest: it classifies every file (and the documents inside archives,
// Office files and PDFs) with the agent's engine and prints what it found as a table or
// JSON lines. It never prints a matched value: only masked samples (***-**-6789) and keyed
// fingerprints. Exit status: 0 nothing found, 1 findings, 2 error.
//
// `ward fingerprint add INDEX FILE...` fingerprints files found labelled Part 2 into a
// document index, so that later partial, unlabelled copies are recognised
// (detector fingerprint.part2-document; `ward scan --fingerprints INDEX`).
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
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/ward-dlp/ward/classifiers"
	"github.com/ward-dlp/ward/classifiers/engine"
	"github.com/ward-dlp/ward/classifiers/extract"
	"github.com/ward-dlp/ward/classifiers/fingerprint"
)

const usage = `usage: ward scan [-o table|json] [--min-confidence N] [--edm FILE --edm-key KEYFILE]
                 [--key-file FILE] [--max-file-bytes N] [--definitions FILE]
                 [--enable ID,...] [--disable ID,...] [--fingerprints INDEX]
                 [--fingerprint-into INDEX] PATH...
       ward fingerprint add --key-file FILE [--all] INDEX PATH...

scan: scans files and directories (and the documents inside zip, gzip, DOCX, XLSX, PPTX,
ODT, PDF, UTF-16 and MIME files) for 42 CFR Part 2 and HIPAA PHI data. Prints masked
samples only. Exit status: 0 nothing found, 1 findings, 2 error (including any file that
could not be read or fully extracted, such as a zip bomb).

fingerprint add: adds the files found labelled Part 2 (FHIR/CDA/HL7 labels or the §2.32
notice; every file with --all) to the document fingerprint index INDEX (created if
missing). The index holds keyed hashes only. Exit status 0, or 2 on error.
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
	switch {
	case len(args) > 0 && args[0] == "scan":
		code, err := scan(ctx, args[1:], stdout, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "ward scan: %v\n", err)
			return exitError
		}
		return code
	case len(args) > 1 && args[0] == "fingerprint" && args[1] == "add":
		if err := fingerprintAdd(ctx, args[2:], stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "ward fingerprint add: %v\n", err)
			return exitError
		}
		return exitClean
	}
	fmt.Fprint(stderr, usage)
	return exitError
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
	defsFile := fl.String("definitions", "", "organisation detector definitions (YAML) applied over the built-in ones")
	enable := fl.String("enable", "", "comma-separated detector ids to enable")
	disable := fl.String("disable", "", "comma-separated detector ids to disable")
	fpIndex := fl.String("fingerprints", "", "document fingerprint index to match partial copies against (needs --key-file)")
	fpInto := fl.String("fingerprint-into", "", "add files found labelled Part 2 to this fingerprint index (needs --key-file)")
	if err := fl.Parse(args); err != nil {
		return exitError, err
	}
	if *out != "table" && *out != "json" {
		return exitError, fmt.Errorf("-o %q: want table or json", *out)
	}
	if fl.NArg() == 0 {
		return exitError, errors.New("no PATH given")
	}
	if (*fpIndex != "" || *fpInto != "") && *keyFile == "" {
		return exitError, errors.New("--fingerprints and --fingerprint-into need --key-file (an index is only usable with the key it was built with)")
	}
	key, err := fingerprintKey(*keyFile)
	if err != nil {
		return exitError, err
	}
	opts := classifiers.Options{Enable: splitIDs(*enable), Disable: splitIDs(*disable)}
	if *defsFile != "" {
		if opts.Definitions, err = classifiers.LoadDefinitions(*defsFile); err != nil {
			return exitError, err
		}
	}
	if *fpIndex != "" {
		if opts.FingerprintIndex, err = classifiers.LoadFingerprints(*fpIndex, key); err != nil {
			return exitError, err
		}
	}
	var into *fingerprint.Index
	if *fpInto != "" {
		if into, err = openIndex(*fpInto, key); err != nil {
			return exitError, err
		}
	}
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
			res, text := scanFile(eng, path, *maxFile, *minConf)
			p.file(res)
			if into != nil && labelled(res.Findings) {
				addToIndex(into, path, text, stderr, log)
			}
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
	if into != nil {
		if err := saveIndex(*fpInto, into); err != nil {
			return exitError, err
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

// scanFile reads, extracts and classifies one file, merging the matches of its parts. It
// also returns the extracted text (parts joined), for fingerprinting.
func scanFile(eng *engine.Engine, path string, maxBytes int64, minConf int) (fileResult, []byte) {
	res := fileResult{Path: path}
	parts, err := readParts(path, maxBytes)
	if err != nil {
		res.Error = err.Error()
	}
	var text []byte
	for _, part := range parts {
		for _, m := range eng.Classify(part.Text) {
			if m.Confidence >= minConf {
				res.Findings = append(res.Findings, m)
			}
		}
		text = append(append(text, part.Text...), '\n')
	}
	return res, text
}

// readParts reads one file and extracts its text parts (partial parts with an error when
// extraction stopped early).
func readParts(path string, maxBytes int64) ([]extract.Part, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxBytes {
		return nil, fmt.Errorf("larger than --max-file-bytes (%d)", maxBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return extract.File(filepath.Base(path), data, extract.Limits{})
}

// labelDetectors are the detectors whose findings mean a file is labelled Part 2 (as
// opposed to inferred: probable records and fingerprint matches are not labels).
var labelDetectors = []string{"part2.fhir-label", "part2.cda", "part2.notice", "part2.hl7v2"}

func labelled(ms []engine.Match) bool {
	for _, m := range ms {
		if m.Class == engine.Part2 && slices.Contains(labelDetectors, m.Detector) {
			return true
		}
	}
	return false
}

// fingerprintAdd implements `ward fingerprint add`.
func fingerprintAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ward fingerprint add", flag.ContinueOnError)
	fl.SetOutput(stderr)
	keyFile := fl.String("key-file", "", "fingerprint key (hex) the index is built and later matched with (required)")
	all := fl.Bool("all", false, "add every file, not only those found labelled Part 2")
	minConf := fl.Int("min-confidence", 60, "a Part 2 label counts at or above this confidence")
	maxFile := fl.Int64("max-file-bytes", 256<<20, "skip files larger than this")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() < 2 {
		return errors.New("want INDEX and at least one PATH")
	}
	if *keyFile == "" {
		return errors.New("--key-file is required: an index is only usable with the key it was built with")
	}
	key, err := readHexKey(*keyFile)
	if err != nil {
		return err
	}
	eng, err := classifiers.New(engine.Config{FingerprintKey: key}, classifiers.Options{})
	if err != nil {
		return err
	}
	indexPath := fl.Arg(0)
	x, err := openIndex(indexPath, key)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	failed := 0
	for _, root := range fl.Args()[1:] {
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
			res, text := scanFile(eng, path, *maxFile, *minConf)
			if res.Error != "" {
				failed++
				log.Warn("file not fully read; not fingerprinted", "path", path, "err", res.Error)
				return nil
			}
			if !*all && !labelled(res.Findings) {
				fmt.Fprintf(stdout, "skipped\t%s\tnot labelled Part 2\n", path)
				return nil
			}
			addToIndex(x, path, text, stdout, log)
			return nil
		})
		if err != nil {
			return fmt.Errorf("walking %s: %w", root, err)
		}
	}
	if err := saveIndex(indexPath, x); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d files could not be read", failed)
	}
	return nil
}

func addToIndex(x *fingerprint.Index, path string, text []byte, out io.Writer, log *slog.Logger) {
	id, n, added, err := x.Add(text)
	switch {
	case errors.Is(err, fingerprint.ErrTooShort):
		fmt.Fprintf(out, "skipped\t%s\ttoo short to fingerprint (%d fingerprints)\n", path, n)
	case err != nil:
		log.Warn("not fingerprinted", "path", path, "err", err)
	case !added:
		fmt.Fprintf(out, "present\t%s\tdocument %s already indexed\n", path, hex.EncodeToString(id[:8]))
	default:
		fmt.Fprintf(out, "added\t%s\tdocument %s, %d fingerprints\n", path, hex.EncodeToString(id[:8]), n)
	}
}

// openIndex loads an index, or starts one with the default parameters when the file does
// not exist.
func openIndex(path string, key []byte) (*fingerprint.Index, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fingerprint.NewIndex(key, fingerprint.Params{K: fingerprint.DefaultK, W: fingerprint.DefaultW})
	}
	return classifiers.LoadFingerprints(path, key)
}

// saveIndex writes the index next to path and renames it into place, so a crash never
// leaves a half-written index.
func saveIndex(path string, x *fingerprint.Index) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ward-fpindex-*")
	if err != nil {
		return fmt.Errorf("writing index: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := x.WriteTo(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing index: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing index: %w", err)
	}
	return nil
}

func splitIDs(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
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

func readHexKey(path string) ([]byte, error) { return classifiers.ReadKeyFile(path) }

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
