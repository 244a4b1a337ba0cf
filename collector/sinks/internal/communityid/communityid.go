// Package communityid computes Community ID v1 flow hashes (github.com/corelight/
// community-id-spec), the string Zeek, Suricata, Elastic and most SIEMs put in
// network.community_id so a SOC can pivot from a Ward flow to the same connection in its
// network sensors. Only port-carrying transports are hashed (TCP, UDP, SCTP): Ward's flows
// are sockets.
package communityid

import (
	"crypto/sha1" //nolint:gosec // the spec fixes SHA-1; this is an identifier, not a MAC
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// IP protocol numbers the spec hashes with ports.
const (
	TCP  = 6
	UDP  = 17
	SCTP = 132
)

// V1 returns "1:" + base64(SHA-1(seed, addresses, protocol, ports)) for the flow between
// the two endpoints, the same whichever side is given first: the spec orders the endpoints
// by address bytes, then port, so both directions of a connection get one ID.
func V1(seed uint16, a, b netip.AddrPort, proto uint8) (string, error) {
	switch proto {
	case TCP, UDP, SCTP:
	default:
		return "", fmt.Errorf("communityid: protocol %d has no ports; only TCP, UDP and SCTP are hashed here", proto)
	}
	aa, ba := a.Addr().Unmap(), b.Addr().Unmap()
	if !aa.IsValid() || !ba.IsValid() || aa.Is4() != ba.Is4() {
		return "", fmt.Errorf("communityid: endpoints %v and %v are not both IPv4 or both IPv6", a, b)
	}
	ap, bp := a.Port(), b.Port()
	if c := aa.Compare(ba); c > 0 || c == 0 && ap > bp {
		aa, ba, ap, bp = ba, aa, bp, ap
	}
	buf := make([]byte, 0, 2+16+16+2+4)
	buf = binary.BigEndian.AppendUint16(buf, seed)
	buf = append(buf, aa.AsSlice()...)
	buf = append(buf, ba.AsSlice()...)
	buf = append(buf, proto, 0) // protocol, padding
	buf = binary.BigEndian.AppendUint16(buf, ap)
	buf = binary.BigEndian.AppendUint16(buf, bp)
	sum := sha1.Sum(buf) //nolint:gosec // see import
	return "1:" + base64.StdEncoding.EncodeToString(sum[:]), nil
}
