package traffic

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// quicVersion describes how to derive Initial keys for one QUIC version (RFC 9001 §5.2,
// RFC 9369 §3.3) and which long-header type value means Initial.
type quicVersion struct {
	name        string
	salt        []byte
	labelPrefix string // "quic " or "quicv2 "
	initialType byte   // long packet type bits of an Initial
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var (
	saltV1      = mustHex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
	saltV2      = mustHex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
	saltDraft29 = mustHex("afbfec289993d24c9e9786f19c6111e04390a899")
	saltDraft23 = mustHex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")
	saltDraft22 = mustHex("7fbcdb0e7c66bbe9193a96cd21519ebd7a02644a")
)

// lookupQUICVersion returns the key schedule for a wire version, or nil for versions Ward
// cannot decrypt (gQUIC, GREASE 0x?a?a?a?a, Version Negotiation 0).
func lookupQUICVersion(v uint32) *quicVersion {
	switch {
	case v == 0x00000001:
		return &qvV1
	case v == 0x6b3343cf:
		return &qvV2
	case v >= 0xff00001d && v <= 0xff000022: // draft-29..34 share the draft-29 salt
		return &qvDraft29
	case v >= 0xff000017 && v <= 0xff00001c: // draft-23..28
		return &qvDraft23
	case v == 0xfaceb001: // mvfst draft-22
		return &qvMvfst22
	case v == 0xfaceb002 || v == 0xfaceb00e: // mvfst on the draft-23 salt
		return &qvMvfst23
	}
	return nil
}

var (
	qvV1      = quicVersion{"v1", saltV1, "quic ", 0}
	qvV2      = quicVersion{"v2", saltV2, "quicv2 ", 1}
	qvDraft29 = quicVersion{"draft-29", saltDraft29, "quic ", 0}
	qvDraft23 = quicVersion{"draft-23", saltDraft23, "quic ", 0}
	qvMvfst22 = quicVersion{"mvfst-22", saltDraft22, "quic ", 0}
	qvMvfst23 = quicVersion{"mvfst-23", saltDraft23, "quic ", 0}
)

// QUICVersionName names a wire version for flow records.
func QUICVersionName(v uint32) string {
	if qv := lookupQUICVersion(v); qv != nil {
		return qv.name
	}
	return fmt.Sprintf("0x%08x", v)
}

// quicKeys are one direction's Initial packet protection keys.
type quicKeys struct {
	aead cipher.AEAD
	iv   [12]byte
	hp   cipher.Block
}

// hkdfExpandLabel is TLS 1.3's HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
// Every output Ward needs is at most one SHA-256 block, so HKDF-Expand reduces to a single
// HMAC over info||0x01 (RFC 5869 §2.3), computed without the io.Reader machinery.
func hkdfExpandLabel(secret []byte, label string, length int) []byte {
	if length > sha256.Size {
		panic("hkdfExpandLabel: output longer than one block")
	}
	var info [96]byte
	full := len("tls13 ") + len(label)
	b := binary.BigEndian.AppendUint16(info[:0], uint16(length))
	b = append(b, byte(full))
	b = append(b, "tls13 "...)
	b = append(b, label...)
	b = append(b, 0, 1) // empty context, then the HKDF block counter
	sum := hmacSHA256(secret, b)
	return sum[:length]
}

// hmacSHA256 is HMAC-SHA256 (RFC 2104) for the short keys and messages of the QUIC
// Initial key schedule, on stack buffers. crypto/hmac allocates two hash states per call
// and the schedule needs seven HMACs per connection, which made key derivation the most
// expensive step of reading a QUIC flow. Longer inputs take crypto/hmac; the RFC 9001 and
// RFC 9369 vectors and a comparison with crypto/hmac test both paths.
func hmacSHA256(key, msg []byte) [sha256.Size]byte {
	const block = 64
	var inner [block + 128]byte
	if len(key) > block || len(msg) > len(inner)-block {
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		return [sha256.Size]byte(m.Sum(nil))
	}
	var outer [block + sha256.Size]byte
	copy(inner[:block], key)
	for i := range block {
		outer[i] = inner[i] ^ 0x5c
		inner[i] ^= 0x36
	}
	copy(inner[block:], msg)
	ih := sha256.Sum256(inner[:block+len(msg)])
	copy(outer[block:], ih[:])
	return sha256.Sum256(outer[:])
}

// initialSecrets derives the client and server Initial secrets from the client's first
// Destination Connection ID.
func initialSecrets(qv *quicVersion, dcid []byte) (client, server []byte) {
	ext := hmacSHA256(qv.salt, dcid) // HKDF-Extract(salt, IKM=dcid), RFC 5869 §2.2
	initial := ext[:]
	return hkdfExpandLabel(initial, "client in", 32), hkdfExpandLabel(initial, "server in", 32)
}

func newQUICKeys(qv *quicVersion, secret []byte) (*quicKeys, error) {
	key := hkdfExpandLabel(secret, qv.labelPrefix+"key", 16)
	iv := hkdfExpandLabel(secret, qv.labelPrefix+"iv", 12)
	hpKey := hkdfExpandLabel(secret, qv.labelPrefix+"hp", 16)
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("quic aead key: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, fmt.Errorf("quic gcm: %w", err)
	}
	hp, err := aes.NewCipher(hpKey)
	if err != nil {
		return nil, fmt.Errorf("quic hp key: %w", err)
	}
	k := &quicKeys{aead: aead, hp: hp}
	copy(k.iv[:], iv)
	return k, nil
}

// readVarint reads a QUIC variable-length integer (RFC 9000 §16).
func readVarint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0, false
	}
	v = uint64(b[0] & 0x3f)
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n, true
}

// longHeader is the parsed, still-protected long header of one QUIC packet.
type longHeader struct {
	version  uint32
	typ      byte // raw 2-bit long packet type
	dcid     []byte
	scid     []byte
	pnOffset int // offset of the packet number within the packet
	end      int // offset just past this packet (Length field), = len for Retry
	hasLen   bool
}

var errNotLong = errors.New("not a QUIC long header")

// parseLongHeader parses the long header at the start of b. qv may be nil for unknown
// versions; then only Initial/0-RTT/Handshake layout of v1 is assumed for skipping.
func parseLongHeader(b []byte) (longHeader, error) {
	var h longHeader
	if len(b) < 7 || b[0]&0x80 == 0 {
		return h, errNotLong
	}
	h.version = binary.BigEndian.Uint32(b[1:5])
	h.typ = (b[0] >> 4) & 3
	p := 5
	dl := int(b[p])
	p++
	if dl > 20 || len(b) < p+dl+1 {
		return h, fmt.Errorf("quic dcid length %d: %w", dl, errTruncated)
	}
	h.dcid = b[p : p+dl]
	p += dl
	sl := int(b[p])
	p++
	if sl > 20 || len(b) < p+sl {
		return h, fmt.Errorf("quic scid length %d: %w", sl, errTruncated)
	}
	h.scid = b[p : p+sl]
	p += sl
	if h.version == 0 { // Version Negotiation: rest is a version list
		h.end = len(b)
		return h, nil
	}
	qv := lookupQUICVersion(h.version)
	isInitial := qv != nil && h.typ == qv.initialType
	isRetry := qv != nil && h.typ == (qv.initialType+3)&3
	if isRetry {
		h.end = len(b)
		return h, nil
	}
	if isInitial {
		tl, n, ok := readVarint(b[p:])
		if !ok || uint64(len(b)-p-n) < tl {
			return h, fmt.Errorf("quic token: %w", errTruncated)
		}
		p += n + int(tl)
	}
	l, n, ok := readVarint(b[p:])
	if !ok {
		return h, fmt.Errorf("quic length: %w", errTruncated)
	}
	p += n
	if uint64(len(b)-p) < l {
		return h, fmt.Errorf("quic length %d beyond datagram: %w", l, errTruncated)
	}
	h.pnOffset = p
	h.end = p + int(l)
	h.hasLen = true
	return h, nil
}

// decodePN expands a truncated packet number (RFC 9000 §A.3).
func decodePN(largest int64, truncated uint64, pnLen int) uint64 {
	expected := uint64(largest + 1)
	win := uint64(1) << (pnLen * 8)
	hwin := win / 2
	mask := win - 1
	cand := (expected &^ mask) | truncated
	if cand+hwin <= expected && cand < (1<<62)-win {
		return cand + win
	}
	if cand > expected+hwin && cand >= win {
		return cand - win
	}
	return cand
}

// openInitial removes header protection and decrypts one Initial packet (RFC 9001 §5.3,
// §5.4) without modifying pkt. scratch is reused for the header copy and the plaintext.
// It returns the plaintext payload and the full packet number.
func openInitial(k *quicKeys, pkt []byte, h longHeader, largest int64, scratchp *[]byte) (plain []byte, pn uint64, err error) {
	scratch := *scratchp
	if h.pnOffset+4+16 > h.end {
		return nil, 0, fmt.Errorf("quic initial too short for a header-protection sample: %w", errTruncated)
	}
	var mask [16]byte
	k.hp.Encrypt(mask[:], pkt[h.pnOffset+4:h.pnOffset+20])
	b0 := pkt[0] ^ (mask[0] & 0x0f)
	pnLen := int(b0&3) + 1
	hdrLen := h.pnOffset + pnLen
	if cap(scratch) < hdrLen+h.end {
		scratch = make([]byte, 0, hdrLen+h.end)
		*scratchp = scratch
	}
	hdr := scratch[:hdrLen]
	copy(hdr, pkt[:hdrLen])
	hdr[0] = b0
	var trunc uint64
	for i := 0; i < pnLen; i++ {
		hdr[h.pnOffset+i] ^= mask[1+i]
		trunc = trunc<<8 | uint64(hdr[h.pnOffset+i])
	}
	pn = decodePN(largest, trunc, pnLen)
	var nonce [12]byte
	nonce = k.iv
	var pnb [8]byte
	binary.BigEndian.PutUint64(pnb[:], pn)
	for i := 0; i < 8; i++ {
		nonce[4+i] ^= pnb[i]
	}
	ct := pkt[hdrLen:h.end]
	if len(ct) < k.aead.Overhead() {
		return nil, 0, fmt.Errorf("quic initial payload: %w", errTruncated)
	}
	out, err := k.aead.Open(scratch[hdrLen:hdrLen], nonce[:], ct, hdr)
	if err != nil {
		return nil, 0, fmt.Errorf("quic initial decrypt: %w", err)
	}
	return out, pn, nil
}

// cryptoFrames walks the frames of a decrypted Initial payload and hands every CRYPTO
// frame's (offset, data) to fn. Only frames allowed in Initial packets are accepted
// (RFC 9000 §12.4); anything else ends the walk with an error after the frames before it.
func cryptoFrames(p []byte, fn func(off uint64, data []byte)) error {
	for len(p) > 0 {
		t := p[0]
		switch {
		case t == 0x00: // PADDING
			i := 1
			for i < len(p) && p[i] == 0 {
				i++
			}
			p = p[i:]
		case t == 0x01: // PING
			p = p[1:]
		case t == 0x02 || t == 0x03: // ACK
			q := p[1:]
			var vals [4]uint64
			for i := range vals {
				v, n, ok := readVarint(q)
				if !ok {
					return fmt.Errorf("ack frame: %w", errTruncated)
				}
				vals[i], q = v, q[n:]
			}
			ranges := vals[2]
			if ranges > 256 {
				return errors.New("ack frame: too many ranges")
			}
			skip := int(ranges) * 2
			if t == 0x03 {
				skip += 3
			}
			for i := 0; i < skip; i++ {
				_, n, ok := readVarint(q)
				if !ok {
					return fmt.Errorf("ack frame: %w", errTruncated)
				}
				q = q[n:]
			}
			p = q
		case t == 0x06: // CRYPTO
			q := p[1:]
			off, n, ok := readVarint(q)
			if !ok {
				return fmt.Errorf("crypto frame: %w", errTruncated)
			}
			q = q[n:]
			l, n, ok := readVarint(q)
			if !ok || uint64(len(q)-n) < l {
				return fmt.Errorf("crypto frame: %w", errTruncated)
			}
			q = q[n:]
			fn(off, q[:l])
			p = q[l:]
		case t == 0x1c || t == 0x1d: // CONNECTION_CLOSE
			q := p[1:]
			cnt := 2
			if t == 0x1d {
				cnt = 1
			}
			for i := 0; i < cnt; i++ {
				_, n, ok := readVarint(q)
				if !ok {
					return fmt.Errorf("connection close: %w", errTruncated)
				}
				q = q[n:]
			}
			l, n, ok := readVarint(q)
			if !ok || uint64(len(q)-n) < l {
				return fmt.Errorf("connection close: %w", errTruncated)
			}
			p = q[n+int(l):]
		default:
			return fmt.Errorf("frame type %#x not allowed in an Initial packet", t)
		}
	}
	return nil
}

// quicState is one flow's QUIC Initial decoder: keys from the client's first DCID, CRYPTO
// streams reassembled by offset for each direction, bounded by maxHello.
type quicState struct {
	version      uint32
	qv           *quicVersion
	dcid         []byte
	keys         [2]*quicKeys // [0] client→server, [1] server→client
	serverSecret []byte
	crypto       [2]*prefixBuf
	largest      [2]int64
	hello        *ClientHello
	server       *ServerHello
	initials     int
	failures     int
	helloError   error
}

// maxQUICInitials bounds how many Initial packets per flow are decrypted (UDP/443 floods).
const maxQUICInitials = 16

func newQUICState() *quicState { return &quicState{largest: [2]int64{-1, -1}} }

// datagram processes one UDP payload of the flow in direction dir (0 = from the client).
// It returns an error only for malformed input worth counting.
func (q *quicState) datagram(dir int, b []byte, scratch *[]byte) error {
	var firstErr error
	for len(b) > 0 {
		if b[0]&0x80 == 0 { // short header: nothing more we can read
			return firstErr
		}
		h, err := parseLongHeader(b)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return firstErr
		}
		qv := lookupQUICVersion(h.version)
		if qv != nil && h.typ == qv.initialType && h.hasLen {
			if err := q.initial(dir, qv, b[:h.end], h, scratch); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		if h.end <= 0 || h.end > len(b) {
			break
		}
		b = b[h.end:]
		// Trailing zero padding after coalesced packets is legal.
		if len(b) > 0 && b[0] == 0 {
			break
		}
	}
	return firstErr
}

func (q *quicState) initial(dir int, qv *quicVersion, pkt []byte, h longHeader, scratch *[]byte) error {
	if q.initials >= maxQUICInitials {
		return nil
	}
	q.initials++
	if dir == 0 && q.qv == nil {
		if err := q.derive(qv, h.version, h.dcid); err != nil {
			return err
		}
	}
	if dir == 1 && q.keys[1] == nil && q.serverSecret != nil {
		// Server keys are derived only when a server Initial shows up.
		sk, err := newQUICKeys(q.qv, q.serverSecret)
		if err != nil {
			return err
		}
		q.keys[1] = sk
	}
	k := q.keys[dir]
	if k == nil {
		return nil // server Initial before we saw the client's: no keys
	}
	plain, pn, err := openInitial(k, pkt, h, q.largest[dir], scratch)
	if err != nil && dir == 0 && !bytes.Equal(h.dcid, q.dcid) {
		// After a Retry (or a new connection on the same 5-tuple) the client's keys come
		// from its new DCID; a client that merely switched to the server's CID keeps the
		// first keys, so only adopt the new ones when they authenticate.
		saved := *q
		if derr := q.derive(qv, h.version, h.dcid); derr == nil {
			plain, pn, err = openInitial(q.keys[0], pkt, h, -1, scratch)
		}
		if err != nil {
			*q = saved
		}
	}
	if err != nil {
		q.failures++
		return err
	}
	if int64(pn) > q.largest[dir] {
		q.largest[dir] = int64(pn)
	}
	if q.crypto[dir] == nil {
		q.crypto[dir] = newPrefixBuf(maxHello)
	}
	cb := q.crypto[dir]
	ferr := cryptoFrames(plain, func(off uint64, data []byte) {
		if off < maxHello {
			if off == 0 {
				cb.reserve(handshakeLen(data))
			}
			cb.add(int(off), data)
		} else {
			cb.overflow = true
		}
	})
	q.tryParse(dir)
	if ferr != nil {
		return fmt.Errorf("quic frames: %w", ferr)
	}
	return nil
}

func (q *quicState) derive(qv *quicVersion, version uint32, dcid []byte) error {
	cs, ss := initialSecrets(qv, dcid)
	ck, err := newQUICKeys(qv, cs)
	if err != nil {
		return err
	}
	q.qv, q.version = qv, version
	q.dcid = bytes.Clone(dcid)
	q.keys = [2]*quicKeys{ck, nil}
	q.serverSecret = ss
	q.crypto = [2]*prefixBuf{}
	q.largest = [2]int64{-1, -1}
	return nil
}

func (q *quicState) tryParse(dir int) {
	c := q.crypto[dir].contiguous()
	n := handshakeLen(c)
	if n < 0 || n > len(c) {
		return
	}
	if dir == 0 && q.hello == nil {
		ch, err := ParseClientHello(c[:n], false)
		if err != nil {
			q.helloError = err
			return
		}
		q.hello = ch
	}
	if dir == 1 && q.server == nil {
		if sh, err := ParseServerHello(c[:n], false); err == nil {
			q.server = sh
		}
	}
}

// done reports whether everything Ward wants from this flow's Initials is known.
func (q *quicState) done() bool {
	return q.hello != nil && q.server != nil || q.initials >= maxQUICInitials
}
