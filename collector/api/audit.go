package api

import (
	"context"
	"encoding/json"
	"net/http"
	"os/user"
	"strconv"

	"github.com/ward-dlp/ward/collector/audit"
	"github.com/ward-dlp/ward/collector/store"
)

// SetAudit makes the server record administrative actions and event reads in l. The
// collector always sets it; without it (package tests) nothing is recorded.
func (s *Server) SetAudit(l *audit.Log) { s.audit = l }

// actor is the admin socket peer as the audit log names it: uid (and its passwd name) and
// pid, from SO_PEERCRED.
func actor(r *http.Request) audit.Actor {
	pc, _ := r.Context().Value(peerKey{}).(peerCred)
	if pc.ucred == nil {
		return audit.Actor{Type: audit.ActorUnix, ID: "unknown"}
	}
	a := audit.Actor{Type: audit.ActorUnix, ID: strconv.FormatUint(uint64(pc.ucred.Uid), 10), PID: pc.ucred.Pid}
	if u, err := user.LookupId(a.ID); err == nil {
		a.Name = u.Username
	}
	return a
}

// record appends an entry for the request's peer. It returns false (after answering 500)
// when the entry could not be stored and the caller must not go on: reads of event data
// fail closed, so nothing is viewed without a trace.
func (s *Server) record(w http.ResponseWriter, r *http.Request, action, object, outcome string, details map[string]string) bool {
	if s.audit == nil {
		return true
	}
	err := s.audit.Record(context.WithoutCancel(r.Context()), audit.Entry{
		Actor: actor(r), Action: action, Object: object, Outcome: outcome, Details: details,
	})
	if err != nil {
		s.log.Error("audit log: recording failed", "action", action, "object", object, "err", err)
		if w != nil {
			writeError(w, http.StatusInternalServerError, "the audit log could not record this request, so it was not served")
		}
		return false
	}
	return true
}

// recordAfter appends the outcome of an action already carried out; a failure to record is
// logged (the action happened and its answer is still owed to the caller).
func (s *Server) recordAfter(r *http.Request, action, object string, err error, details map[string]string) {
	outcome := audit.OutcomeSuccess
	if err != nil {
		outcome = audit.OutcomeFailure
		if details == nil {
			details = map[string]string{}
		}
		details["error"] = err.Error()
	}
	s.record(nil, r, action, object, outcome, details)
}

// AuditRecordLine is one NDJSON line of GET /v1/audit/entries: the stored record bytes and
// the leaf hash stored with them, exactly, so that wardctl verifies without trusting the
// collector's own check.
type AuditRecordLine struct {
	Index    int64  `json:"index"`
	Data     []byte `json:"data"`
	LeafHash []byte `json:"leaf_hash,omitempty"`
}

func (s *Server) auditEntries(w http.ResponseWriter, r *http.Request) {
	after := int64(-1)
	limit := store.MaxLimit
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			writeError(w, http.StatusBadRequest, "after: want an entry index (or -1)")
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxLimit {
			writeError(w, http.StatusBadRequest, "limit: want 1.."+strconv.Itoa(store.MaxLimit))
			return
		}
		limit = n
	}
	recs, err := s.store.AuditRecords(r.Context(), after, limit)
	if err != nil {
		s.log.Error("audit entries", "err", err)
		writeError(w, http.StatusInternalServerError, "reading the audit log failed")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	for _, rec := range recs {
		if err := enc.Encode(AuditRecordLine{Index: rec.Index, Data: rec.Data, LeafHash: rec.LeafHash}); err != nil {
			return
		}
	}
}

// AuditCheckpointsResponse is the answer to GET /v1/audit/checkpoints.
type AuditCheckpointsResponse struct {
	// VerifierKey checks the checkpoints' signatures (note verifier key format).
	VerifierKey string                 `json:"verifier_key"`
	Size        int64                  `json:"size"`
	Checkpoints []AuditCheckpointEntry `json:"checkpoints"`
}

// AuditCheckpointEntry is one stored signed tree head.
type AuditCheckpointEntry struct {
	Size      int64  `json:"size"`
	CreatedAt string `json:"created_at"`
	Note      string `json:"note"`
}

func (s *Server) auditCheckpoints(w http.ResponseWriter, r *http.Request) {
	if s.audit == nil {
		writeError(w, http.StatusNotFound, "this collector keeps no audit log")
		return
	}
	cps, err := s.store.AuditCheckpoints(r.Context())
	if err != nil {
		s.log.Error("audit checkpoints", "err", err)
		writeError(w, http.StatusInternalServerError, "reading the audit checkpoints failed")
		return
	}
	size, err := s.store.AuditSize(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading the audit log failed")
		return
	}
	resp := AuditCheckpointsResponse{VerifierKey: s.audit.VerifierKey(), Size: size, Checkpoints: []AuditCheckpointEntry{}}
	for _, c := range cps {
		resp.Checkpoints = append(resp.Checkpoints, AuditCheckpointEntry{Size: c.Size,
			CreatedAt: c.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00"), Note: string(c.Note)})
	}
	writeJSON(w, http.StatusOK, resp)
}

// auditCheckpointNow makes a checkpoint at once (wardctl audit checkpoint), so an operator
// can take a signed tree head away before a maintenance window.
func (s *Server) auditCheckpointNow(w http.ResponseWriter, r *http.Request) {
	if s.audit == nil {
		writeError(w, http.StatusNotFound, "this collector keeps no audit log")
		return
	}
	size, made, err := s.audit.Checkpoint(r.Context())
	if err != nil {
		s.log.Error("audit checkpoint", "err", err)
		writeError(w, http.StatusInternalServerError, "making the checkpoint failed")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"size": size, "created": made})
}
