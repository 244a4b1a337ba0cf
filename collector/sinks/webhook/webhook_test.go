package webhook

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/collector/sinks/core"
	"github.com/ward-dlp/ward/collector/sinks/internal/sinktest"
	"github.com/ward-dlp/ward/collector/sinks/ocsf"
)

func TestSignedPost(t *testing.T) {
	secret := []byte("a-webhook-secret-of-32-bytes-len")
	var got struct {
		body  []byte
		sig   string
		batch string
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.body, _ = io.ReadAll(r.Body)
		got.sig = r.Header.Get("X-Ward-Signature")
		got.batch = r.Header.Get("X-Ward-Batch")
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	dir := t.TempDir()
	sf, ca := filepath.Join(dir, "secret"), filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(sf, append(secret, '\n'), 0o600)
	_ = os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	for _, format := range []string{ocsf.FormatOCSF, ocsf.FormatJSON} {
		s, err := New(Config{URL: srv.URL + "/ward", SecretFile: sf, Format: format, TLS: core.TLSConfig{CAFile: ca}}, ocsf.Options{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1767225600, 0)
		s.now = func() time.Time { return now }
		items := sinktest.Items(sinktest.Finding("a1", 1, wardv1.Severity_SEVERITY_HIGH), sinktest.File("a1", 2))
		if err := s.Deliver(context.Background(), items); err != nil {
			t.Fatal(err)
		}
		if got.sig != Sign(secret, got.body, now) || got.sig[:13] != "t=1767225600," {
			t.Errorf("signature %q does not verify", got.sig)
		}
		if Sign([]byte("another-secret-entirely-32-bytes"), got.body, now) == got.sig {
			t.Error("signature does not depend on the secret")
		}
		if len(got.batch) != 32 {
			t.Errorf("batch id %q", got.batch)
		}
		var body struct {
			Events []any `json:"events"`
		}
		if err := json.Unmarshal(got.body, &body); err != nil || len(body.Events) != 2 {
			t.Fatalf("body %s: %v", got.body, err)
		}
		allowed := sinktest.OCSFAllowed
		if format == ocsf.FormatJSON {
			allowed = sinktest.ViewAllowed
		}
		for _, e := range body.Events {
			raw, _ := json.Marshal(e)
			sinktest.CheckAllowed(t, "webhook "+format, raw, e, allowed)
		}
		_ = s.Close()
	}
}

func TestShortSecretRefused(t *testing.T) {
	sf := filepath.Join(t.TempDir(), "secret")
	_ = os.WriteFile(sf, []byte("short"), 0o600)
	if _, err := New(Config{URL: "https://siem.example/", SecretFile: sf}, ocsf.Options{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("short secret accepted")
	}
}
