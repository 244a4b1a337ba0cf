package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/ward-dlp/ward/agent/identity"
	"github.com/ward-dlp/ward/agent/policysync"
	wardv1 "github.com/ward-dlp/ward/api/ward/v1"
	"github.com/ward-dlp/ward/classifiers/catalog"
	"github.com/ward-dlp/ward/collector/console/account"
	"github.com/ward-dlp/ward/collector/ingest"
	collectorpolicy "github.com/ward-dlp/ward/collector/policy"
	"github.com/ward-dlp/ward/policy"
)

// agentRig is a real agent's policy side: an identity enrolled with a token over mTLS, and
// a policysync.Syncer polling the collector's gRPC service on 127.0.0.1.
type agentRig struct {
	sync   *policysync.Syncer
	client wardv1.AgentServiceClient
	dir    string
	keys   []string
}

// startAgentSide serves the collector's agent API (with the sanctioning overlay) and
// enrols one agent whose policy keys are keys.
func (e *env) startAgentSide(keys []string) *agentRig {
	t := e.t
	t.Helper()
	ctx := context.Background()
	svc := ingest.New(e.enr, e.st, ingest.Limits{}, e.logger, ingest.WithSanctioning(e.sanc.OverlayFor))
	gs := svc.NewGRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	tok, _, err := e.enr.CreateToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id, err := identity.Enroll(ctx, filepath.Join(dir, "identity"), identity.EnrollConfig{Collector: lis.Addr().String(), Token: tok,
		CAFile: e.ca.CACertPath(), ServerName: "localhost", Hostname: "ws-e2e"})
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(id.TransportCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := &agentRig{client: wardv1.NewAgentServiceClient(conn), dir: filepath.Join(dir, "policy"), keys: keys}
	r.restart(t, e)
	return r
}

func (r *agentRig) restart(t *testing.T, e *env) {
	t.Helper()
	s, err := policysync.New(policysync.Config{Dir: r.dir, Keys: r.keys, Group: "default", PollInterval: 50 * time.Millisecond, Logger: e.logger})
	if err != nil {
		t.Fatal(err)
	}
	r.sync = s
}

// pollUntil runs the agent's poll loop until cond holds.
func (r *agentRig) pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { _ = r.sync.Run(ctx, r.client); close(done) }()
	defer func() { cancel(); <-done }()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("agent never saw %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// part2ToApp is what a Part 2 upload to domain looks like to the policy.
func part2ToApp(domain string) *policy.Input {
	return &policy.Input{Time: time.Now(), Kind: policy.EventNetwork, Classes: map[policy.Class]int{policy.ClassPart2: 95},
		Destination: policy.Destination{Kind: policy.DestNetworkApp, Domain: domain}, Process: policy.Process{Name: "firefox"}}
}

// signedBundle signs the default pack as version v with a sanctioning section.
func signedBundle(t *testing.T, skey string, v int, sanctioning string) []byte {
	t.Helper()
	src := strings.Replace(string(policy.DefaultPack()), "version: 1\n", "version: "+string(rune('0'+v))+"\n", 1) + sanctioning
	now := time.Now()
	b, err := policy.Sign("p.yaml", []byte(src), skey, policy.SignOptions{NotBefore: now.Add(-time.Hour), ExpiresAt: now.Add(24 * time.Hour), TargetGroup: "default"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) sanction(c *http.Client, csrf, app, status string) {
	e.t.Helper()
	body, _ := json.Marshal(map[string]string{"status": status})
	req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/shadow-it/apps/"+app+"/sanction", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", csrf)
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		e.t.Fatalf("sanction %s %s: %d %s", app, status, res.StatusCode, b)
	}
}

// TestSanctioningReachesAgents: an admin's sanction change in the console reaches a real
// agent's policy through the collector's signed overlay, once the signed bundle delegates
// to the collector; tampered, foreign and replayed overlays are refused.
func TestSanctioningReachesAgents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pskey, pvkey, err := policy.GenerateKey("clinic-policy")
	if err != nil {
		t.Fatal(err)
	}
	e.addUser("admin1", account.RoleAdmin)
	admin, csrf := e.login("admin1")
	rig := e.startAgentSide([]string{pvkey})
	decide := func(domain string) string { return rig.sync.Policy().Evaluate(part2ToApp(domain)).RuleID }

	// A bundle without delegation: the console's decision stays on the collector.
	if _, err := collectorpolicy.Push(ctx, e.st, signedBundle(t, pskey, 2, ""), 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	rig.pollUntil(t, "bundle v2", func() bool { return rig.sync.Version() == 2 })
	if got := decide("www.dropbox.com"); got != "part2-unsanctioned-destination" {
		t.Fatalf("dropbox before any decision: %s", got)
	}
	e.sanction(admin, csrf, "dropbox", "sanctioned")
	if o, err := e.sanc.OverlayFor(ctx, "default"); err != nil || o != nil {
		t.Fatalf("an overlay is offered for a group whose bundle does not delegate: %d bytes, %v", len(o), err)
	}
	rig.pollUntil(t, "a poll", func() bool { return true })
	time.Sleep(150 * time.Millisecond)
	if got := decide("www.dropbox.com"); got != "part2-unsanctioned-destination" {
		t.Fatalf("without delegation the agent changed: %s", got)
	}

	// The policy author delegates sanctioning to the collector's key and locks zoom.
	deleg := "sanctioning:\n  keys: [\"" + e.sanc.VerifierKey() + "\"]\n  locked: [zoom]\n"
	if _, err := collectorpolicy.Push(ctx, e.st, signedBundle(t, pskey, 3, deleg), 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	rig.pollUntil(t, "the delegated decision", func() bool { return decide("www.dropbox.com") == "part2-disclosure-without-consent" })
	view, seq1 := rig.sync.Sanctioning()
	if view == nil || view.TenantStatus(&catalog.App{ID: "dropbox"}) != catalog.Sanctioned || seq1 == 0 {
		t.Fatalf("agent's catalog view: %+v seq %d", view, seq1)
	}
	first, err := e.sanc.Overlay(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Changing back, and a locked app the overlay may not touch; a catalog app the bundle
	// does not list (Box is in it; Microsoft Teams is "teams" there, matched by domain).
	e.sanction(admin, csrf, "dropbox", "unsanctioned")
	e.sanction(admin, csrf, "zoom", "unsanctioned")
	e.sanction(admin, csrf, "microsoft-teams", "unsanctioned")
	e.sanction(admin, csrf, "wetransfer", "sanctioned")
	rig.pollUntil(t, "the second decision", func() bool { return decide("www.dropbox.com") == "part2-unsanctioned-destination" })
	if got := decide("clinic.zoom.us"); got != "part2-disclosure-without-consent" {
		t.Errorf("zoom is locked by the policy, yet the overlay changed it: %s", got)
	}
	if got := decide("teams.microsoft.com"); got != "part2-unsanctioned-destination" {
		t.Errorf("teams (catalog microsoft-teams) after unsanctioning: %s", got)
	}
	if got := decide("wetransfer.com"); got != "part2-disclosure-without-consent" {
		t.Errorf("wetransfer after sanctioning: %s", got)
	}
	_, seq2 := rig.sync.Sanctioning()
	if seq2 <= seq1 {
		t.Fatalf("sequence did not grow: %d then %d", seq1, seq2)
	}
	current, _ := e.sanc.Overlay(ctx)

	// Refusals: a tampered payload, an overlay signed by another key, a replay of the older
	// overlay. The decisions in force do not move.
	tampered := bytes.Replace(current, []byte("dropbox: {status: unsanctioned}"), []byte("dropbox: {status: sanctioned}"), 1)
	if bytes.Equal(tampered, current) {
		t.Fatalf("overlay payload layout changed:\n%s", current)
	}
	skey2, _, _ := policy.GenerateKey(collectorpolicy.SanctioningKeyName)
	_, payload, _ := policy.SplitBundle(tampered)
	foreign, err := policy.SignOverlay(payload, skey2, seq2+1, "x", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		file []byte
		want error
	}{{"tampered", tampered, policy.ErrOverlayHash}, {"foreign key", foreign, policy.ErrOverlaySigner},
		{"replayed older", first, policy.ErrOverlayRewound}, {"garbage", []byte("not an overlay"), policy.ErrBadOverlay}} {
		if err := rig.sync.OfferSanctioning(c.file); !errors.Is(err, c.want) {
			t.Errorf("%s overlay: %v, want %v", c.name, err, c.want)
		}
		if got := decide("www.dropbox.com"); got != "part2-unsanctioned-destination" {
			t.Fatalf("after the %s overlay dropbox decides %s", c.name, got)
		}
	}
	if st := rig.sync.Status(); st.GetLastError() != "" {
		t.Errorf("an overlay refusal was reported as a bundle refusal: %q", st.GetLastError())
	}

	// A restarted agent comes back with the overlay it applied.
	rig.restart(t, e)
	if got := decide("www.dropbox.com"); got != "part2-unsanctioned-destination" {
		t.Errorf("after restart dropbox decides %s", got)
	}
	if _, seq := rig.sync.Sanctioning(); seq != seq2 {
		t.Errorf("after restart overlay sequence %d, want %d", seq, seq2)
	}
	// The refusal reached the collector's view of the agent on the next poll.
	if err := rig.sync.OfferSanctioning(tampered); err == nil {
		t.Fatal("tampered overlay accepted after restart")
	}
	rig.pollUntil(t, "the refusal report", func() bool {
		pols, err := e.st.AgentPolicies(ctx)
		if err != nil {
			return false
		}
		for _, p := range pols {
			if strings.Contains(p.LastError, "sanctioning overlay refused") {
				return true
			}
		}
		return false
	})

	// Withdrawing the delegation drops the overlay: back to the bundle's apps list.
	if _, err := collectorpolicy.Push(ctx, e.st, signedBundle(t, pskey, 4, ""), 0, time.Now()); err != nil {
		t.Fatal(err)
	}
	rig.pollUntil(t, "bundle v4", func() bool { return rig.sync.Version() == 4 })
	if view, _ := rig.sync.Sanctioning(); view != nil {
		t.Error("overlay still applied after the delegation was withdrawn")
	}
	if got := decide("teams.microsoft.com"); got != "part2-disclosure-without-consent" {
		t.Errorf("teams after withdrawal: %s (bundle says sanctioned)", got)
	}
}
