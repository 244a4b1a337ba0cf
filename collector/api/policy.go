package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ward-dlp/ward/collector/audit"
	collpolicy "github.com/ward-dlp/ward/collector/policy"
	"github.com/ward-dlp/ward/collector/store"
	"github.com/ward-dlp/ward/policy"
)

// maxPushBytes bounds a pushed bundle file (signed note plus payload).
const maxPushBytes = policy.MaxPayloadBytes + 64<<10

// pushPolicy stores a signed bundle (the file `wardctl policy sign` wrote, as the request
// body) as the newest for its group; agents pick it up on their next poll.
func (s *Server) pushPolicy(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPushBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "bundle: "+err.Error())
		return
	}
	uid := int64(-1)
	if pc, ok := r.Context().Value(peerKey{}).(peerCred); ok && pc.ucred != nil {
		uid = int64(pc.ucred.Uid)
	}
	b, err := collpolicy.Push(r.Context(), s.store, body, uid, time.Now())
	if err == nil {
		s.recordAfter(r, audit.ActionPolicyPublish, fmt.Sprintf("%s/%d", b.TargetGroup, b.Version), nil,
			map[string]string{"name": b.Name, "sha256": b.SHA256, "expires_at": b.ExpiresAt.UTC().Format(time.RFC3339)})
	} else {
		s.recordAfter(r, audit.ActionPolicyPublish, "", err, map[string]string{"bytes": fmt.Sprint(len(body))})
	}
	switch {
	case errors.Is(err, store.ErrPolicyNotNewer), errors.Is(err, store.ErrPolicyDuplicate):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil && collpolicy.IsRefusal(err):
		writeError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		s.log.Error("push policy", "err", err)
		writeError(w, http.StatusInternalServerError, "storing the policy bundle failed")
		return
	}
	s.log.Info("policy bundle pushed", "name", b.Name, "version", b.Version, "group", b.TargetGroup,
		"sha256", b.SHA256, "expires_at", b.ExpiresAt, "uid", uid)
	writeJSON(w, http.StatusCreated, b)
}

// policyStatus lists pushed bundles and which agents apply which version.
func (s *Server) policyStatus(w http.ResponseWriter, r *http.Request) {
	f, err := collpolicy.Status(r.Context(), s.store)
	if err != nil {
		s.log.Error("policy status", "err", err)
		writeError(w, http.StatusInternalServerError, "reading policy status failed")
		return
	}
	if f.Groups == nil {
		f.Groups = []collpolicy.GroupStatus{} // the document promises an array, even before the first push
	}
	writeJSON(w, http.StatusOK, f)
}

// AgentView is one agent in GET /v1/agents: the stored agent plus its last policy report,
// the same rows the console's fleet view starts from.
type AgentView = store.AgentStatus
