package traffic

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// TLS extension and handshake numbers used here (RFC 8446 §4.2, RFC 7301, RFC 9001,
// draft-ietf-tls-esni).
const (
	extServerName        = 0x0000
	extSupportedGroups   = 0x000a
	extSignatureAlgs     = 0x000d
	extALPN              = 0x0010
	extSupportedVersions = 0x002b
	extKeyShare          = 0x0033
	extQUICParams        = 0x0039
	extECH               = 0xfe0d

	hsClientHello = 1
	hsServerHello = 2

	// maxHello bounds a handshake message we will reassemble: ClientHellos with post-quantum
	// key shares are ~1.8 KB, large ones with many PSKs a few KB; 16 KiB is the record limit
	// and quic-go's MaxCryptoStreamOffset.
	maxHello = 16 << 10
)

// ClientHello is what Ward keeps of a TLS (or QUIC/DTLS) ClientHello: enough to name the
// destination and fingerprint the client, nothing else.
type ClientHello struct {
	LegacyVersion     uint16
	SNI               string
	ALPN              []string
	SupportedVersions []uint16
	Ciphers           []uint16 // wire order, GREASE included
	Extensions        []uint16 // wire order, GREASE included
	SigAlgs           []uint16 // wire order
	Groups            []uint16
	KeyShareGroups    []uint16
	ECH               bool // encrypted_client_hello extension present (real or GREASE)
	QUIC              bool // quic_transport_parameters present
}

// ServerHello is the negotiated outcome seen from the server.
type ServerHello struct {
	Version uint16 // selected version: supported_versions if present, else legacy
	Cipher  uint16
	// HelloRetry is set for a HelloRetryRequest (a ServerHello with the special random).
	HelloRetry bool
}

var helloRetryRandom = [32]byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

var errTruncated = errors.New("truncated")

// isGREASE reports RFC 8701 values (0x?a?a with equal bytes).
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

// handshakeLen returns the total length of the handshake message at the start of b
// (4-byte header included) or -1 if the header is incomplete.
func handshakeLen(b []byte) int {
	if len(b) < 4 {
		return -1
	}
	return 4 + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
}

// ParseClientHello parses a complete ClientHello handshake message (starting at the
// handshake type byte). dtls selects the DTLS layout (12-byte header already stripped by the
// caller is not assumed: pass dtls=true with the cookie field present after session id).
func ParseClientHello(msg []byte, dtls bool) (*ClientHello, error) {
	s := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !s.ReadUint8(&typ) || typ != hsClientHello {
		return nil, errors.New("not a ClientHello")
	}
	if !s.ReadUint24LengthPrefixed(&body) {
		return nil, fmt.Errorf("client hello: %w", errTruncated)
	}
	return parseClientHelloBody(body, dtls)
}

func parseClientHelloBody(body cryptobyte.String, dtls bool) (*ClientHello, error) {
	ch := &ClientHello{}
	var sid, ciphers, comp cryptobyte.String
	if !body.ReadUint16(&ch.LegacyVersion) || !body.Skip(32) || !body.ReadUint8LengthPrefixed(&sid) {
		return nil, fmt.Errorf("client hello header: %w", errTruncated)
	}
	if len(sid) > 32 {
		return nil, errors.New("client hello: session id longer than 32")
	}
	if dtls {
		var cookie cryptobyte.String
		if !body.ReadUint8LengthPrefixed(&cookie) {
			return nil, fmt.Errorf("dtls cookie: %w", errTruncated)
		}
	}
	if !body.ReadUint16LengthPrefixed(&ciphers) || len(ciphers)%2 != 0 || !body.ReadUint8LengthPrefixed(&comp) {
		return nil, fmt.Errorf("client hello ciphers: %w", errTruncated)
	}
	ch.Ciphers = make([]uint16, 0, len(ciphers)/2)
	for !ciphers.Empty() {
		var c uint16
		ciphers.ReadUint16(&c)
		ch.Ciphers = append(ch.Ciphers, c)
	}
	if body.Empty() { // extensions are optional before TLS 1.3
		return ch, nil
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) {
		return nil, fmt.Errorf("client hello extensions: %w", errTruncated)
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("extension: %w", errTruncated)
		}
		if len(ch.Extensions) >= 256 {
			return nil, errors.New("client hello: more than 256 extensions")
		}
		ch.Extensions = append(ch.Extensions, typ)
		if err := ch.parseExtension(typ, data); err != nil && typ == extServerName {
			// A malformed server_name makes the hello unusable as evidence; other
			// malformed extensions only lose their own field.
			return nil, fmt.Errorf("extension %#04x: %w", typ, err)
		}
	}
	return ch, nil
}

func readU16List(d cryptobyte.String, lenBytes int, max int) ([]uint16, error) {
	var l cryptobyte.String
	ok := false
	if lenBytes == 1 {
		ok = d.ReadUint8LengthPrefixed(&l)
	} else {
		ok = d.ReadUint16LengthPrefixed(&l)
	}
	if !ok || len(l)%2 != 0 {
		return nil, errTruncated
	}
	out := make([]uint16, 0, min(len(l)/2, max))
	for !l.Empty() && len(out) < max {
		var v uint16
		l.ReadUint16(&v)
		out = append(out, v)
	}
	return out, nil
}

func (ch *ClientHello) parseExtension(typ uint16, d cryptobyte.String) error {
	var err error
	switch typ {
	case extServerName:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) {
			return errTruncated
		}
		for !list.Empty() {
			var nt uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nt) || !list.ReadUint16LengthPrefixed(&name) {
				return errTruncated
			}
			if nt == 0 && ch.SNI == "" {
				if !validHostname(name) {
					return errors.New("server name is not a host name")
				}
				ch.SNI = strings.ToLower(string(name))
			}
		}
	case extALPN:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) {
			return errTruncated
		}
		for !list.Empty() {
			var p cryptobyte.String
			if !list.ReadUint8LengthPrefixed(&p) {
				return errTruncated
			}
			if len(ch.ALPN) < 16 {
				ch.ALPN = append(ch.ALPN, string(p))
			}
		}
	case extSupportedVersions:
		ch.SupportedVersions, err = readU16List(d, 1, 64)
	case extSignatureAlgs:
		ch.SigAlgs, err = readU16List(d, 2, 128)
	case extSupportedGroups:
		ch.Groups, err = readU16List(d, 2, 128)
	case extKeyShare:
		var list cryptobyte.String
		if !d.ReadUint16LengthPrefixed(&list) {
			return errTruncated
		}
		for !list.Empty() {
			var g uint16
			var kx cryptobyte.String
			if !list.ReadUint16(&g) || !list.ReadUint16LengthPrefixed(&kx) {
				return errTruncated
			}
			if len(ch.KeyShareGroups) < 16 {
				ch.KeyShareGroups = append(ch.KeyShareGroups, g)
			}
		}
	case extECH:
		ch.ECH = true
	case extQUICParams:
		ch.QUIC = true
	}
	return err
}

// validHostname accepts what can appear in SNI on the real Internet (letters, digits, '-',
// '_', '.') and rejects anything that could smuggle control bytes into logs.
func validHostname(b []byte) bool {
	if len(b) == 0 || len(b) > 253 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// ParseServerHello parses a complete ServerHello handshake message.
func ParseServerHello(msg []byte, dtls bool) (*ServerHello, error) {
	s := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !s.ReadUint8(&typ) || typ != hsServerHello {
		return nil, errors.New("not a ServerHello")
	}
	if !s.ReadUint24LengthPrefixed(&body) {
		return nil, fmt.Errorf("server hello: %w", errTruncated)
	}
	sh := &ServerHello{}
	var random []byte
	var sid cryptobyte.String
	var comp uint8
	if !body.ReadUint16(&sh.Version) || !body.ReadBytes(&random, 32) || !body.ReadUint8LengthPrefixed(&sid) ||
		!body.ReadUint16(&sh.Cipher) || !body.ReadUint8(&comp) {
		return nil, fmt.Errorf("server hello header: %w", errTruncated)
	}
	sh.HelloRetry = [32]byte(random) == helloRetryRandom
	if body.Empty() {
		return sh, nil
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) {
		return nil, fmt.Errorf("server hello extensions: %w", errTruncated)
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("server extension: %w", errTruncated)
		}
		if typ == extSupportedVersions {
			var v uint16
			if !data.ReadUint16(&v) {
				return nil, fmt.Errorf("selected version: %w", errTruncated)
			}
			sh.Version = v
		}
	}
	return sh, nil
}

// TLSVersionName renders a protocol version for flow records ("TLS 1.3", "DTLS 1.2").
func TLSVersionName(v uint16) string {
	switch v {
	case 0x0304:
		return "TLS 1.3"
	case 0x0303:
		return "TLS 1.2"
	case 0x0302:
		return "TLS 1.1"
	case 0x0301:
		return "TLS 1.0"
	case 0x0300:
		return "SSL 3.0"
	case 0xfeff:
		return "DTLS 1.0"
	case 0xfefd:
		return "DTLS 1.2"
	case 0xfefc:
		return "DTLS 1.3"
	case 0:
		return ""
	}
	return fmt.Sprintf("0x%04x", v)
}

// tls13OrLater orders TLS and DTLS versions; DTLS numbers count down.
func tlsAtLeast13(v uint16) bool { return v == 0x0304 || v == 0xfefc }

// MaxVersion is the highest non-GREASE version the client offers (supported_versions when
// present, as JA4 specifies, else the legacy field).
func (ch *ClientHello) MaxVersion() uint16 {
	var best uint16
	for _, v := range ch.SupportedVersions {
		if isGREASE(v) {
			continue
		}
		if best == 0 || versionRank(v) > versionRank(best) {
			best = v
		}
	}
	if best == 0 {
		best = ch.LegacyVersion
	}
	return best
}

func versionRank(v uint16) int {
	if v>>8 == 0xfe { // DTLS: 0xfeff=1.0, 0xfefd=1.2, 0xfefc=1.3
		return int(0xff - v&0xff)
	}
	return int(v)
}

func ja4Version(v uint16) string {
	switch v {
	case 0x0304:
		return "13"
	case 0x0303:
		return "12"
	case 0x0302:
		return "11"
	case 0x0301:
		return "10"
	case 0x0300:
		return "s3"
	case 0x0002:
		return "s2"
	case 0xfeff:
		return "d1"
	case 0xfefd:
		return "d2"
	case 0xfefc:
		return "d3"
	}
	return "00"
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// JA4 computes the FoxIO JA4 fingerprint (BSD-3-Clause spec). transport is 't' (TCP),
// 'q' (QUIC) or 'd' (DTLS).
//
// It builds the fingerprint in stack buffers (one allocation, the result): it runs for
// every TLS and QUIC flow.
func (ch *ClientHello) JA4(transport byte) string {
	var out [40]byte
	b := append(out[:0], transport)
	b = append(b, ja4Version(ch.MaxVersion())...)
	if slices.Contains(ch.Extensions, extServerName) {
		b = append(b, 'd')
	} else {
		b = append(b, 'i')
	}
	ciphers := make([]uint16, 0, 128)
	for _, c := range ch.Ciphers {
		if !isGREASE(c) {
			ciphers = append(ciphers, c)
		}
	}
	exts := make([]uint16, 0, 64)
	nExt := 0
	for _, e := range ch.Extensions {
		if isGREASE(e) {
			continue
		}
		nExt++
		if e != extServerName && e != extALPN {
			exts = append(exts, e)
		}
	}
	b = append2d(b, min(len(ciphers), 99))
	b = append2d(b, min(nExt, 99))
	if len(ch.ALPN) > 0 && ch.ALPN[0] != "" {
		a := ch.ALPN[0]
		f, l := a[0], a[len(a)-1]
		if isAlnum(f) && isAlnum(l) {
			b = append(b, f, l)
		} else {
			const digits = "0123456789abcdef"
			b = append(b, digits[f>>4], digits[l&0x0f])
		}
	} else {
		b = append(b, "00"...)
	}
	b = append(b, '_')
	slices.Sort(ciphers)
	var text [1024]byte
	b = appendJA4Hash(b, appendHexList(text[:0], ciphers), len(ciphers) == 0)
	b = append(b, '_')
	slices.Sort(exts)
	t := appendHexList(text[:0], exts)
	first := true
	for _, s := range ch.SigAlgs {
		if isGREASE(s) {
			continue
		}
		if first {
			t = append(t, '_')
			first = false
		} else {
			t = append(t, ',')
		}
		t = appendHex4(t, s)
	}
	b = appendJA4Hash(b, t, len(exts) == 0)
	return string(b)
}

func append2d(b []byte, n int) []byte { return append(b, '0'+byte(n/10), '0'+byte(n%10)) }

func appendHex4(b []byte, v uint16) []byte {
	const digits = "0123456789abcdef"
	return append(b, digits[v>>12], digits[v>>8&0xf], digits[v>>4&0xf], digits[v&0xf])
}

// appendHexList appends v as comma-separated four-digit lowercase hex (the JA4 input).
func appendHexList(b []byte, v []uint16) []byte {
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendHex4(b, x)
	}
	return b
}

// appendJA4Hash appends the first 12 hex digits of SHA-256(text), or twelve zeros.
func appendJA4Hash(b, text []byte, empty bool) []byte {
	if empty {
		return append(b, "000000000000"...)
	}
	sum := sha256.Sum256(text)
	return hex.AppendEncode(b, sum[:6])
}
