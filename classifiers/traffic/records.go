// Package traffic is Ward's network intelligence: it names the application of every flow
// (TLS and QUIC SNI, HTTP Host, DNS answers, STUN, IP hints), fingerprints clients (JA4),
// keeps bounded per-flow state, and raises detections for shadow IT: unsanctioned apps,
// consumer video calls, bulk uploads to unsanctioned storage or generative AI, weak TLS on
// telehealth, and DoH/ECH hiding the destination.
//
// The same Analyzer serves the offline reader (`ward-agent analyze`) and the live path: the
// caller hands it packets (Packet, PacketFrom with process attribution) and receives
// FlowRecord and Detection values through callbacks. Every packet is decoded under recover,
// every buffer is bounded, and every failure is counted in Stats.
package traffic

import (
	"net/netip"
	"time"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// NameSource says where a flow's name came from, strongest first; a reviewer weighs an SNI
// differently from an IP-range guess.
type NameSource string

// Name sources.
const (
	SourceSNI  NameSource = "sni"  // TLS ClientHello server_name
	SourceQUIC NameSource = "quic" // server_name from a decrypted QUIC Initial
	SourceHTTP NameSource = "http" // HTTP/1.x Host or CONNECT authority
	SourceDNS  NameSource = "dns"  // an earlier DNS answer for the server address
	SourceSTUN NameSource = "stun" // STUN REALM/vendor attribute, or an address learned from STUN
	SourceIP   NameSource = "ip"   // catalog IP prefix (weakest)
)

// Process is the local process behind a flow (live capture only; empty offline).
type Process struct {
	PID  int    `json:"pid,omitempty"`
	UID  int    `json:"uid,omitempty"`
	User string `json:"user,omitempty"`
	Comm string `json:"comm,omitempty"`
	Exe  string `json:"exe,omitempty"`
	// Cookie is the kernel socket cookie the eBPF side joins on.
	Cookie uint64 `json:"cookie,omitempty"`
}

// FlowRecord is one finished (or flushed) flow. Client is the endpoint that initiated it.
type FlowRecord struct {
	Proto  string         `json:"proto"`
	Client netip.AddrPort `json:"client"`
	Server netip.AddrPort `json:"server"`

	Process *Process `json:"process,omitempty"`

	App      string         `json:"app,omitempty"`
	AppName  string         `json:"app_name,omitempty"`
	Vendor   string         `json:"vendor,omitempty"`
	Category string         `json:"category,omitempty"`
	Risk     int            `json:"risk,omitempty"`
	BAA      string         `json:"baa,omitempty"`
	Status   catalog.Status `json:"status"`
	Tenant   string         `json:"tenant,omitempty"`

	Name       string     `json:"name,omitempty"`
	NameSource NameSource `json:"name_source,omitempty"`

	Protocol     string   `json:"protocol,omitempty"` // tls, quic, http, dns, stun, turn, dtls, rtp, rtcp
	SNI          string   `json:"sni,omitempty"`
	ALPN         []string `json:"alpn,omitempty"`
	JA4          string   `json:"ja4,omitempty"`
	TLSVersion   string   `json:"tls_version,omitempty"`    // negotiated, from the ServerHello
	TLSClientMax string   `json:"tls_client_max,omitempty"` // highest version the client offered
	TLSCipher    string   `json:"tls_cipher,omitempty"`
	ECH          bool     `json:"ech,omitempty"`
	QUICVersion  string   `json:"quic_version,omitempty"`
	DNSQuery     string   `json:"dns_query,omitempty"`
	STUNRealm    string   `json:"stun_realm,omitempty"`
	Flags        []string `json:"flags,omitempty"`

	BytesUp     uint64    `json:"bytes_up"`
	BytesDown   uint64    `json:"bytes_down"`
	PacketsUp   uint64    `json:"packets_up"`
	PacketsDown uint64    `json:"packets_down"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
}

// DetectionKind names a detection rule.
type DetectionKind string

// Detection kinds.
const (
	DetectUnsanctionedApp DetectionKind = "unsanctioned_app"
	DetectConsumerVideo   DetectionKind = "consumer_video_call"
	DetectBulkUpload      DetectionKind = "bulk_upload"
	DetectWeakTLS         DetectionKind = "weak_tls_telehealth"
	DetectHiddenDNS       DetectionKind = "encrypted_dns"
	DetectECH             DetectionKind = "ech_hidden_destination"
)

// Detection is one finding about network use. It carries the flow it was raised on and
// the evidence, never payload.
type Detection struct {
	Kind     DetectionKind  `json:"kind"`
	Severity string         `json:"severity"` // low, medium, high
	Time     time.Time      `json:"time"`
	Proto    string         `json:"proto"`
	Client   netip.AddrPort `json:"client"`
	Server   netip.AddrPort `json:"server"`
	Process  *Process       `json:"process,omitempty"`
	App      string         `json:"app,omitempty"`
	Category string         `json:"category,omitempty"`
	Name     string         `json:"name,omitempty"`
	Status   catalog.Status `json:"status,omitempty"`
	Summary  string         `json:"summary"`
	Evidence []string       `json:"evidence,omitempty"`
}

// Stats counts what the analyzer saw and every reason it ignored or failed on input, for
// health reporting. Values only grow.
type Stats struct {
	Packets          uint64 `json:"packets"`
	Bytes            uint64 `json:"bytes"`
	NotIP            uint64 `json:"not_ip"`
	NotTCPUDP        uint64 `json:"not_tcp_udp"`
	Fragments        uint64 `json:"ip_fragments"`           // IP fragments seen
	FragReassembled  uint64 `json:"ip_reassembled"`         // datagrams rebuilt from fragments
	FragDuplicates   uint64 `json:"ip_fragment_duplicates"` // exact repeats, ignored
	FragOverlaps     uint64 `json:"ip_fragment_overlaps"`   // datagrams abandoned for overlapping or conflicting fragments
	FragInvalid      uint64 `json:"ip_fragment_invalid"`    // bad sizes, over 64 KiB, truncated by the capture, too many holes
	FragTimeouts     uint64 `json:"ip_fragment_timeouts"`   // datagrams never completed
	FragEvicted      uint64 `json:"ip_fragment_evicted"`    // dropped to stay within the reassembly bounds
	DecodeErrors     uint64 `json:"decode_errors"`
	Panics           uint64 `json:"panics"`
	FlowsCreated     uint64 `json:"flows_created"`
	FlowsEvicted     uint64 `json:"flows_evicted_full"`
	FlowsExpired     uint64 `json:"flows_expired"`
	TLSClientHellos  uint64 `json:"tls_client_hellos"`
	TLSErrors        uint64 `json:"tls_errors"`
	TLSOverflow      uint64 `json:"tls_overflow"`
	QUICClientHellos uint64 `json:"quic_client_hellos"`
	QUICErrors       uint64 `json:"quic_errors"`
	DNSMessages      uint64 `json:"dns_messages"`
	DNSErrors        uint64 `json:"dns_errors"`
	STUNMessages     uint64 `json:"stun_messages"`
	HTTPHosts        uint64 `json:"http_hosts"`
	Detections       uint64 `json:"detections"`
}
