package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ward-dlp/ward/classifiers/catalog"
)

// Per-flow inspection budgets: application names live in the first packets; after these
// the flow is only counted (nDPI uses ~6 packets for TLS and 1–3 for QUIC).
const (
	maxTCPSegments = 24               // payload segments per direction
	tcpPrefixLimit = maxHello + 5*8   // a handshake message plus record headers
	maxUDPInspect  = 64               // datagrams per flow (DNS, STUN, RTP, QUIC)
	tenantMemory   = 30 * time.Minute // a host seen on a sanctioned tenant stays attributed to it
	signalMemory   = 10 * time.Minute // signalling this recent makes a media flow a call
	minDNSTTL      = 60 * time.Second // clients reuse answers beyond short TTLs
	maxDNSTTL      = time.Hour
	dnsGrace       = 5 * time.Minute
)

type inspect struct {
	tcp     [2]tcpDir
	quic    *quicState
	rtp     rtpTracker
	packets int
}

type tcpDir struct {
	base     uint32
	haveBase bool
	buf      *prefixBuf
	segs     int
	done     bool
}

func (a *Analyzer) inspect(f *flow, dir int, payload []byte, t *tcpInfo) {
	if t != nil {
		a.inspectTCP(f, dir, payload, t)
		return
	}
	a.inspectUDP(f, dir, payload)
}

func (a *Analyzer) inspectTCP(f *flow, dir int, payload []byte, t *tcpInfo) {
	in := f.insp
	d := &in.tcp[dir]
	if d.done {
		return
	}
	if t.syn {
		d.base, d.haveBase = t.seq+1, true
		if len(payload) == 0 {
			return
		}
		t.seq++ // TCP Fast Open data follows the SYN's sequence number
	}
	if len(payload) == 0 {
		return
	}
	if !d.haveBase {
		d.base, d.haveBase = t.seq, true // mid-stream start: only parsed if it begins a message
	}
	off := int32(t.seq - d.base)
	d.segs++
	switch {
	case off == 0 && d.buf == nil:
		// The common case: the message starts (and often ends) in this segment. Parse it
		// in place and copy only when more segments are needed.
		if a.parseTCPDir(f, dir, d, payload) {
			d.buf = newPrefixBuf(tcpPrefixLimit)
			d.buf.reserve(announcedLen(payload))
			d.buf.add(0, payload)
		}
	case off >= 0:
		if d.buf == nil {
			d.buf = newPrefixBuf(tcpPrefixLimit)
		}
		d.buf.add(int(off), payload)
		if c := d.buf.contiguous(); len(c) > 0 {
			a.parseTCPDir(f, dir, d, c)
		}
	}
	if !d.done && (d.segs >= maxTCPSegments || d.buf != nil && d.buf.overflow) {
		if d.buf != nil && len(d.buf.contiguous()) > 0 && d.buf.contiguous()[0] == 0x16 {
			a.stats.TLSOverflow++
			a.flag(f, "tls-incomplete")
		}
		d.done = true
	}
	if d.done {
		d.buf = nil
		if in.tcp[0].done && in.tcp[1].done {
			f.insp = nil
		}
	}
}

// announcedLen is how long the TLS handshake message starting a TCP stream says it is,
// its records' headers included; 0 when c does not start with one.
func announcedLen(c []byte) int {
	if len(c) < 9 || c[0] != 22 {
		return 0
	}
	n := handshakeLen(c[5:])
	return n + 5*(1+n/16384)
}

// tlsHandshake gathers the first handshake message from the TLS records at the start of
// c, which may span several records. complete is false while more bytes are needed.
func tlsHandshake(c []byte) (msg []byte, complete bool, err error) {
	var hs []byte
	single := true
	for off := 0; off+5 <= len(c); {
		if c[off] != 22 || c[off+1] != 3 {
			if off == 0 {
				return nil, false, errors.New("not a TLS handshake record")
			}
			return nil, false, errors.New("handshake interrupted by another record type")
		}
		rl := int(binary.BigEndian.Uint16(c[off+3:]))
		if rl == 0 || rl > 16384+2048 {
			return nil, false, fmt.Errorf("tls record length %d", rl)
		}
		body := c[off+5 : min(off+5+rl, len(c))]
		if off == 0 {
			hs = body
		} else {
			if single {
				hs = append(make([]byte, 0, 2*len(hs)), hs...)
				single = false
			}
			hs = append(hs, body...)
		}
		if n := handshakeLen(hs); n > 0 {
			if n > maxHello {
				return nil, false, fmt.Errorf("handshake message of %d bytes", n)
			}
			if n <= len(hs) {
				return hs[:n], true, nil
			}
		}
		if off+5+rl > len(c) {
			return nil, false, nil
		}
		off += 5 + rl
	}
	return nil, false, nil
}

// parseTCPDir parses the contiguous start c of one direction's stream. It reports whether
// more bytes are needed (the caller keeps them).
func (a *Analyzer) parseTCPDir(f *flow, dir int, d *tcpDir, c []byte) (more bool) {
	if len(c) == 0 {
		return true
	}
	port := f.server.Port()
	switch {
	case c[0] == 22:
		msg, complete, err := tlsHandshake(c)
		if err != nil {
			a.stats.TLSErrors++
			d.done = true
			return false
		}
		if !complete {
			return true
		}
		d.done = true
		if dir == 0 {
			ch, err := ParseClientHello(msg, false)
			if err != nil {
				a.stats.TLSErrors++
				a.flag(f, "tls-malformed")
				return false
			}
			a.stats.TLSClientHellos++
			a.clientHello(f, ch, 't', SourceSNI)
		} else if sh, err := ParseServerHello(msg, false); err == nil {
			a.serverHello(f, sh)
		} else {
			a.stats.TLSErrors++
		}
	case dir == 0 && looksHTTP(c):
		host, complete := ParseHTTPHost(c)
		if complete || len(c) >= 8192 {
			d.done = true
			in := f.insp
			in.tcp[1].done = true // the server's response is not needed
			f.protocol = "http"
			if host != "" {
				a.stats.HTTPHosts++
				a.setName(f, host, SourceHTTP)
			}
		}
	case port == 53 || port == 5353:
		if len(c) < 2 {
			return true
		}
		n := int(binary.BigEndian.Uint16(c))
		if len(c) < 2+n {
			return true
		}
		d.done = true
		f.protocol = "dns"
		a.dnsMessage(f, c[2:2+n])
	default:
		d.done = true
	}
	return !d.done
}

func (a *Analyzer) clientHello(f *flow, ch *ClientHello, transport byte, src NameSource) {
	f.ja4 = ch.JA4(transport)
	f.alpn = ch.ALPN
	f.clientMax = ch.MaxVersion()
	f.ech = ch.ECH
	switch transport {
	case 't':
		f.protocol = "tls"
	case 'q':
		f.protocol = "quic"
	case 'd':
		f.protocol = "dtls"
	}
	if ch.SNI == "" {
		a.flag(f, "no-sni")
	} else {
		f.sni = ch.SNI
	}
	port := f.server.Port()
	if port == 853 {
		if transport == 'q' {
			a.flag(f, "doq")
		} else {
			a.flag(f, "dot")
		}
	}
	realECH := ch.ECH && f.sni != "" && a.isECHPublicName(f.sni)
	if realECH {
		a.flag(f, "ech")
		// The outer SNI is the provider's public name; a DNS answer for this server
		// address (if the lookup was visible) is the better name.
		if e, ok := a.dns.get(f.server.Addr(), a.now); ok && e.name != f.sni {
			a.setName(f, e.name, SourceDNS)
		} else {
			a.setName(f, f.sni, src)
		}
	} else if f.sni != "" {
		a.setName(f, f.sni, src)
	}
	if f.sni == "" && f.app != nil {
		a.decide(f) // protocol is now known: signalling time, DoH on 443
	}
	if port == 853 {
		a.detect(f, DetectHiddenDNS, "medium", "DNS over TLS/QUIC (port 853) hides name lookups from the organisation's resolver",
			"server="+f.server.String(), "sni="+f.sni)
	}
	if realECH && f.fired&firedECH == 0 {
		f.fired |= firedECH
		ev := []string{"outer_sni=" + f.sni}
		if f.nameSrc == SourceDNS {
			ev = append(ev, "dns_name="+f.name)
		}
		a.detect(f, DetectECH, "medium", "Encrypted Client Hello hides the destination behind "+f.sni, ev...)
	}
}

func (a *Analyzer) serverHello(f *flow, sh *ServerHello) {
	if sh.HelloRetry {
		return // the real ServerHello follows; keep waiting is not worth it: version is 1.3
	}
	f.tlsVersion, f.cipher = sh.Version, sh.Cipher
	a.checkWeakTLS(f)
}

func (a *Analyzer) isECHPublicName(sni string) bool {
	if sni == "cloudflare-ech.com" {
		return true
	}
	_, ok := a.echNames.get(sni, a.now)
	return ok
}

func (a *Analyzer) inspectUDP(f *flow, dir int, b []byte) {
	in := f.insp
	in.packets++
	if len(b) > 0 {
		a.udpPayload(f, dir, b)
	}
	if f.insp != nil && in.packets >= maxUDPInspect {
		f.insp = nil
	}
}

func (a *Analyzer) udpPayload(f *flow, dir int, b []byte) {
	in := f.insp
	sp, cp := f.server.Port(), f.client.Port()
	switch {
	case sp == 53 || cp == 53 || sp == 5353 && cp == 5353:
		f.protocol = "dns"
		a.dnsMessage(f, b)
	case in.quic != nil || b[0]&0xc0 == 0xc0 && len(b) >= 1200 && dir == 0 || b[0]&0xc0 == 0xc0 && isKnownQUIC(b):
		a.quicDatagram(f, dir, b)
	case b[0] <= 3:
		a.stunMessage(f, b)
	case isDTLSRecord(b):
		if b[0] == 22 && dir == 0 && f.ja4 == "" {
			if ch, err := dtlsClientHello(b); err == nil {
				a.clientHello(f, ch, 'd', SourceSNI)
			}
		}
		if f.protocol == "udp" || f.protocol == "stun" {
			f.protocol = "dtls"
		}
		a.markMedia(f)
	case b[0] >= 64 && b[0] <= 79 && isChannelData(b):
		if f.protocol == "udp" || f.protocol == "stun" {
			f.protocol = "turn"
		}
		a.markMedia(f)
	case b[0] >= 128 && b[0] <= 191:
		in.rtp.observe(b)
		switch {
		case in.rtp.hits >= rtpHits:
			if f.protocol != "rtp" {
				f.protocol = "rtp"
			}
			a.markMedia(f)
		case in.rtp.rtcp >= 2 && f.protocol == "udp":
			f.protocol = "rtcp"
			a.markMedia(f)
		}
	}
}

func isKnownQUIC(b []byte) bool {
	return len(b) >= 5 && lookupQUICVersion(binary.BigEndian.Uint32(b[1:5])) != nil
}

func (a *Analyzer) quicDatagram(f *flow, dir int, b []byte) {
	in := f.insp
	if in.quic == nil {
		if dir != 0 || !isKnownQUIC(b) {
			if dir == 0 && len(b) >= 5 && b[0]&0xc0 == 0xc0 {
				a.flag(f, fmt.Sprintf("quic-version-0x%08x", binary.BigEndian.Uint32(b[1:5])))
			}
			return
		}
		in.quic = newQUICState()
	}
	q := in.quic
	hadHello, hadServer := q.hello != nil, q.server != nil
	if err := q.datagram(dir, b, &a.scratch); err != nil {
		a.stats.QUICErrors++
	}
	if q.qv != nil {
		f.protocol = "quic"
		f.quicVersion = q.version
	}
	if !hadHello && q.hello != nil {
		a.stats.QUICClientHellos++
		a.clientHello(f, q.hello, 'q', SourceQUIC)
	}
	if !hadServer && q.server != nil {
		a.serverHello(f, q.server)
	}
	if q.done() {
		if q.hello == nil && q.helloError != nil {
			a.flag(f, "quic-hello-malformed")
		}
		f.insp = nil
	}
}

func (a *Analyzer) stunMessage(f *flow, b []byte) {
	sp := f.server.Port()
	classic := sp == 3478 || sp == 3479 || sp >= 19302 && sp <= 19309
	// STUN over TCP and some UDP stacks pack several messages; walk them all.
	for i := 0; i < 8 && len(b) >= 20; i++ {
		m, err := ParseSTUN(b, classic)
		if err != nil {
			if m == nil {
				return
			}
			a.stats.STUNMessages++ // header was valid; attributes were not
			return
		}
		a.stats.STUNMessages++
		if f.protocol == "udp" || f.protocol == "tcp" {
			f.protocol = "stun"
		}
		a.markMedia(f)
		var app *catalog.App
		if m.Realm != "" {
			f.realm = m.Realm
			app = a.cat.MatchRealm(m.Realm)
		}
		for _, t := range m.Attrs {
			if app != nil {
				break
			}
			app = a.cat.MatchSTUNAttr(t)
		}
		if app != nil && (f.app == nil || rank(f.nameSrc) < rank(SourceSTUN)) {
			f.app, f.nameSrc = app, SourceSTUN
			if f.name == "" || rank(f.nameSrc) <= rank(SourceSTUN) {
				f.name = m.Realm
			}
			a.decide(f)
		}
		if f.app != nil {
			exp := a.now + int64(signalMemory)
			for _, list := range [][]netip.AddrPort{m.Mapped, m.Relayed, m.Peer} {
				for _, ap := range list {
					a.media.put(ap, nameEntry{name: f.name, app: f.app, src: SourceSTUN, exp: exp}, a.now)
				}
			}
		}
		if m.Len >= len(b) {
			return
		}
		b = b[m.Len:]
	}
}

func (a *Analyzer) dnsMessage(f *flow, b []byte) {
	m, err := ParseDNS(b)
	if err != nil {
		a.stats.DNSErrors++
		if m == nil {
			return
		}
	} else {
		a.stats.DNSMessages++
	}
	if f.dnsQuery == "" && m.Question != "" {
		f.dnsQuery = m.Question
	}
	if m.Response && m.RCode == 0 {
		a.learnDNS(m)
	}
}

// learnDNS feeds the IP→name cache. The name recorded is the first name of the chain
// (question, then CNAME targets) that the catalog knows, else the question: the user asked
// for "zoom.us", not for the CDN name it aliases.
func (a *Analyzer) learnDNS(m *DNSMessage) {
	name := m.Question
	app := a.cat.MatchName(name)
	if app == nil {
		for _, ans := range m.Answers {
			if ans.Type == dnsTypeCNAME && ans.Target != "" {
				if x := a.cat.MatchName(ans.Target); x != nil {
					name, app = ans.Target, x
					break
				}
			}
		}
	}
	for _, ans := range m.Answers {
		ttl := min(max(time.Duration(ans.TTL)*time.Second, minDNSTTL), maxDNSTTL)
		exp := a.now + int64(ttl+dnsGrace)
		if ans.Addr.IsValid() && !ans.Addr.IsUnspecified() {
			a.dns.put(ans.Addr.Unmap(), nameEntry{name: name, app: app, src: SourceDNS, exp: exp}, a.now)
		}
		if ans.ECH && ans.ECHPublicName != "" {
			a.echNames.put(ans.ECHPublicName, nameEntry{name: name, exp: exp}, a.now)
		}
	}
}

func rank(s NameSource) int {
	switch s {
	case SourceSNI, SourceQUIC:
		return 6
	case SourceHTTP:
		return 5
	case SourceDNS:
		return 4
	case SourceSTUN:
		return 3
	case SourceIP:
		return 1
	}
	return 0
}

// setName adopts name unless the flow already has a name from stronger evidence.
func (a *Analyzer) setName(f *flow, name string, src NameSource) {
	if name == "" || f.name != "" && rank(src) < rank(f.nameSrc) {
		return
	}
	f.name, f.nameSrc = name, src
	if app := a.cat.MatchName(name); app != nil || rank(src) >= rank(SourceHTTP) {
		f.app = app
	}
	a.decide(f)
}

// nameFromCaches names a new flow before any payload: DNS-learned server address, then a
// STUN-learned media address, then a catalog IP prefix.
func (a *Analyzer) nameFromCaches(f *flow) {
	srv := f.server.Addr().Unmap()
	if e, ok := a.dns.get(srv, a.now); ok {
		f.name, f.nameSrc, f.app = e.name, SourceDNS, e.app
	} else if e, ok := a.media.get(f.server, a.now); ok {
		f.name, f.nameSrc, f.app = e.name, SourceSTUN, e.app
	} else if e, ok := a.media.get(f.client, a.now); ok {
		f.name, f.nameSrc, f.app = e.name, SourceSTUN, e.app
	} else if app := a.cat.MatchIP(srv); app != nil {
		f.nameSrc, f.app = SourceIP, app
	}
	if f.app != nil {
		a.decide(f)
	}
}

func isCallCategory(c catalog.Category) bool {
	return c == catalog.VideoConferencing || c == catalog.Messaging || c == catalog.Social
}

func isUploadCategory(c catalog.Category) bool {
	return c == catalog.FileSharing || c == catalog.GenerativeAI || c == catalog.PasteTransfer || c == catalog.PersonalEmail
}

func (a *Analyzer) hostFor(client netip.Addr, app string) *hostApp {
	k := hostAppKey{client, app}
	h := a.hosts[k]
	if h == nil {
		h = &hostApp{}
		a.hosts[k] = h
	}
	return h
}

// decide applies the organisation's policy to a named flow and raises the detections that
// depend only on the app.
func (a *Analyzer) decide(f *flow) {
	if f.app == nil {
		f.status, f.tenant, f.host, f.volume = catalog.Unknown, "", nil, false
		return
	}
	h := a.hostFor(f.client.Addr(), f.app.ID)
	f.host = h
	st, tenant := a.pol.Decide(f.app, f.name)
	switch {
	case tenant != "" && st == catalog.Sanctioned:
		h.tenant, h.tenantUntil = tenant, a.now+int64(tenantMemory)
	case a.pol.HasTenants(f.app) && h.tenant != "" && h.tenantUntil >= a.now:
		// No tenant in this flow's name, but this host is in a sanctioned tenant's session
		// (media relays and API hosts carry no tenant).
		st, tenant = a.pol.TenantStatus(f.app), "inferred:"+h.tenant
	}
	f.status, f.tenant = st, tenant
	// Only these flows can raise a volume detection; the packet path skips the rest.
	f.volume = st != catalog.Sanctioned && (isUploadCategory(f.app.Category) || isCallCategory(f.app.Category))
	if f.protocol == "tls" || f.protocol == "quic" || f.protocol == "http" {
		h.signalAt = a.now
	}
	if st == catalog.Unsanctioned {
		a.detect(f, DetectUnsanctionedApp, sevFor(f.app), fmt.Sprintf("use of unsanctioned %s app %s", f.app.Category, f.app.Name),
			"name="+f.name, "source="+string(f.nameSrc), fmt.Sprintf("risk=%d", f.app.Risk.Score), "baa="+f.app.BAA.Offered)
	}
	port := f.server.Port()
	if f.app.Category == catalog.DoH && (f.protocol == "tls" || f.protocol == "quic" || port == 443 || port == 853) {
		a.flag(f, "encrypted-dns")
		a.detect(f, DetectHiddenDNS, "medium", "encrypted DNS resolver "+f.app.Name+" hides name lookups from the organisation's resolver",
			"name="+f.name, "source="+string(f.nameSrc))
	}
	a.checkWeakTLS(f)
}

func sevFor(app *catalog.App) string {
	switch {
	case app.Risk.Score >= 60:
		return "high"
	case app.Risk.Score >= 35:
		return "medium"
	}
	return "low"
}

func (a *Analyzer) checkWeakTLS(f *flow) {
	if f.app == nil || f.fired&firedWeakTLS != 0 || f.tlsVersion == 0 {
		return
	}
	if f.app.Category != catalog.VideoConferencing && f.app.Category != catalog.Telehealth {
		return
	}
	if tlsAtLeast13(f.tlsVersion) {
		return
	}
	f.fired |= firedWeakTLS
	a.detect(f, DetectWeakTLS, "medium", fmt.Sprintf("%s negotiated %s with %s; telehealth and video sessions should use TLS 1.3", f.protocol, TLSVersionName(f.tlsVersion), f.app.Name),
		"name="+f.name, "tls_version="+TLSVersionName(f.tlsVersion), fmt.Sprintf("cipher=0x%04x", f.cipher), "client_max="+TLSVersionName(f.clientMax))
}

// markMedia records that a flow carries real-time media (STUN/TURN/DTLS/RTP).
func (a *Analyzer) markMedia(f *flow) {
	if !f.media {
		f.media = true
		if f.app == nil {
			// a media flow with no name yet may still be named by an address learned
			// from STUN on another flow
			if e, ok := a.media.get(f.server, a.now); ok {
				f.name, f.nameSrc, f.app = e.name, SourceSTUN, e.app
				a.decide(f)
			}
		}
	}
}

// volume runs the byte-count detections for flows whose app is known.
func (a *Analyzer) volume(f *flow, dir int, n int) {
	app := f.app
	if app == nil || f.host == nil || f.status == catalog.Sanctioned {
		return
	}
	if dir == 0 && isUploadCategory(app.Category) {
		h := f.host
		if a.now-h.upStart > int64(a.cfg.UploadWindow) {
			h.upStart, h.upBytes = a.now, 0
		}
		before := h.upBytes
		h.upBytes += uint64(n)
		if before < a.cfg.UploadBytes && h.upBytes >= a.cfg.UploadBytes {
			a.detect(f, DetectBulkUpload, "high", fmt.Sprintf("%d MiB uploaded to %s %s %s within %s", h.upBytes>>20, f.status, app.Category, app.Name, a.cfg.UploadWindow),
				fmt.Sprintf("bytes_up=%d", h.upBytes), "name="+f.name, "baa="+app.BAA.Offered)
		}
	}
	if f.fired&firedVideo == 0 && isCallCategory(app.Category) && (f.media || f.proto == 17 && f.protocol == "udp" && app.Category == catalog.VideoConferencing) {
		pk, by := f.pkts[0]+f.pkts[1], f.bytes[0]+f.bytes[1]
		if pk >= a.cfg.VideoMinPackets && by >= a.cfg.VideoMinBytes {
			f.fired |= firedVideo
			ev := []string{fmt.Sprintf("media_packets=%d", pk), fmt.Sprintf("media_bytes=%d", by), "media=" + f.protocol, "name_source=" + string(f.nameSrc)}
			if f.host.signalAt > 0 && a.now-f.host.signalAt <= int64(signalMemory) {
				ev = append(ev, "signalling=seen")
			} else {
				ev = append(ev, "signalling=not-seen")
			}
			a.detect(f, DetectConsumerVideo, "high", fmt.Sprintf("%s call on %s (%s, not a sanctioned tenant)", app.Category, app.Name, f.status), ev...)
		}
	}
}

// finalChecks run when a flow ends: a weak TLS client without a visible ServerHello.
func (a *Analyzer) finalChecks(f *flow) {
	if f.tlsVersion == 0 && f.clientMax != 0 && !tlsAtLeast13(f.clientMax) && f.app != nil {
		f.tlsVersion = f.clientMax
		a.checkWeakTLS(f)
		f.tlsVersion = 0
	}
}

// detect emits a detection, at most once per (client, app, kind) per AlertEvery.
func (a *Analyzer) detect(f *flow, kind DetectionKind, sev, summary string, evidence ...string) {
	id := ""
	if f.app != nil {
		id = f.app.ID
	}
	h := a.hostFor(f.client.Addr(), id)
	if h.alerted == nil {
		h.alerted = make(map[DetectionKind]int64, 2)
	}
	if last, ok := h.alerted[kind]; ok && a.now-last < int64(a.cfg.AlertEvery) {
		return
	}
	h.alerted[kind] = a.now
	a.stats.Detections++
	if a.cfg.OnDetection == nil {
		return
	}
	d := Detection{
		Kind: kind, Severity: sev, Time: time.Unix(0, a.now).UTC(), Proto: "tcp",
		Client: f.client, Server: f.server, Process: f.proc, Name: f.name, Status: f.status,
		Summary: summary, Evidence: evidence,
	}
	if f.proto == 17 {
		d.Proto = "udp"
	}
	if f.app != nil {
		d.App, d.Category = f.app.ID, string(f.app.Category)
	}
	a.cfg.OnDetection(d)
}

// isDTLSRecord checks a DTLS record header (RFC 6347 §4.1, RFC 9147 plaintext form):
// content type 20–25, version 1.0/1.2/1.3 wire value, and a length that fits.
func isDTLSRecord(b []byte) bool {
	if len(b) < 13 || b[0] < 20 || b[0] > 25 || b[1] != 0xfe || b[2] != 0xff && b[2] != 0xfd && b[2] != 0xfc {
		return false
	}
	return 13+int(binary.BigEndian.Uint16(b[11:])) <= len(b)
}
