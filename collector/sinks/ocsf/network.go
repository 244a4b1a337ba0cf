package ocsf

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/ward-dlp/ward/collector/sinks/core"
)

// networkActivity maps a flow to Network Activity (4001). The activity says how the flow
// ended: Close for a closed TCP connection, Refuse for one the agent's deny list stopped,
// Fail for one that never established, Traffic for an interim report (idle UDP, a long TCP
// flow, or one still open when the agent stopped).
func networkActivity(v core.View, o Options) Event {
	f := v.Flow
	activity := 0 // Unknown
	switch f.State {
	case "closed":
		activity = 2 // Close
	case "denied":
		activity = 5 // Refuse
	case "failed":
		activity = 4 // Fail
	case "idle", "agent_stopped":
		activity = 6 // Traffic
	}
	e := flowBase(v, o, ClassNetworkActivity, activity)
	if f.SNI != "" || f.TLSVersion != "" {
		tls := map[string]any{}
		if f.SNI != "" {
			tls["sni"] = f.SNI
		}
		if f.TLSVersion != "" {
			tls["version"] = f.TLSVersion
		}
		e["tls"] = tls
	}
	if f.JA4 != "" {
		if atLeast(o.Version, 1, 4) {
			// ja4_fingerprint_list is a Network Activity attribute from OCSF 1.4.0 on.
			e["ja4_fingerprint_list"] = []any{map[string]any{"type_id": 1, "value": f.JA4}} // 1: JA4 (TLS client)
		} else {
			ward(e)["ja4"] = f.JA4
		}
	}
	return e
}

// dnsActivity maps a flow that carried a DNS query to DNS Activity (4003), activity Query:
// the agent saw the question, not the answer.
func dnsActivity(v core.View, o Options) Event {
	e := flowBase(v, o, ClassDNSActivity, 1) // Query
	e["query"] = map[string]any{"hostname": v.Flow.DNSQuery}
	return e
}

// flowBase fills what both network classes share: endpoints, connection, traffic, actor,
// times, the security-control outcome and the app.
func flowBase(v core.View, o Options, class, activity int) Event {
	f := v.Flow
	sev := 1 // Informational
	if f.Denied || f.State == "denied" {
		sev = 3 // Medium: the agent enforced a deny rule
	}
	e := base(v, o, class, CategoryNetwork, activity, sev)
	if v.Process != nil {
		e["actor"] = actor(v.Process)
	}
	local := endpoint(f.LocalAddress, f.LocalPort, "")
	remote := endpoint(f.RemoteAddress, f.RemotePort, f.Name)
	// OCSF src/dst are initiator/responder; traffic.bytes_out flows src -> dst.
	conn := map[string]any{"protocol_name": f.Transport}
	switch f.Transport {
	case "tcp":
		conn["protocol_num"] = 6
	case "udp":
		conn["protocol_num"] = 17
	}
	if a, err := netip.ParseAddr(f.RemoteAddress); err == nil {
		if a.Is4() || a.Is4In6() {
			conn["protocol_ver_id"] = 4
		} else {
			conn["protocol_ver_id"] = 6
		}
	}
	traffic := map[string]any{"bytes": f.BytesSent + f.BytesReceived}
	switch f.Direction {
	case "inbound":
		e["src_endpoint"], e["dst_endpoint"] = remote, local
		conn["direction_id"], conn["direction"] = 1, "Inbound"
		traffic["bytes_out"], traffic["bytes_in"] = f.BytesReceived, f.BytesSent
	default:
		e["src_endpoint"], e["dst_endpoint"] = local, remote
		if f.Direction == "outbound" {
			conn["direction_id"], conn["direction"] = 2, "Outbound"
		} else {
			conn["direction_id"] = 0
		}
		traffic["bytes_out"], traffic["bytes_in"] = f.BytesSent, f.BytesReceived
	}
	e["connection_info"] = conn
	e["traffic"] = traffic
	if f.StartTime != nil {
		e["start_time"] = f.StartTime.UnixMilli()
	}
	if f.EndTime != nil {
		e["end_time"] = f.EndTime.UnixMilli()
		if f.StartTime != nil && !f.EndTime.Before(*f.StartTime) {
			e["duration"] = f.EndTime.Sub(*f.StartTime).Milliseconds()
		}
	}
	if f.Denied || f.State == "denied" {
		e["action_id"], e["disposition_id"] = 2, 2 // Denied, Blocked
	} else {
		e["action_id"], e["disposition_id"] = 1, 1 // Allowed, Allowed
	}
	if name := nonEmpty(f.AppName, f.App); name != "" {
		e["app_name"] = name
	}
	w := ward(e)
	w["agent_id"], w["seq"], w["state"], w["transport"] = v.AgentID, v.Seq, f.State, f.Transport
	for k, val := range map[string]string{
		"rule_id": f.RuleID, "app": f.App, "app_category": f.AppCategory, "name_source": f.NameSource,
		"app_protocol": f.AppProtocol, "tls_version": f.TLSVersion,
	} {
		if val != "" {
			w[k] = val
		}
	}
	if len(f.ALPN) > 0 {
		w["alpn"] = f.ALPN
	}
	if f.ECH {
		w["ech"] = true
	}
	if f.UDPSends > 0 {
		w["udp_sends"] = f.UDPSends
	}
	return e
}

func endpoint(addr string, port uint32, hostname string) map[string]any {
	ep := map[string]any{}
	if addr != "" {
		ep["ip"] = addr
	}
	if port != 0 {
		ep["port"] = port
	}
	if hostname != "" {
		ep["hostname"] = hostname
	}
	return ep
}

// ward returns the event's unmapped.ward object, creating it.
func ward(e Event) map[string]any {
	u, ok := e["unmapped"].(map[string]any)
	if !ok {
		u = map[string]any{}
		e["unmapped"] = u
	}
	w, ok := u["ward"].(map[string]any)
	if !ok {
		w = map[string]any{}
		u["ward"] = w
	}
	return w
}

// atLeast reports whether an OCSF version string "1.6.0" is at least major.minor; an
// unparseable version counts as current.
func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}

// checkpointActivity maps an audit-log checkpoint to Event Log Activity (1008), activity
// Other ("Checkpoint"): the collector states the size and root hash of its audit log, signed,
// so the SIEM holds a copy the collector's host cannot rewrite later.
func checkpointActivity(v core.View, o Options) Event {
	c := v.Checkpoint
	e := base(v, o, ClassEventLogActivity, CategorySystem, 99, 1)
	delete(e["device"].(map[string]any), "agent_list")
	e["activity_name"] = "Checkpoint"
	e["actor"] = map[string]any{"app_name": "ward-collector"}
	e["log_name"] = c.Origin
	e["log_provider"] = "ward-collector"
	e["log_type"] = "Audit"
	e["unmapped"] = map[string]any{"ward": map[string]any{"audit_checkpoint": map[string]any{
		"origin": c.Origin, "size": c.Size, "root_hash": c.RootHash, "signed_note": c.Note,
	}}}
	return e
}
