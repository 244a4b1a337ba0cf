package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/store"
)

// RewrapRequest is the body of POST /v1/evidence/rewrap.
type RewrapRequest struct {
	// Batch is the rows per transaction (default 500).
	Batch int `json:"batch"`
}

// RewrapResponse reports a finished rewrap.
type RewrapResponse struct {
	Rewrapped  int            `json:"rewrapped"`
	ByOldKey   map[string]int `json:"by_old_key"` // "" = rows that were stored in clear
	Remaining  int            `json:"remaining"`
	CurrentKey string         `json:"current_key"`
	// RetiredKeys no row uses any more: they can leave the key ring file.
	RetiredKeys []string `json:"retired_keys"`
}

// rewrapEvidence re-encrypts every event row stored in clear or under an older evidence key
// with the current key (store.Rewrap), then retires keys no row uses. Audited: it touches
// every stored record of regulated data. It runs in the request; an interrupted run is
// resumed by calling again.
func (s *Server) rewrapEvidence(w http.ResponseWriter, r *http.Request) {
	var req RewrapRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if req.Batch < 0 || req.Batch > 100000 {
		writeError(w, http.StatusBadRequest, "batch must be between 1 and 100000 rows")
		return
	}
	res, err := s.store.Rewrap(r.Context(), req.Batch, func(p store.RewrapProgress) {
		s.log.Info("evidence rewrap progress", "done", p.Done, "remaining", p.Remaining)
	})
	details := map[string]string{"rewrapped": strconv.Itoa(res.Done), "remaining": strconv.Itoa(res.Remaining),
		"current_key": res.CurrentKey, "retired_keys": strings.Join(res.RetiredKeys, ",")}
	s.recordAfter(r, audit.ActionEvidenceRewrap, "events", err, details)
	if err != nil {
		s.log.Error("evidence rewrap", "err", err, "rewrapped", res.Done, "remaining", res.Remaining)
		msg := "rewrap failed after " + strconv.Itoa(res.Done) + " rows (run it again to resume): " + err.Error()
		code := http.StatusInternalServerError
		if res.CurrentKey == "" {
			code, msg = http.StatusConflict, err.Error() // no key configured
		}
		writeError(w, code, msg)
		return
	}
	out := RewrapResponse{Rewrapped: res.Done, ByOldKey: res.ByOldKey, Remaining: res.Remaining,
		CurrentKey: res.CurrentKey, RetiredKeys: res.RetiredKeys}
	if out.RetiredKeys == nil {
		out.RetiredKeys = []string{}
	}
	sort.Strings(out.RetiredKeys)
	s.log.Info("evidence rewrapped", "rows", res.Done, "current_key", res.CurrentKey, "retired_keys", res.RetiredKeys)
	writeJSON(w, http.StatusOK, out)
}
