package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// DNS record types Ward reads (RFC 1035, RFC 3596, RFC 9460).
const (
	dnsTypeA     = 1
	dnsTypeCNAME = 5
	dnsTypeAAAA  = 28
	dnsTypeSVCB  = 64
	dnsTypeHTTPS = 65

	svcParamECH      = 5
	svcParamIPv4Hint = 4
	svcParamIPv6Hint = 6

	maxDNSAnswers = 64
)

// DNSAnswer is one useful resource record from a response.
type DNSAnswer struct {
	Name   string
	Type   uint16
	TTL    uint32
	Addr   netip.Addr // A, AAAA, or an SVCB/HTTPS address hint
	Target string     // CNAME target or SVCB/HTTPS target name
	// ECHPublicName is the public_name of the first ECHConfig in an HTTPS/SVCB ech param:
	// the outer SNI a client using ECH will show.
	ECH           bool
	ECHPublicName string
}

// DNSMessage is the part of a DNS message that names flows.
type DNSMessage struct {
	ID       uint16
	Response bool
	RCode    uint8
	Question string
	QType    uint16
	Answers  []DNSAnswer
}

var errDNSName = errors.New("dns name malformed")

// readName decodes a possibly compressed name at off. It bounds pointer chasing (every
// pointer must go backwards, at most 32 of them) and the name length (255 octets).
func readName(msg []byte, off int, sb *strings.Builder) (next int, err error) {
	sb.Reset()
	jumps := 0
	next = -1
	limit := off
	for {
		if off >= len(msg) {
			return 0, errDNSName
		}
		l := int(msg[off])
		switch {
		case l == 0:
			if next < 0 {
				next = off + 1
			}
			return next, nil
		case l&0xc0 == 0xc0:
			if off+1 >= len(msg) {
				return 0, errDNSName
			}
			ptr := int(binary.BigEndian.Uint16(msg[off:]) & 0x3fff)
			if next < 0 {
				next = off + 2
			}
			if ptr >= limit || jumps >= 32 {
				return 0, errDNSName
			}
			jumps++
			off, limit = ptr, ptr
		case l&0xc0 != 0:
			return 0, errDNSName
		default:
			if off+1+l > len(msg) || sb.Len()+l+1 > 255 {
				return 0, errDNSName
			}
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			for _, c := range msg[off+1 : off+1+l] {
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				if c <= ' ' || c >= 0x7f {
					c = '?'
				}
				sb.WriteByte(c)
			}
			off += 1 + l
		}
	}
}

// ParseDNS parses a DNS message (UDP payload, or a TCP message without its length prefix).
func ParseDNS(msg []byte) (*DNSMessage, error) {
	if len(msg) < 12 {
		return nil, fmt.Errorf("dns header: %w", errTruncated)
	}
	m := &DNSMessage{ID: binary.BigEndian.Uint16(msg), Response: msg[2]&0x80 != 0, RCode: msg[3] & 0x0f}
	if op := (msg[2] >> 3) & 0x0f; op != 0 {
		return nil, fmt.Errorf("dns opcode %d", op)
	}
	qd := int(binary.BigEndian.Uint16(msg[4:]))
	an := int(binary.BigEndian.Uint16(msg[6:]))
	if qd != 1 { // every real query and answer has exactly one question
		return nil, fmt.Errorf("dns with %d questions", qd)
	}
	var sb strings.Builder
	off, err := readName(msg, 12, &sb)
	if err != nil {
		return nil, fmt.Errorf("dns question: %w", err)
	}
	if off+4 > len(msg) {
		return nil, fmt.Errorf("dns question: %w", errTruncated)
	}
	m.Question = sb.String()
	m.QType = binary.BigEndian.Uint16(msg[off:])
	off += 4
	if !m.Response {
		return m, nil
	}
	for i := 0; i < an && i < maxDNSAnswers; i++ {
		noff, err := readName(msg, off, &sb)
		if err != nil {
			return m, fmt.Errorf("dns answer %d: %w", i, err)
		}
		off = noff
		if off+10 > len(msg) {
			return m, fmt.Errorf("dns answer %d: %w", i, errTruncated)
		}
		a := DNSAnswer{Name: sb.String(), Type: binary.BigEndian.Uint16(msg[off:]), TTL: binary.BigEndian.Uint32(msg[off+4:])}
		rdl := int(binary.BigEndian.Uint16(msg[off+8:]))
		off += 10
		if off+rdl > len(msg) {
			return m, fmt.Errorf("dns answer %d rdata: %w", i, errTruncated)
		}
		rd := msg[off : off+rdl]
		keep := true
		switch a.Type {
		case dnsTypeA:
			if rdl != 4 {
				return m, fmt.Errorf("dns A rdata length %d", rdl)
			}
			a.Addr = netip.AddrFrom4([4]byte(rd))
		case dnsTypeAAAA:
			if rdl != 16 {
				return m, fmt.Errorf("dns AAAA rdata length %d", rdl)
			}
			a.Addr = netip.AddrFrom16([16]byte(rd))
		case dnsTypeCNAME:
			if _, err := readName(msg[:off+rdl], off, &sb); err != nil {
				return m, fmt.Errorf("dns CNAME: %w", err)
			}
			a.Target = sb.String()
		case dnsTypeHTTPS, dnsTypeSVCB:
			hints, err := parseSVCB(msg[:off+rdl], off, &a, &sb)
			if err != nil {
				return m, fmt.Errorf("dns %d rdata: %w", a.Type, err)
			}
			m.Answers = append(m.Answers, a)
			for _, h := range hints {
				m.Answers = append(m.Answers, DNSAnswer{Name: a.Name, Type: a.Type, TTL: a.TTL, Addr: h})
			}
			keep = false
		default:
			keep = false
		}
		if keep {
			m.Answers = append(m.Answers, a)
		}
		off += rdl
	}
	return m, nil
}

// parseSVCB reads SvcPriority, TargetName and the SvcParams Ward uses (RFC 9460): ech
// (key 5) and the address hints. It returns the hint addresses.
func parseSVCB(msg []byte, off int, a *DNSAnswer, sb *strings.Builder) ([]netip.Addr, error) {
	if off+2 > len(msg) {
		return nil, errTruncated
	}
	off += 2 // priority
	noff, err := readName(msg, off, sb)
	if err != nil {
		return nil, err
	}
	a.Target = sb.String()
	off = noff
	var hints []netip.Addr
	for off < len(msg) {
		if off+4 > len(msg) {
			return hints, errTruncated
		}
		key := binary.BigEndian.Uint16(msg[off:])
		l := int(binary.BigEndian.Uint16(msg[off+2:]))
		off += 4
		if off+l > len(msg) {
			return hints, errTruncated
		}
		v := msg[off : off+l]
		switch key {
		case svcParamECH:
			a.ECH = true
			a.ECHPublicName = echPublicName(v)
		case svcParamIPv4Hint:
			for i := 0; i+4 <= len(v) && len(hints) < 16; i += 4 {
				hints = append(hints, netip.AddrFrom4([4]byte(v[i:i+4])))
			}
		case svcParamIPv6Hint:
			for i := 0; i+16 <= len(v) && len(hints) < 16; i += 16 {
				hints = append(hints, netip.AddrFrom16([16]byte(v[i:i+16])))
			}
		}
		off += l
	}
	return hints, nil
}

// echPublicName extracts public_name from the first ECHConfig (version 0xfe0d) of an
// ECHConfigList: u16 list length, then {u16 version, u16 length, contents}; contents =
// HpkeKeyConfig {u8 config_id, u16 kem_id, u16-prefixed public_key, u16-prefixed
// cipher_suites}, u8 maximum_name_length, u8-prefixed public_name, extensions.
func echPublicName(v []byte) string {
	if len(v) < 2 {
		return ""
	}
	p := 2
	rd16 := func() (int, bool) {
		if p+2 > len(v) {
			return 0, false
		}
		x := int(binary.BigEndian.Uint16(v[p:]))
		p += 2
		return x, true
	}
	ver, ok := rd16()
	if !ok || ver != extECH {
		return ""
	}
	if _, ok = rd16(); !ok {
		return ""
	}
	p += 1 + 2               // config_id, kem_id
	for i := 0; i < 2; i++ { // public_key, cipher_suites
		l, ok := rd16()
		if !ok {
			return ""
		}
		p += l
	}
	p++ // maximum_name_length
	if p >= len(v) {
		return ""
	}
	l := int(v[p])
	p++
	if p+l > len(v) || !validHostname(v[p:p+l]) {
		return ""
	}
	return strings.ToLower(string(v[p : p+l]))
}
