// Package synth writes realistic synthetic captures for Ward's network tests, fuzz seeds
// and benchmarks: real ClientHellos from crypto/tls (TCP and QUIC flavours), QUIC Initial
// packets protected per RFC 9001/9369 (an implementation independent of the analyzer's),
// DNS messages, and Ethernet/IP/TCP/UDP framing in pcapng. It is deterministic for a given
// seed except for the key material crypto/tls draws.
package synth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/crypto/hkdf"
)

// Writer appends frames to a pcapng stream with Ethernet framing.
type Writer struct {
	w    *pcapgo.NgWriter
	buf  gopacket.SerializeBuffer
	opts gopacket.SerializeOptions
	// Now is the timestamp of the next frame; callers advance it.
	Now time.Time
	// Frames counts frames written.
	Frames int
}

// NewWriter starts a pcapng stream on w.
func NewWriter(w io.Writer, start time.Time) (*Writer, error) {
	ng, err := pcapgo.NewNgWriter(w, layers.LinkTypeEthernet)
	if err != nil {
		return nil, fmt.Errorf("pcapng writer: %w", err)
	}
	return &Writer{w: ng, buf: gopacket.NewSerializeBuffer(), opts: gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, Now: start}, nil
}

// Flush writes buffered data.
func (w *Writer) Flush() error { return w.w.Flush() }

// TCPFlags selects the flags of a synthetic segment.
type TCPFlags struct{ SYN, ACK, FIN, RST, PSH bool }

func (w *Writer) ip(src, dst netip.Addr, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.NetworkLayer, layers.EthernetType) {
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Flags: layers.IPv4DontFragment}
		return ip, ip, layers.EthernetTypeIPv4
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return ip, ip, layers.EthernetTypeIPv6
}

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

// TCP writes one TCP segment.
func (w *Writer) TCP(src, dst netip.AddrPort, seq, ack uint32, f TCPFlags, payload []byte) error {
	ipl, nl, et := w.ip(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack,
		SYN: f.SYN, ACK: f.ACK, FIN: f.FIN, RST: f.RST, PSH: f.PSH, Window: 65535}
	if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
		return err
	}
	return w.write(&layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: et}, ipl, tcp, gopacket.Payload(payload))
}

// UDP writes one UDP datagram.
func (w *Writer) UDP(src, dst netip.AddrPort, payload []byte) error {
	ipl, nl, et := w.ip(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
		return err
	}
	return w.write(&layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: et}, ipl, udp, gopacket.Payload(payload))
}

func (w *Writer) write(ls ...gopacket.SerializableLayer) error {
	if err := gopacket.SerializeLayers(w.buf, w.opts, ls...); err != nil {
		return fmt.Errorf("serialize: %w", err)
	}
	b := w.buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: w.Now, CaptureLength: len(b), Length: len(b)}
	w.Frames++
	return w.w.WritePacket(ci, b)
}

// TLSClientHello returns the first TLS record Go's client sends for cfg (a real
// ClientHello with GREASE-free Go ordering and, by default, an X25519MLKEM768 share).
func TLSClientHello(cfg *tls.Config) ([]byte, error) {
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		_ = tls.Client(c, cfg).Handshake()
		c.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		return nil, fmt.Errorf("read record header: %w", err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(s, body); err != nil {
		return nil, fmt.Errorf("read record: %w", err)
	}
	return append(hdr, body...), nil
}

// QUICClientHello returns the ClientHello handshake message crypto/tls produces for a
// QUIC client (with quic_transport_parameters).
func QUICClientHello(cfg *tls.Config) ([]byte, error) {
	q := tls.QUICClient(&tls.QUICConfig{TLSConfig: cfg})
	q.SetTransportParameters([]byte{0x04, 0x04, 0x80, 0x10, 0x00, 0x00}) // initial_max_data
	if err := q.Start(context.Background()); err != nil {
		return nil, fmt.Errorf("quic tls start: %w", err)
	}
	defer q.Close()
	for {
		e := q.NextEvent()
		switch e.Kind {
		case tls.QUICWriteData:
			if e.Level == tls.QUICEncryptionLevelInitial {
				return append([]byte(nil), e.Data...), nil
			}
		case tls.QUICNoEvent:
			return nil, errors.New("crypto/tls produced no Initial data")
		}
	}
}

// QUIC versions with their Initial salt and label prefix.
var quicSalts = map[uint32]struct {
	salt   string
	prefix string
	typ    byte
}{
	0x00000001: {"38762cf7f55934b34d179ae6a4c80cadccbb7f0a", "quic ", 0},
	0x6b3343cf: {"0dede3def700a6db819381be6e269dcbf9bd2ed9", "quicv2 ", 1},
	0xff00001d: {"afbfec289993d24c9e9786f19c6111e04390a899", "quic ", 0},
}

func expandLabel(secret []byte, label string, n int) []byte {
	full := "tls13 " + label
	info := []byte{byte(n >> 8), byte(n), byte(len(full))}
	info = append(info, full...)
	info = append(info, 0)
	out := make([]byte, n)
	_, _ = io.ReadFull(hkdf.Expand(sha256.New, secret, info), out)
	return out
}

func unhex(s string) []byte {
	out := make([]byte, len(s)/2)
	for i := range out {
		fmt.Sscanf(s[2*i:2*i+2], "%02x", &out[i])
	}
	return out
}

// CryptoFrame is one CRYPTO frame to place in an Initial.
type CryptoFrame struct {
	Offset int
	Data   []byte
}

// QUICInitial builds a protected client (or server) Initial packet carrying frames,
// padded to 1200 bytes for the client as RFC 9000 §14.1 requires. Keys come from the
// client's first DCID; a server Initial's header carries the client's SCID instead.
func QUICInitial(version uint32, dcid, scid []byte, pn uint32, server bool, frames []CryptoFrame) ([]byte, error) {
	return QUICInitialKeyed(version, dcid, dcid, scid, pn, server, frames)
}

// QUICInitialKeyed is QUICInitial with the key-deriving DCID given separately from the
// header's DCID (server Initials, and client Initials after the server chose a CID).
func QUICInitialKeyed(version uint32, keyDCID, dcid, scid []byte, pn uint32, server bool, frames []CryptoFrame) ([]byte, error) {
	v, ok := quicSalts[version]
	if !ok {
		return nil, fmt.Errorf("synth: no salt for version %#x", version)
	}
	initial := hkdf.Extract(sha256.New, keyDCID, unhex(v.salt))
	label := "client in"
	if server {
		label = "server in"
	}
	secret := expandLabel(initial, label, 32)
	key, iv, hp := expandLabel(secret, v.prefix+"key", 16), expandLabel(secret, v.prefix+"iv", 12), expandLabel(secret, v.prefix+"hp", 16)
	var payload []byte
	for _, f := range frames {
		payload = append(payload, 0x06)
		payload = appendVarint(payload, uint64(f.Offset))
		payload = appendVarint(payload, uint64(len(f.Data)))
		payload = append(payload, f.Data...)
	}
	const pnLen = 4
	hdr := []byte{0xc0 | v.typ<<4 | (pnLen - 1)}
	hdr = binary.BigEndian.AppendUint32(hdr, version)
	hdr = append(hdr, byte(len(dcid)))
	hdr = append(hdr, dcid...)
	hdr = append(hdr, byte(len(scid)))
	hdr = append(hdr, scid...)
	hdr = append(hdr, 0) // token length
	if !server {
		if need := 1200 - (len(hdr) + 2 + pnLen + len(payload) + 16); need > 0 {
			payload = append(payload, make([]byte, need)...) // PADDING frames
		}
	}
	length := pnLen + len(payload) + 16
	hdr = append(hdr, 0x40|byte(length>>8), byte(length))
	pnOff := len(hdr)
	hdr = binary.BigEndian.AppendUint32(hdr, pn)
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, 12)
	copy(nonce, iv)
	for i := 0; i < 4; i++ {
		nonce[8+i] ^= byte(pn >> (24 - 8*i))
	}
	pkt := aead.Seal(hdr, nonce, payload, hdr)
	hpb, err := aes.NewCipher(hp)
	if err != nil {
		return nil, err
	}
	mask := make([]byte, 16)
	hpb.Encrypt(mask, pkt[pnOff+4:pnOff+20])
	pkt[0] ^= mask[0] & 0x0f
	for i := 0; i < pnLen; i++ {
		pkt[pnOff+i] ^= mask[1+i]
	}
	return pkt, nil
}

func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, 0x40|byte(v>>8), byte(v))
	case v < 1<<30:
		return append(b, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, 0xc0|byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
