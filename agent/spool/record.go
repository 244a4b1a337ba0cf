package spool

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Record framing on disk:
//
//	[4] payload length, little endian
//	[4] CRC32C over the seq bytes and the payload
//	[8] seq, little endian
//	[n] payload: a marshalled wardv1.Event
//
// The seq is duplicated in the header so recovery and Ack never need to unmarshal
// events, and the CRC covers it so a flipped seq cannot be mistaken for a real one.
const headerSize = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errShortRecord means the bytes end before the record does (a torn write).
var errShortRecord = errors.New("record extends past end of segment")

// errBadRecord means the header is implausible or the checksum does not match.
var errBadRecord = errors.New("record checksum or length invalid")

// appendRecord frames payload into dst and returns the extended slice.
func appendRecord(dst []byte, seq uint64, payload []byte) []byte {
	var hdr [headerSize]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(hdr[8:16], seq)
	c := crc32.Update(0, castagnoli, hdr[8:16])
	c = crc32.Update(c, castagnoli, payload)
	binary.LittleEndian.PutUint32(hdr[4:8], c)
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// parseHeader decodes a header; it checks only what it can without the payload.
func parseHeader(hdr []byte, maxPayload int) (n int, crc uint32, seq uint64, err error) {
	if len(hdr) < headerSize {
		return 0, 0, 0, errShortRecord
	}
	n = int(binary.LittleEndian.Uint32(hdr[0:4]))
	crc = binary.LittleEndian.Uint32(hdr[4:8])
	seq = binary.LittleEndian.Uint64(hdr[8:16])
	if n <= 0 || n > maxPayload || seq == 0 {
		return 0, 0, 0, errBadRecord
	}
	return n, crc, seq, nil
}

// checkRecord verifies the checksum of a header and payload pair.
func checkRecord(hdr, payload []byte, crc uint32) bool {
	c := crc32.Update(0, castagnoli, hdr[8:16])
	c = crc32.Update(c, castagnoli, payload)
	return c == crc
}
