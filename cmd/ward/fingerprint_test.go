package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFingerprintAddAndScan(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.hex")
	os.WriteFile(keyFile, []byte("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"), 0o600)
	doc, err := os.ReadFile("../../classifiers/fingerprint/testdata/discharge-summary-part2.txt")
	if err != nil {
		t.Fatal(err)
	}
	atRest := filepath.Join(dir, "at-rest")
	os.MkdirAll(atRest, 0o755)
	os.WriteFile(filepath.Join(atRest, "summary.txt"), doc, 0o644)
	os.WriteFile(filepath.Join(atRest, "menu.txt"), []byte(strings.Repeat("Lunch today is lentil soup with rye bread and a green salad. ", 20)), 0o644)
	index := filepath.Join(dir, "part2.fpx")

	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"fingerprint", "add", index, atRest}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "key-file") {
		t.Fatalf("without a key: exit %d %s", code, errb.String())
	}
	if code := run(context.Background(), []string{"fingerprint", "add", "--key-file", keyFile, index, atRest}, &out, &errb); code != 0 {
		t.Fatalf("add: exit %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "added\t"+filepath.Join(atRest, "summary.txt")) || !strings.Contains(out.String(), "skipped\t"+filepath.Join(atRest, "menu.txt")) {
		t.Fatalf("add output:\n%s", out.String())
	}
	raw, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Testpatient", "fentanyl", "buprenorphine", "summary.txt"} {
		if bytes.Contains(bytes.ToLower(raw), bytes.ToLower([]byte(w))) {
			t.Fatalf("index file holds %q", w)
		}
	}

	// An unlabelled excerpt (no notice), re-wrapped, in a file written elsewhere.
	text := string(doc)
	body := text[strings.Index(text, "Hospital course"):strings.Index(text, "Discharge plan")]
	words := strings.Fields(body)
	var wrapped strings.Builder
	for i, w := range words {
		wrapped.WriteString(w)
		if i%9 == 8 {
			wrapped.WriteString("\n")
		} else {
			wrapped.WriteString(" ")
		}
	}
	outbox := filepath.Join(dir, "outbox")
	os.MkdirAll(outbox, 0o755)
	os.WriteFile(filepath.Join(outbox, "email.txt"), []byte("FYI from the chart:\n\n"+wrapped.String()), 0o644)

	out.Reset()
	if code := run(context.Background(), []string{"scan", "-o", "json", outbox}, &out, &errb); code != 0 {
		t.Fatalf("without the index the excerpt is clean text: exit %d %s", code, out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"scan", "--key-file", keyFile, "--fingerprints", index, "-o", "json", outbox}, &out, &errb); code != 1 {
		t.Fatalf("with the index: exit %d %s %s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), `"Detector":"fingerprint.part2-document"`) || strings.Contains(out.String(), "fentanyl") {
		t.Fatalf("scan output:\n%s", out.String())
	}

	// scan --fingerprint-into indexes what it finds labelled.
	index2 := filepath.Join(dir, "second.fpx")
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"scan", "--key-file", keyFile, "--fingerprint-into", index2, atRest}, &out, &errb); code != 1 {
		t.Fatalf("scan --fingerprint-into: exit %d %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "added\t"+filepath.Join(atRest, "summary.txt")) || strings.Contains(errb.String(), "menu.txt") {
		t.Fatalf("scan --fingerprint-into progress (stderr):\n%s", errb.String())
	}
	if _, err := os.Stat(index2); err != nil {
		t.Fatal(err)
	}
}

func TestScanDefinitionsFlags(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "form.txt"), []byte("Client: CLT-482913\nPhone: (503) 555-2142\n"), 0o644)
	defsFile := filepath.Join(dir, "org.yaml")
	os.WriteFile(defsFile, []byte(`version: 1
detectors:
  - {id: org.client-id, version: 1, kind: pattern, class: PHI, anchors: ["CLT-"], pattern: "CLT-######", keywords: [client], keyword_before: 40, confidence: 85}
`), 0o644)
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"scan", "--definitions", defsFile, "--disable", "phi.phone", dir}, &out, &errb); code != 1 {
		t.Fatalf("exit %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "org.client-id") || strings.Contains(out.String(), "phi.phone") || strings.Contains(out.String(), "482913") {
		t.Fatalf("output:\n%s", out.String())
	}
	os.WriteFile(defsFile, []byte("version: 1\ndetectors:\n  - {id: org.client-id, colour: red}\n"), 0o644)
	errb.Reset()
	if code := run(context.Background(), []string{"scan", "--definitions", defsFile, dir}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "org.yaml") || !strings.Contains(errb.String(), "colour") {
		t.Fatalf("bad definitions: exit %d %s", code, errb.String())
	}
}
