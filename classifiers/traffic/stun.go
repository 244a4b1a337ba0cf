package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// STUN (RFC 5389/8489) and TURN (RFC 8656) numbers.
const (
	stunMagicCookie = 0x2112A442

	stunAttrMappedAddress    = 0x0001
	stunAttrUsername         = 0x0006
	stunAttrXORPeerAddress   = 0x0012
	stunAttrRealm            = 0x0014
	stunAttrXORRelayedAddr   = 0x0016
	stunAttrXORMappedAddress = 0x0020
	stunAttrSoftware         = 0x8022
	stunAttrAlternateServer  = 0x8023

	maxSTUNAttrs = 64
)

// STUNMessage is what Ward keeps of a STUN/TURN message: who it says the endpoints are and
// which vendor sent it.
type STUNMessage struct {
	Method   uint16 // 0x001 Binding, 0x003 Allocate, 0x004 Refresh, 0x006 Send, 0x007 Data, ...
	Class    uint8  // 0 request, 1 indication, 2 success, 3 error
	Classic  bool   // RFC 3489 message without the magic cookie
	Realm    string
	Software string
	// Addresses carried by MAPPED/XOR-MAPPED, XOR-RELAYED and XOR-PEER attributes.
	Mapped, Relayed, Peer []netip.AddrPort
	// Attrs lists attribute types in order (vendor attributes identify apps).
	Attrs []uint16
	Len   int // total message length including the 20-byte header
}

var errNotSTUN = errors.New("not STUN")

// ParseSTUN parses one STUN message at the start of b. classicOK admits RFC 3489 messages
// (no magic cookie), which are too easy to confuse with other traffic unless the port says
// STUN.
func ParseSTUN(b []byte, classicOK bool) (*STUNMessage, error) {
	if len(b) < 20 || b[0]&0xc0 != 0 {
		return nil, errNotSTUN
	}
	mt := binary.BigEndian.Uint16(b)
	l := int(binary.BigEndian.Uint16(b[2:]))
	if l%4 != 0 || 20+l > len(b) {
		return nil, errNotSTUN
	}
	cookie := binary.BigEndian.Uint32(b[4:])
	m := &STUNMessage{
		Method: mt&0x000f | (mt&0x00e0)>>1 | (mt&0x3e00)>>2,
		Class:  uint8((mt>>4)&1 | (mt>>7)&2),
		Len:    20 + l,
	}
	if cookie != stunMagicCookie {
		if !classicOK || m.Method != 1 {
			return nil, errNotSTUN
		}
		m.Classic = true
	}
	txid := b[8:20]
	attrs := b[20 : 20+l]
	for len(attrs) > 0 {
		if len(attrs) < 4 || len(m.Attrs) >= maxSTUNAttrs {
			return m, fmt.Errorf("stun attributes: %w", errTruncated)
		}
		t := binary.BigEndian.Uint16(attrs)
		al := int(binary.BigEndian.Uint16(attrs[2:]))
		padded := (al + 3) &^ 3
		if 4+al > len(attrs) {
			return m, fmt.Errorf("stun attribute %#04x: %w", t, errTruncated)
		}
		v := attrs[4 : 4+al]
		m.Attrs = append(m.Attrs, t)
		switch t {
		case stunAttrMappedAddress:
			if ap, ok := stunAddr(v, false, txid); ok {
				m.Mapped = append(m.Mapped, ap)
			}
		case stunAttrXORMappedAddress:
			if ap, ok := stunAddr(v, true, txid); ok {
				m.Mapped = append(m.Mapped, ap)
			}
		case stunAttrXORRelayedAddr:
			if ap, ok := stunAddr(v, true, txid); ok {
				m.Relayed = append(m.Relayed, ap)
			}
		case stunAttrXORPeerAddress:
			if ap, ok := stunAddr(v, true, txid); ok {
				m.Peer = append(m.Peer, ap)
			}
		case stunAttrRealm:
			m.Realm = printable(v, 128)
		case stunAttrSoftware:
			m.Software = printable(v, 128)
		}
		if 4+padded > len(attrs) {
			break // last attribute without padding: tolerated
		}
		attrs = attrs[4+padded:]
	}
	return m, nil
}

// stunAddr decodes a (XOR-)MAPPED-ADDRESS value: reserved, family (1 IPv4, 2 IPv6), port,
// address; XOR variants are XORed with the cookie (and transaction id for IPv6).
func stunAddr(v []byte, xor bool, txid []byte) (netip.AddrPort, bool) {
	if len(v) < 8 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:])
	var key [16]byte
	binary.BigEndian.PutUint32(key[:], stunMagicCookie)
	copy(key[4:], txid)
	if xor {
		port ^= stunMagicCookie >> 16
	}
	switch v[1] {
	case 1:
		var a [4]byte
		copy(a[:], v[4:8])
		if xor {
			for i := range a {
				a[i] ^= key[i]
			}
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case 2:
		if len(v) < 20 {
			return netip.AddrPort{}, false
		}
		var a [16]byte
		copy(a[:], v[4:20])
		if xor {
			for i := range a {
				a[i] ^= key[i]
			}
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a), port), true
	}
	return netip.AddrPort{}, false
}

func printable(v []byte, max int) string {
	if len(v) > max {
		v = v[:max]
	}
	var b strings.Builder
	for _, c := range v {
		if c < ' ' || c >= 0x7f {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// isChannelData reports a TURN ChannelData message (RFC 8656 §12.4): channel number
// 0x4000–0x4FFF and a length that fits.
func isChannelData(b []byte) bool {
	if len(b) < 4 || b[0] < 0x40 || b[0] > 0x4f {
		return false
	}
	l := int(binary.BigEndian.Uint16(b[2:]))
	return 4+l <= len(b) && len(b)-(4+l) < 4
}

// rtpKind classifies a UDP payload by the RFC 7983/9443 first-byte demultiplexing rules
// and the RTP/RTCP header shape (RFC 3550, RFC 5761).
type rtpKind uint8

const (
	notMedia rtpKind = iota
	kindRTP
	kindRTCP
)

func classifyRTP(b []byte) (k rtpKind, ssrc uint32, seq uint16, pt uint8) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return notMedia, 0, 0, 0
	}
	pt = b[1] & 0x7f
	if b[1] >= 192 && b[1] <= 223 { // RTCP packet types 192–223 (SR 200, RR 201, ...)
		l := (int(binary.BigEndian.Uint16(b[2:])) + 1) * 4
		if l > len(b) || b[1] > 213 {
			return notMedia, 0, 0, 0
		}
		return kindRTCP, binary.BigEndian.Uint32(b[4:]), 0, b[1]
	}
	if !(pt <= 34 || pt >= 96) {
		return notMedia, 0, 0, 0
	}
	cc := int(b[0] & 0x0f)
	if 12+4*cc > len(b) {
		return notMedia, 0, 0, 0
	}
	return kindRTP, binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint16(b[2:]), pt
}

// rtpTracker demands several packets of one SSRC with advancing sequence numbers before
// calling a flow RTP, as nDPI does: a single RTP-shaped datagram proves nothing.
type rtpTracker struct {
	ssrc    uint32
	seq     uint16
	hits    uint8
	rtcp    uint8
	started bool
}

// rtpHits is how many in-order packets of one stream make a flow RTP.
const rtpHits = 3

func (t *rtpTracker) observe(b []byte) rtpKind {
	k, ssrc, seq, _ := classifyRTP(b)
	switch k {
	case kindRTCP:
		if t.rtcp < 255 {
			t.rtcp++
		}
	case kindRTP:
		if t.started && ssrc == t.ssrc {
			d := seq - t.seq
			if d >= 1 && d <= 16 {
				if t.hits < 255 {
					t.hits++
				}
			}
		} else {
			t.hits = 0
		}
		t.ssrc, t.seq, t.started = ssrc, seq, true
	}
	return k
}

// dtlsClientHello extracts the ClientHello from a DTLS record (RFC 6347/9147) when the
// whole message is in the first record fragment.
func dtlsClientHello(b []byte) (*ClientHello, error) {
	// record: type(1)=22 version(2) epoch(2) seq(6) length(2); handshake: type(1) len(3)
	// message_seq(2) fragment_offset(3) fragment_length(3).
	if len(b) < 13+12 || b[0] != 22 || b[1] != 0xfe {
		return nil, errors.New("not a DTLS handshake record")
	}
	rl := int(binary.BigEndian.Uint16(b[11:]))
	if 13+rl > len(b) {
		return nil, fmt.Errorf("dtls record: %w", errTruncated)
	}
	h := b[13 : 13+rl]
	if len(h) < 12 || h[0] != hsClientHello {
		return nil, errors.New("dtls: not a ClientHello")
	}
	total := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	fragOff := int(h[6])<<16 | int(h[7])<<8 | int(h[8])
	fragLen := int(h[9])<<16 | int(h[10])<<8 | int(h[11])
	if fragOff != 0 || fragLen != total || 12+fragLen > len(h) {
		return nil, errors.New("dtls: fragmented ClientHello")
	}
	// Rebuild as a TLS-style message header for the shared parser.
	msg := make([]byte, 4+fragLen)
	copy(msg, h[:4])
	copy(msg[4:], h[12:12+fragLen])
	return ParseClientHello(msg, true)
}
