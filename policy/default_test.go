package policy

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC)

func builtin(t testing.TB) *Policy {
	t.Helper()
	p, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// in builds an input; the zero values are an unremarkable write to a watched directory.
func in(mod func(*Input)) *Input {
	x := &Input{Time: t0, Kind: EventFileWrite, Classes: map[Class]int{}, Destination: Destination{Kind: DestWatchedPath},
		Process: Process{Exe: "/usr/bin/cp"}, User: User{Name: "alice", Groups: []string{"clinicians"}}, Host: Host{Tags: []string{"clinical"}}}
	mod(x)
	return x
}

type row struct {
	name     string
	input    *Input
	rule     string // "" for allow
	action   Action
	severity Severity
	outcome  string
}

// TestDefaultPackDecisionTable pins what the day-one pack decides for every destination and
// app the sensors will produce, including the kinds only constructed inputs have today.
func TestDefaultPackDecisionTable(t *testing.T) {
	p := builtin(t)
	rows := []row{
		{"part2 to removable media is blocked", in(func(x *Input) {
			x.Classes[ClassPart2] = 95
			x.Destination = Destination{Kind: DestRemovableMedia, Path: "/media/usb0/notes.xml"}
		}), "part2-removable-media", ActionBlock, SeverityCritical, "block"},
		{"low-confidence part2 to removable media is only recorded", in(func(x *Input) {
			x.Classes[ClassPart2] = 40
			x.Destination = Destination{Kind: DestRemovableMedia}
		}), "audit-record", ActionRecord, SeverityInfo, "record"},
		{"a tainted writer's clean copy on removable media alerts", in(func(x *Input) {
			x.Classes[ClassPart2] = 60 // the lineage match, below the detection threshold
			x.Lineage = Lineage{Classes: []string{"part2"}, Sources: []string{"/srv/exports/chart.xml"}}
			x.Destination = Destination{Kind: DestRemovableMedia, Path: "/media/usb0/chart.xml.gpg"}
		}), "lineage-removable-media", ActionAlert, SeverityHigh, "alert"},
		{"a tainted writer copying recognised part2 to removable media: the content block wins", in(func(x *Input) {
			x.Classes[ClassPart2] = 95
			x.Lineage = Lineage{Classes: []string{"part2"}}
			x.Destination = Destination{Kind: DestRemovableMedia}
		}), "part2-removable-media", ActionBlock, SeverityCritical, "block"},
		{"a tainted writer in a watched path is recorded", in(func(x *Input) {
			x.Classes[ClassPart2] = 60
			x.Lineage = Lineage{Classes: []string{"part2"}}
		}), "audit-record", ActionRecord, SeverityInfo, "record"},
		{"phi to removable media alerts", in(func(x *Input) {
			x.Classes[ClassPHI] = 80
			x.Destination = Destination{Kind: DestRemovableMedia}
		}), "phi-removable-media", ActionAlert, SeverityHigh, "alert"},
		{"part2 and phi to removable media: the part2 block wins", in(func(x *Input) {
			x.Classes[ClassPHI], x.Classes[ClassPart2] = 99, 90
			x.Destination = Destination{Kind: DestRemovableMedia}
		}), "part2-removable-media", ActionBlock, SeverityCritical, "block"},
		{"part2 uploaded to unsanctioned dropbox is blocked", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPart2] = 90
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "content.dropboxusercontent.com"}
			x.Process = Process{Exe: "/usr/lib/firefox/firefox"}
		}), "part2-unsanctioned-destination", ActionBlock, SeverityCritical, "block"},
		{"part2 to sanctioned zoom without consent alerts", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPart2] = 90
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "us02web.zoom.us"}
		}), "part2-disclosure-without-consent", ActionAlert, SeverityHigh, "alert"},
		{"phi pasted into chatgpt is blocked", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPHI] = 70
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "chatgpt.com"}
		}), "phi-generative-ai", ActionBlock, SeverityCritical, "block"},
		{"part2 pasted into chatgpt: both block critical, unsanctioned-destination is first in the file", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPart2] = 90
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "chatgpt.com"}
		}), "part2-unsanctioned-destination", ActionBlock, SeverityCritical, "block"},
		{"a sanctioned generative-ai app (sensor says so) is only recorded", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPHI] = 70
			x.App = AppInput{Name: "clinic-scribe", Category: "generative-ai", Sanctioned: true}
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "scribe.example"}
		}), "audit-record", ActionRecord, SeverityInfo, "record"},
		{"phi to a dropbox sync folder is blocked", in(func(x *Input) {
			x.Classes[ClassPHI] = 80
			x.Destination = Destination{Kind: DestSyncFolder, Path: "/home/alice/Dropbox/intake.csv"}
			x.App = AppInput{Name: "dropbox", Category: "cloud-storage"}
		}), "phi-unsanctioned-storage", ActionBlock, SeverityHigh, "block"},
		{"phi to wetransfer is blocked", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Classes[ClassPHI] = 80
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "wetransfer.com"}
		}), "phi-unsanctioned-storage", ActionBlock, SeverityHigh, "block"},
		{"phi on the clinic's sanctioned share is only recorded", in(func(x *Input) {
			x.Classes[ClassPHI] = 80
			x.Destination = Destination{Kind: DestNetworkShare, Path: "/mnt/ehr-share/x.pdf"}
			x.App = AppInput{Name: "ehr-share", Category: "file-share", Sanctioned: true}
		}), "audit-record", ActionRecord, SeverityInfo, "record"},
		{"zoom writes an mp4: local telehealth recording", in(func(x *Input) {
			x.Destination = Destination{Kind: DestLocal}
			x.File = File{Path: "/home/alice/Documents/Zoom/2026-11-23 Session/video1.mp4"}
			x.Process = Process{Exe: "/opt/zoom/zoom"}
		}), "telehealth-local-recording", ActionAlert, SeverityHigh, "alert"},
		{"obs writes an mkv: screen recording", in(func(x *Input) {
			x.File = File{Path: "/home/alice/Videos/2026-11-23.mkv"}
			x.Process = Process{Exe: "/usr/bin/obs"}
		}), "telehealth-local-recording", ActionAlert, SeverityHigh, "alert"},
		{"zoom writes its config: nothing", in(func(x *Input) {
			x.File = File{Path: "/home/alice/.zoom/data/settings.json"}
			x.Process = Process{Exe: "/opt/zoom/zoom"}
		}), "", ActionNone, 0, "allow"},
		{"a text editor writes a wav: not a telehealth app", in(func(x *Input) {
			x.File = File{Path: "/home/alice/note.wav"}
			x.Process = Process{Exe: "/usr/bin/audacity"}
		}), "", ActionNone, 0, "allow"},
		{"youtube on a clinical workstation", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "rr3---sn-a5mekn7s.googlevideo.com"}
		}), "consumer-video-clinical-workstation", ActionAlert, SeverityLow, "alert"},
		{"youtube on a front-desk workstation is fine", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Host.Tags = []string{"front-desk"}
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "www.youtube.com"}
		}), "", ActionNone, 0, "allow"},
		{"dns over https to an unknown resolver", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "dns.example"}
			x.Network.Evasion = []string{"doh"}
		}), "dns-evasion", ActionAlert, SeverityMedium, "alert"},
		{"encrypted client hello", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "cloudflare-ech.com"}
			x.Network.Evasion = []string{"ech"}
		}), "dns-evasion", ActionAlert, SeverityMedium, "alert"},
		{"ech to sanctioned zoom is tolerated", in(func(x *Input) {
			x.Kind = EventNetwork
			x.Destination = Destination{Kind: DestNetworkApp, Domain: "zoom.us"}
			x.Network.Evasion = []string{"ech"}
		}), "", ActionNone, 0, "allow"},
		{"part2 written to a watched export directory", in(func(x *Input) {
			x.Classes[ClassPart2] = 90
			x.Records = 3
		}), "part2-in-watched-path", ActionAlert, SeverityHigh, "alert"},
		{"phi written to a watched export directory", in(func(x *Input) { x.Classes[ClassPHI] = 65 }),
			"phi-in-watched-path", ActionAlert, SeverityMedium, "alert"},
		{"phi just under the threshold is recorded", in(func(x *Input) { x.Classes[ClassPHI] = 64 }),
			"audit-record", ActionRecord, SeverityInfo, "record"},
		{"nothing sensitive in a watched path", in(func(x *Input) {}), "", ActionNone, 0, "allow"},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			d := p.Evaluate(r.input)
			if d.RuleID != r.rule || d.Action != r.action || d.Severity != r.severity || d.Outcome() != r.outcome {
				t.Fatalf("got %s (action %s severity %s), want rule %q action %s severity %s outcome %s",
					d, d.Action, d.Severity, r.rule, r.action, r.severity, r.outcome)
			}
			if r.rule != "" && (len(d.Compliance) == 0 || d.Version != "0" || d.PolicyName != "behavioural-health-default") {
				t.Fatalf("decision lacks compliance or version: %+v", d)
			}
		})
	}
	if n := p.EvalErrors(); n != 0 {
		t.Fatalf("%d evaluation errors in the default pack", n)
	}
}

// TestMassExportFiresOncePerWindowPerUser: 50 Part 2 records by one user in an hour alert
// once; another user's records do not add to the first user's; after the window the
// counter fires again.
func TestMassExportFiresOncePerWindowPerUser(t *testing.T) {
	p := builtin(t)
	part2 := func(user string, at time.Time, records int64) Decision {
		return p.Evaluate(in(func(x *Input) {
			x.Time, x.User.Name, x.Records = at, user, records
			x.Classes[ClassPart2] = 90
		}))
	}
	var fired []int
	for i := range 30 {
		if d := part2("alice", t0.Add(time.Duration(i)*time.Minute), 2); d.RuleID == "mass-export-part2" {
			fired = append(fired, i)
			if d.Action != ActionAlert || d.Severity != SeverityCritical {
				t.Fatalf("mass export decision %s", d)
			}
		} else if d.RuleID != "part2-in-watched-path" {
			t.Fatalf("file %d: %s", i, d)
		}
		if d := part2("bob", t0.Add(time.Duration(i)*time.Minute), 1); d.RuleID != "part2-in-watched-path" {
			t.Fatalf("bob's file %d: %s", i, d)
		}
	}
	if len(fired) != 1 || fired[0] != 24 { // 25 files × 2 records = 50
		t.Fatalf("mass export fired at files %v, want [24]", fired)
	}
	// Still inside the window after firing: quiet.
	if d := part2("alice", t0.Add(40*time.Minute), 10); d.RuleID == "mass-export-part2" {
		t.Fatalf("fired again inside the window: %s", d)
	}
	// Long after: the old records have left the window; 50 new ones fire again.
	if d := part2("alice", t0.Add(3*time.Hour), 50); d.RuleID != "mass-export-part2" {
		t.Fatalf("did not fire for a new burst: %s", d)
	}
	// Bytes count too.
	if d := p.Evaluate(in(func(x *Input) {
		x.Time, x.User.Name, x.Bytes = t0, "carol", 21<<20
		x.Classes[ClassPart2] = 90
	})); d.RuleID != "mass-export-part2" {
		t.Fatalf("21 MiB of part2 did not trip the byte threshold: %s", d)
	}
}

func TestMassExportStateIsBounded(t *testing.T) {
	m := newMassCounter(&MassExport{Class: ClassPHI, Records: 10, Window: time.Hour})
	for i := range maxTrackedUsers + 500 {
		m.add(string(rune('a'+i%26))+time.Duration(i).String(), t0.Add(time.Duration(i)*time.Millisecond), 1, 1)
	}
	if len(m.users) > maxTrackedUsers {
		t.Fatalf("%d users tracked, bound is %d", len(m.users), maxTrackedUsers)
	}
}
