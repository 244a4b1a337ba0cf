// Package report builds Ward's compliance reports for a period: the shadow-IT discovery
// report (which applications the workstations used, their risk and sanction status, who
// used them and how much went up) and the 42 CFR Part 2 disclosure report (every finding of
// Part 2 data, what policy did, and whether a patient consent covered it). Each report is a
// CSV and a PDF plus a manifest with the SHA-256 of every file, so an auditor can check that
// what they were handed is what Ward produced. The console and `wardctl report` share it.
//
// Reports hold what the store holds and nothing more: masked samples, never matched values.
package report

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/store"
)

// Kind names a report.
type Kind string

// Report kinds.
const (
	ShadowIT Kind = "shadow-it"
	Part2    Kind = "part2"
)

// ParseKind validates a report kind.
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case ShadowIT, Part2:
		return Kind(s), nil
	}
	return "", fmt.Errorf("report kind %q: want shadow-it or part2", s)
}

// MaxPeriod bounds one report, so a typo in a date cannot ask for a century of data.
const MaxPeriod = 366 * 24 * time.Hour

// Request is what to report on.
type Request struct {
	Kind Kind
	// From is inclusive, To exclusive.
	From, To time.Time
	// GeneratedBy names who asked (a console user, a unix uid), for the manifest.
	GeneratedBy string
	// Now is the generation time; zero means time.Now.
	Now time.Time
}

// Validate checks the period.
func (r Request) Validate() error {
	if _, err := ParseKind(string(r.Kind)); err != nil {
		return err
	}
	switch {
	case r.From.IsZero() || r.To.IsZero():
		return errors.New("report: from and to are required")
	case !r.To.After(r.From):
		return errors.New("report: to must be after from")
	case r.To.Sub(r.From) > MaxPeriod:
		return fmt.Errorf("report: period longer than %d days", int(MaxPeriod.Hours()/24))
	}
	return nil
}

// ParseTime reads a report bound: RFC 3339, a date (YYYY-MM-DD, midnight UTC), or a date
// and minute without a zone (YYYY-MM-DDTHH:MM, what an HTML datetime-local input sends),
// read as UTC. The console and the admin API read periods with it alike.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, time.DateOnly, "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 or YYYY-MM-DD", s)
}

// Sources are what reports are built from.
type Sources struct {
	Store *store.Store
	// Catalog names apps, their risk and BAA status; nil means the built-in catalog.
	Catalog *catalog.Catalog
	// FactsKey keys the user pseudonyms of the facts index (store.UserKey).
	FactsKey []byte
	// Version is the collector's version, for the manifest.
	Version string
}

// File is one file of a report.
type File struct {
	Name string
	Data []byte
}

// ManifestFile is one file's entry in the manifest.
type ManifestFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Bytes  int    `json:"bytes"`
}

// Manifest describes a report bundle.
type Manifest struct {
	Report      Kind           `json:"report"`
	From        time.Time      `json:"from"`
	To          time.Time      `json:"to"`
	GeneratedAt time.Time      `json:"generated_at"`
	GeneratedBy string         `json:"generated_by"`
	Collector   string         `json:"collector_version"`
	Catalog     string         `json:"catalog_version,omitempty"`
	Rows        int            `json:"rows"`
	Files       []ManifestFile `json:"files"`
}

// ManifestName and SumsName are the manifest files of every bundle. SHA256SUMS is in the
// format `sha256sum -c` reads.
const (
	ManifestName = "manifest.json"
	SumsName     = "SHA256SUMS"
)

// Bundle is a generated report: its files (CSV, PDF) and the manifest over them.
type Bundle struct {
	Manifest Manifest
	Files    []File
}

// Generate builds the report req asks for.
func Generate(ctx context.Context, src Sources, req Request) (*Bundle, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if req.Now.IsZero() {
		req.Now = time.Now()
	}
	req.From, req.To, req.Now = req.From.UTC(), req.To.UTC(), req.Now.UTC()
	if src.Catalog == nil {
		c, err := catalog.Builtin()
		if err != nil {
			return nil, err
		}
		src.Catalog = c
	}
	// The facts index may trail the newest events by a moment; bring it up to date so the
	// report covers everything stored so far.
	if _, err := src.Store.IndexFacts(ctx, src.FactsKey); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	m := Manifest{Report: req.Kind, From: req.From, To: req.To, GeneratedAt: req.Now, GeneratedBy: req.GeneratedBy,
		Collector: src.Version, Catalog: src.Catalog.Version}
	var files []File
	switch req.Kind {
	case ShadowIT:
		data, err := LoadShadowIT(ctx, src, req.From, req.To)
		if err != nil {
			return nil, err
		}
		m.Rows = len(data.Apps)
		csv, err := data.CSV()
		if err != nil {
			return nil, err
		}
		pdf, err := data.PDF(m)
		if err != nil {
			return nil, err
		}
		files = []File{{"shadow-it.csv", csv}, {"shadow-it.pdf", pdf}}
	case Part2:
		data, err := LoadPart2(ctx, src, req.From, req.To)
		if err != nil {
			return nil, err
		}
		m.Rows = len(data.Rows)
		csv, err := data.CSV()
		if err != nil {
			return nil, err
		}
		pdf, err := data.PDF(m)
		if err != nil {
			return nil, err
		}
		files = []File{{"part2-disclosures.csv", csv}, {"part2-disclosures.pdf", pdf}}
	}
	return seal(m, files)
}

// seal adds the manifest and SHA256SUMS over files.
func seal(m Manifest, files []File) (*Bundle, error) {
	var sums strings.Builder
	for _, f := range files {
		h := sha256.Sum256(f.Data)
		m.Files = append(m.Files, ManifestFile{Name: f.Name, SHA256: hex.EncodeToString(h[:]), Bytes: len(f.Data)})
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), f.Name)
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: manifest: %w", err)
	}
	mj = append(mj, '\n')
	h := sha256.Sum256(mj)
	fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), ManifestName)
	out := slices.Clone(files)
	out = append(out, File{ManifestName, mj}, File{SumsName, []byte(sums.String())})
	return &Bundle{Manifest: m, Files: out}, nil
}

// AuditDetails names an export in the audit log: which report, which period and how many
// rows, never the rows themselves. The console and the admin API record the same details.
func (b *Bundle) AuditDetails() map[string]string {
	return map[string]string{"report": string(b.Manifest.Report), "from": b.Manifest.From.Format(time.RFC3339),
		"to": b.Manifest.To.Format(time.RFC3339), "rows": strconv.Itoa(b.Manifest.Rows)}
}

// File returns the named file of the bundle.
func (b *Bundle) File(name string) (File, bool) {
	for _, f := range b.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// BaseName is the bundle's name: kind and period, e.g. shadow-it_2026-01-01_2026-02-01.
func (b *Bundle) BaseName() string {
	return fmt.Sprintf("%s_%s_%s", b.Manifest.Report, b.Manifest.From.Format("20060102T150405Z"), b.Manifest.To.Format("20060102T150405Z"))
}

// WriteZip writes every file into a zip archive under the bundle's base name.
func (b *Bundle) WriteZip(w io.Writer) error {
	zw := zip.NewWriter(w)
	for _, f := range b.Files {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: b.BaseName() + "/" + f.Name, Method: zip.Deflate, Modified: b.Manifest.GeneratedAt})
		if err != nil {
			return fmt.Errorf("report: zip: %w", err)
		}
		if _, err := fw.Write(f.Data); err != nil {
			return fmt.Errorf("report: zip: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("report: zip: %w", err)
	}
	return nil
}

// ReadZip reads a bundle WriteZip wrote and verifies it.
func ReadZip(data []byte) (*Bundle, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("report: read zip: %w", err)
	}
	b := &Bundle{}
	for _, zf := range zr.File {
		name := filepath.Base(zf.Name)
		if zf.FileInfo().IsDir() {
			continue
		}
		if zf.UncompressedSize64 > 512<<20 {
			return nil, fmt.Errorf("report: %s is too large", zf.Name)
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, fmt.Errorf("report: read %s: %w", zf.Name, err)
		}
		d, err := io.ReadAll(io.LimitReader(rc, 512<<20))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("report: read %s: %w", zf.Name, err)
		}
		b.Files = append(b.Files, File{Name: name, Data: d})
	}
	if err := b.Verify(); err != nil {
		return nil, err
	}
	return b, nil
}

// Verify checks every file against the manifest (and fills b.Manifest from it).
func (b *Bundle) Verify() error {
	mf, ok := b.File(ManifestName)
	if !ok {
		return errors.New("report: bundle has no manifest.json")
	}
	var m Manifest
	if err := json.Unmarshal(mf.Data, &m); err != nil {
		return fmt.Errorf("report: manifest: %w", err)
	}
	for _, e := range m.Files {
		f, ok := b.File(e.Name)
		if !ok {
			return fmt.Errorf("report: %s is listed in the manifest but missing", e.Name)
		}
		h := sha256.Sum256(f.Data)
		if hex.EncodeToString(h[:]) != e.SHA256 {
			return fmt.Errorf("report: %s does not match its SHA-256 in the manifest", e.Name)
		}
	}
	b.Manifest = m
	return nil
}

// WriteDir writes the files into dir (created 0700), each 0600, refusing to overwrite.
func (b *Bundle) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	for _, f := range b.Files {
		p := filepath.Join(dir, f.Name)
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		_, err = fh.Write(f.Data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("report: write %s: %w", p, err)
		}
	}
	return nil
}

// VerifyDir reads a report directory and checks it against its manifest.
func VerifyDir(dir string) (Manifest, error) {
	b := &Bundle{}
	mf, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return Manifest{}, fmt.Errorf("report: %w", err)
	}
	b.Files = append(b.Files, File{ManifestName, mf})
	var m Manifest
	if err := json.Unmarshal(mf, &m); err != nil {
		return Manifest{}, fmt.Errorf("report: manifest: %w", err)
	}
	for _, e := range m.Files {
		if strings.ContainsAny(e.Name, `/\`) || e.Name == ".." {
			return Manifest{}, fmt.Errorf("report: manifest names %q", e.Name)
		}
		d, err := os.ReadFile(filepath.Join(dir, e.Name))
		if err != nil {
			return Manifest{}, fmt.Errorf("report: %w", err)
		}
		b.Files = append(b.Files, File{e.Name, d})
	}
	if err := b.Verify(); err != nil {
		return Manifest{}, err
	}
	return b.Manifest, nil
}
