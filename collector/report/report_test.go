package report_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledongthuc/pdf"

	"github.com/ward-dlp/ward/collector/report"
	"github.com/ward-dlp/ward/collector/report/reporttest"
	"github.com/ward-dlp/ward/collector/store"
)

func seeded(t *testing.T) (*store.Store, reporttest.Seeded) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := reporttest.Seed(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	return st, s
}

var key = []byte("facts-key-for-tests-0123456789ab")

func generate(t *testing.T, st *store.Store, kind report.Kind) *report.Bundle {
	t.Helper()
	b, err := report.Generate(context.Background(), report.Sources{Store: st, FactsKey: key, Version: "test"}, report.Request{
		Kind: kind, From: reporttest.Day, To: reporttest.Day.Add(24 * time.Hour), GeneratedBy: "console:auditor1",
		Now: reporttest.Day.Add(48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readCSV(t *testing.T, b *report.Bundle, name string) [][]string {
	t.Helper()
	f, ok := b.File(name)
	if !ok {
		t.Fatalf("bundle has no %s", name)
	}
	rows, err := csv.NewReader(bytes.NewReader(f.Data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func pdfText(t *testing.T, data []byte) string {
	t.Helper()
	r, err := pdf.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("pdf: %v", err)
	}
	var sb strings.Builder
	for i := 1; i <= r.NumPage(); i++ {
		s, err := r.Page(i).GetPlainText(nil)
		if err != nil {
			t.Fatal(err)
		}
		sb.WriteString(s)
	}
	return sb.String()
}

func TestShadowITReport(t *testing.T) {
	st, _ := seeded(t)
	if _, err := st.SetAppSanction(context.Background(), store.AppSanction{AppID: "dropbox", Status: "unsanctioned", ChangedAt: reporttest.Day, ChangedBy: "admin1"}, nil); err != nil {
		t.Fatal(err)
	}
	b := generate(t, st, report.ShadowIT)
	rows := readCSV(t, b, "shadow-it.csv")
	byApp := map[string][]string{}
	for _, r := range rows[1:] {
		byApp[r[0]] = r
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	db := byApp["dropbox"]
	if db == nil {
		t.Fatalf("no dropbox row in %v", rows)
	}
	want := map[string]string{"sanction_status": "unsanctioned", "users": "2", "devices": "2", "flows": "2",
		"bytes_up": "6291456", "category": "file_sharing", "new_in_period": "true"}
	for k, v := range want {
		if db[col[k]] != v {
			t.Errorf("dropbox %s = %q, want %q", k, db[col[k]], v)
		}
	}
	if byApp["zoom"][col["sanction_status"]] != "monitored" {
		t.Errorf("zoom without a decision: %q, want monitored", byApp["zoom"][col["sanction_status"]])
	}
	if byApp["pastebin"][col["blocked_flows"]] != "1" {
		t.Errorf("pastebin blocked flows %q", byApp["pastebin"][col["blocked_flows"]])
	}
	if b.Manifest.Rows != 4 {
		t.Errorf("manifest rows %d, want 4 apps", b.Manifest.Rows)
	}
	pdfFile, _ := b.File("shadow-it.pdf")
	text := pdfText(t, pdfFile.Data)
	for _, s := range []string{"Shadow-IT discovery report", "Dropbox", "unsanctioned", "ChatGPT"} {
		if !strings.Contains(text, s) {
			t.Errorf("PDF lacks %q", s)
		}
	}
}

func TestPart2Report(t *testing.T) {
	st, seededRows := seeded(t)
	b := generate(t, st, report.Part2)
	rows := readCSV(t, b, "part2-disclosures.csv")
	if len(rows) != 3 {
		t.Fatalf("want header and 2 Part 2 findings (PHI excluded), got %d rows: %v", len(rows), rows)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	first, second := rows[1], rows[2]
	if first[col["outcome"]] != "blocked" || second[col["outcome"]] != "consented" || second[col["consent_id"]] != "consent-17" {
		t.Errorf("outcomes: %v / %v", first, second)
	}
	if first[col["user"]] != "nurse1" || first[col["target"]] != "/home/nurse1/Dropbox/export.xml" || first[col["masked_samples"]] != reporttest.MaskedMRN {
		t.Errorf("first row %v", first)
	}
	for _, f := range b.Files {
		if bytes.Contains(f.Data, []byte(reporttest.RawMRN)) {
			t.Fatalf("%s contains the raw identifier", f.Name)
		}
	}
	pdfFile, _ := b.File("part2-disclosures.pdf")
	text := pdfText(t, pdfFile.Data)
	for _, s := range []string{"42 CFR Part 2 disclosure report", "consent-17", "part2-unsanctioned-destination"} {
		if !strings.Contains(text, s) {
			t.Errorf("PDF lacks %q", s)
		}
	}
	_ = seededRows
}

func TestBundleVerifyAndTamper(t *testing.T) {
	st, _ := seeded(t)
	b := generate(t, st, report.ShadowIT)
	var zbuf bytes.Buffer
	if err := b.WriteZip(&zbuf); err != nil {
		t.Fatal(err)
	}
	if _, err := report.ReadZip(zbuf.Bytes()); err != nil {
		t.Fatalf("read back: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "out")
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(dir); err == nil {
		t.Fatal("WriteDir overwrote an existing report")
	}
	m, err := report.VerifyDir(dir)
	if err != nil || len(m.Files) != 2 {
		t.Fatalf("verify: %v %+v", err, m)
	}
	sums, _ := os.ReadFile(filepath.Join(dir, report.SumsName))
	if !strings.Contains(string(sums), "  shadow-it.csv\n") || !strings.Contains(string(sums), "  manifest.json\n") {
		t.Fatalf("SHA256SUMS: %s", sums)
	}
	// One changed byte in the CSV is caught.
	p := filepath.Join(dir, "shadow-it.csv")
	data, _ := os.ReadFile(p)
	data[len(data)-2] ^= 1
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := report.VerifyDir(dir); err == nil || !strings.Contains(err.Error(), "shadow-it.csv") {
		t.Fatalf("tampered CSV not detected: %v", err)
	}
	// Regenerating gives the same bytes: the PDF embeds the generation time, not the clock.
	b2 := generate(t, st, report.ShadowIT)
	for i := range b.Files {
		if !bytes.Equal(b.Files[i].Data, b2.Files[i].Data) {
			t.Errorf("%s differs between two generations of the same report", b.Files[i].Name)
		}
	}
}

func TestRequestValidation(t *testing.T) {
	for _, r := range []report.Request{
		{Kind: "bogus", From: reporttest.Day, To: reporttest.Day.Add(time.Hour)},
		{Kind: report.Part2, From: reporttest.Day, To: reporttest.Day},
		{Kind: report.Part2, From: reporttest.Day, To: reporttest.Day.Add(400 * 24 * time.Hour)},
		{Kind: report.Part2},
	} {
		if r.Validate() == nil {
			t.Errorf("request %+v accepted", r)
		}
	}
}

func TestCSVFormulaInjection(t *testing.T) {
	ctx := context.Background()
	st, _ := seeded(t)
	_ = ctx
	d := &report.ShadowITData{Apps: []report.AppRow{{AppUsage: store.AppUsage{App: "x", AppName: "=HYPERLINK(\"http://evil\")"}}}}
	out, err := d.CSV()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "'=HYPERLINK") {
		t.Fatalf("formula not defused: %s", out)
	}
	_ = st
}
