package traffic

import (
	"encoding/binary"
	"net/netip"

	"github.com/gopacket/gopacket/layers"
)

// Link, network and transport headers are decoded by hand: Ward needs a dozen fields
// from six fixed layouts, and gopacket's DecodingLayerParser (interface dispatch, per-layer
// bookkeeping, error values built with fmt) cost more per packet than the whole flow
// table. Every offset is checked against the captured length before it is read; a frame
// that does not fit its own headers is a decode error, never a panic.

// frameResult says what became of a frame in decodeFrame.
type frameResult uint8

const (
	frameOK        frameResult = iota // a TCP or UDP packet is in the frame struct
	frameNotIP                        // link type or EtherType carries no IP
	frameNotTCPUDP                    // IP, but another transport (ICMP, ESP, ...)
	frameBad                          // headers inconsistent with themselves or the capture
	frameFragment                     // an IP fragment, handed to the reassembler
)

// frame is one decoded packet: addresses, transport header fields and the L4 payload
// (a sub-slice of the captured bytes, or of a reassembly buffer).
type frame struct {
	src, dst netip.Addr
	proto    uint8 // 6 or 17 when frameOK
	sp, dp   uint16
	ipLen    int // IP datagram length as sent (header included), for byte counts
	payload  []byte
	tcp      tcpInfo
}

// EtherTypes and IP protocol numbers used below.
const (
	etherIPv4  = 0x0800
	etherIPv6  = 0x86dd
	etherVLAN  = 0x8100
	etherQinQ  = 0x88a8
	etherQinQ2 = 0x9100

	ipProtoTCP      = 6
	ipProtoUDP      = 17
	ipProtoHopByHop = 0
	ipProtoRouting  = 43
	ipProtoFragment = 44
	ipProtoAH       = 51
	ipProtoDstOpts  = 60
	ipProtoMobility = 135
	ipProtoHIP      = 139
	ipProtoShim6    = 140
)

// maxExtHeaders bounds the IPv6 extension header chain walked per packet.
const maxExtHeaders = 8

// decodeFrame decodes a frame of link type lt into fr. Fragments go to the analyzer's
// reassembler; when one completes a datagram, decodeFrame returns frameOK for the
// reassembled packet.
func (a *Analyzer) decodeFrame(lt layers.LinkType, data []byte, fr *frame) frameResult {
	var et uint16
	switch lt {
	case layers.LinkTypeEthernet:
		if len(data) < 14 {
			return frameBad
		}
		et = binary.BigEndian.Uint16(data[12:])
		data = data[14:]
		for i := 0; i < 3 && (et == etherVLAN || et == etherQinQ || et == etherQinQ2); i++ {
			if len(data) < 4 {
				return frameBad
			}
			et = binary.BigEndian.Uint16(data[2:])
			data = data[4:]
		}
	case layers.LinkTypeRaw, 12, 14, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		return a.decodeIP(data, fr)
	case layers.LinkTypeLinuxSLL:
		if len(data) < 16 {
			return frameBad
		}
		et = binary.BigEndian.Uint16(data[14:])
		data = data[16:]
	case layers.LinkTypeLinuxSLL2:
		if len(data) < 20 {
			return frameBad
		}
		et = binary.BigEndian.Uint16(data)
		data = data[20:]
	case layers.LinkTypeNull, layers.LinkTypeLoop:
		// BSD loopback: a 4-byte address family in host (NULL) or network (LOOP) byte
		// order; the family values differ between systems, so the IP version decides.
		if len(data) < 4 {
			return frameBad
		}
		fam := binary.LittleEndian.Uint32(data)
		if fam > 0xff {
			fam = binary.BigEndian.Uint32(data)
		}
		switch fam {
		case 2, 10, 24, 28, 30:
		default:
			return frameNotIP
		}
		return a.decodeIP(data[4:], fr)
	default:
		return frameNotIP
	}
	switch et {
	case etherIPv4, etherIPv6:
		return a.decodeIP(data, fr)
	}
	return frameNotIP
}

// decodeIP decodes an IPv4 or IPv6 packet by its version nibble.
func (a *Analyzer) decodeIP(b []byte, fr *frame) frameResult {
	if len(b) == 0 {
		return frameBad
	}
	switch b[0] >> 4 {
	case 4:
		return a.decodeIPv4(b, fr)
	case 6:
		return a.decodeIPv6(b, fr)
	}
	return frameNotIP
}

func (a *Analyzer) decodeIPv4(b []byte, fr *frame) frameResult {
	if len(b) < 20 {
		return frameBad
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if total == 0 {
		total = len(b) // TCP segmentation offload on the capturing host
	}
	if ihl < 20 || ihl > total || ihl > len(b) {
		return frameBad
	}
	if total < len(b) {
		b = b[:total] // Ethernet padding
	}
	fr.src = netip.AddrFrom4([4]byte(b[12:16]))
	fr.dst = netip.AddrFrom4([4]byte(b[16:20]))
	fr.ipLen = total
	proto := b[9]
	if ff := binary.BigEndian.Uint16(b[6:]); ff&0x3fff != 0 { // MF set or offset non-zero
		return a.fragment(fr, fragPiece{
			v6: false, id: uint32(binary.BigEndian.Uint16(b[4:])), proto: proto,
			off: int(ff&0x1fff) * 8, more: ff&0x2000 != 0, hdrLen: ihl,
			data: b[ihl:], truncated: total > len(b),
		})
	}
	return a.decodeL4(proto, b[ihl:], fr)
}

func (a *Analyzer) decodeIPv6(b []byte, fr *frame) frameResult {
	if len(b) < 40 {
		return frameBad
	}
	pl := int(binary.BigEndian.Uint16(b[4:]))
	total := 40 + pl
	if pl == 0 {
		total = len(b) // jumbogram or offloaded segment: the capture is the bound
	}
	if total < len(b) {
		b = b[:total]
	}
	fr.src = netip.AddrFrom16([16]byte(b[8:24]))
	fr.dst = netip.AddrFrom16([16]byte(b[24:40]))
	fr.ipLen = total
	return a.decodeIPv6Ext(b[6], b, 40, fr, true)
}

// decodeIPv6Ext walks the extension header chain starting with header nh at b[p:] up to
// the transport header. allowFrag is false inside a reassembled datagram (a fragment
// header there would be nested fragmentation).
func (a *Analyzer) decodeIPv6Ext(nh uint8, b []byte, p int, fr *frame, allowFrag bool) frameResult {
	for i := 0; ; i++ {
		switch nh {
		case ipProtoTCP, ipProtoUDP:
			return a.decodeL4(nh, b[p:], fr)
		case ipProtoFragment:
			if len(b) < p+8 || !allowFrag {
				return frameBad
			}
			fo := binary.BigEndian.Uint16(b[p+2:])
			off, more := int(fo>>3)*8, fo&1 != 0
			if off == 0 && !more {
				// An atomic fragment (RFC 6946): the whole packet, processed in place.
				nh, p = b[p], p+8
				break
			}
			return a.fragment(fr, fragPiece{
				v6: true, id: binary.BigEndian.Uint32(b[p+4:]), proto: b[p],
				off: off, more: more, hdrLen: p + 8,
				data: b[p+8:], truncated: fr.ipLen > len(b),
			})
		case ipProtoHopByHop, ipProtoRouting, ipProtoDstOpts, ipProtoMobility, ipProtoHIP, ipProtoShim6, ipProtoAH:
			if len(b) < p+2 {
				return frameBad
			}
			l := (int(b[p+1]) + 1) * 8
			if nh == ipProtoAH {
				l = (int(b[p+1]) + 2) * 4
			}
			if len(b) < p+l {
				return frameBad
			}
			nh, p = b[p], p+l
		default:
			return frameNotTCPUDP
		}
		if i >= maxExtHeaders {
			return frameBad
		}
	}
}

// fragment hands a fragment to the reassembler. When it completes a datagram, fr is
// filled from the reassembled bytes (addresses were set by the caller) and the result
// is that of decoding its transport header.
func (a *Analyzer) fragment(fr *frame, p fragPiece) frameResult {
	a.stats.Fragments++
	d := a.frags.add(p, fr.src, fr.dst, a.now, &a.stats)
	if d == nil {
		return frameFragment
	}
	b := d.buf[:d.total]
	if !p.v6 {
		fr.ipLen = d.hdrLen + d.total
		return a.decodeL4(d.nextHdr, b, fr)
	}
	fr.ipLen = d.hdrLen - 8 + d.total // the fragment header is not part of the datagram
	return a.decodeIPv6Ext(d.nextHdr, b, 0, fr, false)
}

// decodeL4 decodes a TCP or UDP header at the start of b.
func (a *Analyzer) decodeL4(proto uint8, b []byte, fr *frame) frameResult {
	switch proto {
	case ipProtoTCP:
		if len(b) < 20 {
			return frameBad
		}
		doff := int(b[12]>>4) * 4
		if doff < 20 || doff > len(b) {
			return frameBad
		}
		fl := b[13]
		fr.proto = ipProtoTCP
		fr.sp, fr.dp = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		fr.tcp = tcpInfo{seq: binary.BigEndian.Uint32(b[4:]), fin: fl&0x01 != 0, syn: fl&0x02 != 0, rst: fl&0x04 != 0, ack: fl&0x10 != 0}
		fr.payload = b[doff:]
		return frameOK
	case ipProtoUDP:
		if len(b) < 8 {
			return frameBad
		}
		ul := int(binary.BigEndian.Uint16(b[4:]))
		switch {
		case ul == 0: // IPv6 jumbogram: the IP length is the bound
			fr.payload = b[8:]
		case ul < 8:
			return frameBad
		case ul <= len(b):
			fr.payload = b[8:ul]
		default: // snap length cut the datagram: inspect what was captured
			fr.payload = b[8:]
		}
		fr.proto = ipProtoUDP
		fr.sp, fr.dp = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		return frameOK
	}
	return frameNotTCPUDP
}
