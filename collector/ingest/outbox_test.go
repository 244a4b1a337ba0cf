package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/ward-dlp/ward/collector/store"
)

// TestExportEnqueuesForSinks: events accepted through Export are queued for the configured
// sinks by the same transaction that stores them; resent events are not queued twice.
func TestExportEnqueuesForSinks(t *testing.T) {
	h := startServer(t, Limits{})
	ctx := context.Background()
	if err := h.store.SetOutboxRoutes(ctx, []store.OutboxRoute{
		{Sink: "files", Kinds: []string{store.KindFile}},
		{Sink: "findings", Kinds: []string{store.KindFinding}},
	}); err != nil {
		t.Fatal(err)
	}
	id, cert := h.enrolAgent(t)
	client, _ := h.dial(t, cert)
	if _, err := client.Export(ctx, batch(id, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Export(ctx, batch(id, 3, 4)); err != nil {
		t.Fatal(err)
	}
	for sink, want := range map[string]int64{"files": 4, "findings": 0} {
		st, err := h.store.OutboxStats(ctx, sink, time.Now())
		if err != nil || st.Depth != want {
			t.Errorf("%s: depth %d, want %d (%v)", sink, st.Depth, want, err)
		}
	}
}
