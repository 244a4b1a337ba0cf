package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"syscall"
	"time"

	"github.com/gopacket/gopacket/layers"
)

// maxFrame bounds one captured frame (the largest snap length tools use is 256 KiB).
const maxFrame = 256 << 10

// readMappedFile maps a regular capture file and analyses it in place: no read syscalls
// per block and no copy per packet, which is most of the cost of a streaming reader at
// millions of packets per second. ok is false when the file cannot be mapped (the caller
// then streams it).
func readMappedFile(f *os.File, a *Analyzer) (n int, ok bool, err error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() < 24 || st.Size() > 1<<40 {
		return 0, false, nil
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		return 0, false, nil
	}
	defer func() { _ = syscall.Munmap(data) }()
	_ = syscall.Madvise(data, syscall.MADV_SEQUENTIAL)
	n, err = readImage(data, a)
	return n, true, err
}

// readImage parses a whole pcap or pcapng image held in memory. It validates every
// length against the image before slicing; a truncated last record ends the capture
// quietly, anything else malformed is an error after the packets before it.
func readImage(b []byte, a *Analyzer) (int, error) {
	if len(b) < 4 {
		return 0, errors.New("capture shorter than its magic number")
	}
	switch binary.LittleEndian.Uint32(b) {
	case 0x0a0d0d0a:
		return readNg(b, a)
	case 0xa1b2c3d4, 0xa1b23c4d:
		return readPcap(b, a, binary.LittleEndian)
	case 0xd4c3b2a1, 0x4d3cb2a1:
		return readPcap(b, a, binary.BigEndian)
	}
	return 0, fmt.Errorf("not a pcap or pcapng file (magic %x)", b[:4])
}

func readPcap(b []byte, a *Analyzer, bo binary.ByteOrder) (int, error) {
	if len(b) < 24 {
		return 0, errors.New("pcap header truncated")
	}
	nano := bo.Uint32(b) == 0xa1b23c4d
	lt := layers.LinkType(bo.Uint32(b[20:]) & 0xffff)
	n := 0
	for off := 24; off+16 <= len(b); {
		sec, frac := int64(bo.Uint32(b[off:])), int64(bo.Uint32(b[off+4:]))
		incl := int(bo.Uint32(b[off+8:]))
		if incl > maxFrame {
			return n, fmt.Errorf("pcap record %d: captured length %d", n+1, incl)
		}
		if off+16+incl > len(b) {
			return n, nil // truncated last record
		}
		if !nano {
			frac *= 1000
		}
		if next := off + 16 + incl; next+128 <= len(b) {
			prefetch(&b[next])
		}
		n++
		a.Packet(time.Unix(sec, frac), lt, b[off+16:off+16+incl])
		off += 16 + incl
	}
	return n, nil
}

type ngIface struct {
	lt     layers.LinkType
	resol  byte  // if_tsresol
	offset int64 // if_tsoffset, seconds
}

// ngTime converts a pcapng timestamp in the interface's resolution to a time.
func (i *ngIface) ngTime(ts uint64) time.Time {
	var ns uint64
	switch {
	case i.resol&0x80 != 0: // 2^-k seconds
		k := uint(i.resol & 0x7f)
		hi, lo := bits.Mul64(ts, 1e9)
		if k == 0 {
			ns = lo
		} else if k < 64 {
			ns = hi<<(64-k) | lo>>k
		}
	case i.resol <= 9:
		ns = ts * pow10[9-i.resol]
	case i.resol <= 19:
		ns = ts / pow10[i.resol-9]
	}
	return time.Unix(i.offset, int64(ns))
}

var pow10 = [...]uint64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10}

func readNg(b []byte, a *Analyzer) (int, error) {
	var bo binary.ByteOrder = binary.LittleEndian
	var ifaces []ngIface
	n := 0
	for off := 0; off+12 <= len(b); {
		typ := bo.Uint32(b[off:])
		if typ == 0x0a0d0d0a { // section header: byte order from its magic
			switch binary.LittleEndian.Uint32(b[off+8:]) {
			case 0x1a2b3c4d:
				bo = binary.LittleEndian
			case 0x4d3c2b1a:
				bo = binary.BigEndian
			default:
				return n, errors.New("pcapng section header with a bad byte-order magic")
			}
			ifaces = ifaces[:0]
		}
		l := int(bo.Uint32(b[off+4:]))
		if l < 12 || l%4 != 0 {
			return n, fmt.Errorf("pcapng block at %d: length %d", off, l)
		}
		if off+l > len(b) {
			return n, nil // truncated last block
		}
		if next := off + l; next+128 <= len(b) {
			prefetch(&b[next]) // the next block's header and first bytes, while this one is analysed
		}
		body := b[off+8 : off+l-4]
		switch typ {
		case 1: // interface description
			if len(body) < 8 {
				return n, errors.New("pcapng interface block truncated")
			}
			if len(ifaces) >= 4096 {
				return n, errors.New("pcapng: more than 4096 interfaces")
			}
			ifc := ngIface{lt: layers.LinkType(bo.Uint16(body)), resol: 6}
			for o := body[8:]; len(o) >= 4; {
				code, ol := bo.Uint16(o), int(bo.Uint16(o[2:]))
				if code == 0 || 4+ol > len(o) {
					break
				}
				v := o[4 : 4+ol]
				switch {
				case code == 9 && ol >= 1:
					ifc.resol = v[0]
				case code == 14 && ol >= 8:
					ifc.offset = int64(bo.Uint64(v))
				}
				o = o[min(len(o), 4+(ol+3)&^3):]
			}
			ifaces = append(ifaces, ifc)
		case 6, 2: // enhanced packet, obsolete packet
			if len(body) < 20 {
				return n, errors.New("pcapng packet block truncated")
			}
			var id int
			if typ == 6 {
				id = int(bo.Uint32(body))
			} else {
				id = int(bo.Uint16(body))
			}
			caplen := int(bo.Uint32(body[12:]))
			if id >= len(ifaces) || caplen > len(body)-20 || caplen > maxFrame {
				return n, fmt.Errorf("pcapng packet %d: interface %d of %d, captured length %d", n+1, id, len(ifaces), caplen)
			}
			ifc := &ifaces[id]
			ts := uint64(bo.Uint32(body[4:]))<<32 | uint64(bo.Uint32(body[8:]))
			n++
			a.Packet(ifc.ngTime(ts), ifc.lt, body[20:20+caplen])
		case 3: // simple packet: interface 0, no timestamp
			if len(body) < 4 || len(ifaces) == 0 {
				return n, errors.New("pcapng simple packet block without an interface")
			}
			caplen := min(int(bo.Uint32(body)), len(body)-4, maxFrame)
			n++
			a.Packet(time.Unix(0, a.now), ifaces[0].lt, body[4:4+caplen])
		}
		off += l
	}
	return n, nil
}
