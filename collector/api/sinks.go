package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/store"
)

// SinksResponse is the answer to GET /v1/sinks.
type SinksResponse struct {
	Sinks []store.OutboxSummary `json:"sinks"`
}

func (s *Server) sinkStatus(w http.ResponseWriter, r *http.Request) {
	sums, err := s.store.OutboxSummaries(r.Context(), time.Now())
	if err != nil {
		s.log.Error("sink status", "err", err)
		writeError(w, http.StatusInternalServerError, "reading the sink queues failed")
		return
	}
	if sums == nil {
		sums = []store.OutboxSummary{}
	}
	writeJSON(w, http.StatusOK, SinksResponse{Sinks: sums})
}

// DeadLettersResponse is the answer to GET /v1/sinks/dead-letters: envelopes and refusal
// reasons, never event content. Next, when set, is the query for the next page.
type DeadLettersResponse struct {
	DeadLetters []store.DeadLetterView `json:"dead_letters"`
	Next        string                 `json:"next,omitempty"`
}

func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.DeadLetterFilter{Sink: q.Get("sink"), AfterSink: q.Get("after_sink"), Limit: 1000}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "after: want a rowid")
			return
		}
		f.AfterRowID = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want 1..%d", store.MaxLimit))
			return
		}
		f.Limit = n
	}
	dl, err := s.store.ListDeadLetterViews(r.Context(), f)
	if err != nil {
		s.log.Error("dead letters", "err", err)
		writeError(w, http.StatusInternalServerError, "listing dead letters failed")
		return
	}
	resp := DeadLettersResponse{DeadLetters: dl}
	if resp.DeadLetters == nil {
		resp.DeadLetters = []store.DeadLetterView{}
	}
	if len(dl) == f.Limit {
		last := dl[len(dl)-1]
		// Encoded, so a sink name with & or = in it still pages correctly.
		resp.Next = url.Values{"after_sink": {last.Sink}, "after": {strconv.FormatInt(last.RowID, 10)}}.Encode()
	}
	writeJSON(w, http.StatusOK, resp)
}

// ReplayRequest is the body of POST /v1/sinks/{name}/replay: IDs are event rowids, or All.
type ReplayRequest struct {
	IDs []int64 `json:"ids"`
	All bool    `json:"all"`
}

// ReplayResponse says how many dead letters went back into the queue.
type ReplayResponse struct {
	Requeued int64 `json:"requeued"`
}

// replay puts dead letters back into a sink's queue, typically after the destination was
// fixed (a DCR column added, a token renewed). Audited: replay re-sends regulated metadata.
func (s *Server) replay(w http.ResponseWriter, r *http.Request) {
	sink := r.PathValue("name")
	var req ReplayRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if req.All == (len(req.IDs) > 0) {
		writeError(w, http.StatusBadRequest, "name the dead letters to replay: ids, or all")
		return
	}
	var ids []int64
	if !req.All {
		ids = req.IDs
	}
	n, err := s.store.ReplayDeadLetters(r.Context(), sink, ids, time.Now())
	details := map[string]string{"requeued": strconv.FormatInt(n, 10)}
	if req.All {
		details["scope"] = "all"
	} else {
		parts := make([]string, 0, min(len(ids), 20))
		for _, id := range ids[:min(len(ids), 20)] {
			parts = append(parts, strconv.FormatInt(id, 10))
		}
		details["ids"] = strings.Join(parts, ",")
		if len(ids) > 20 {
			details["ids"] += fmt.Sprintf(",… (%d in all)", len(ids))
		}
	}
	s.recordAfter(r, audit.ActionSinkReplay, sink, err, details)
	switch {
	case errors.Is(err, store.ErrSinkNotConfigured):
		writeError(w, http.StatusNotFound, fmt.Sprintf("sink %q is not configured; replayed events would wait in a queue nothing drains", sink))
		return
	case err != nil:
		s.log.Error("replay dead letters", "sink", sink, "err", err)
		writeError(w, http.StatusInternalServerError, "replaying dead letters failed")
		return
	}
	s.log.Info("dead letters replayed", "sink", sink, "requeued", n)
	writeJSON(w, http.StatusOK, ReplayResponse{Requeued: n})
}
