package traffic

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// ReadCapture feeds every packet of a pcap or pcapng stream to a, in file order, and
// returns how many packets it read. Link types may differ per pcapng interface. A file
// cut short (a capture still being written, a truncated download) ends the read without
// error; any other read error is returned after the packets before it were analysed.
// It does not call Flush.
func ReadCapture(r io.Reader, a *Analyzer) (int, error) {
	if f, ok := r.(*os.File); ok {
		if n, mapped, err := readMappedFile(f, a); mapped {
			return n, err
		}
	}
	return readStream(r, a)
}

// readStream reads captures that cannot be mapped (pipes, sockets) with pcapgo.
func readStream(r io.Reader, a *Analyzer) (int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return 0, fmt.Errorf("read capture header: %w", err)
	}
	type source interface {
		ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	}
	var src source
	var linkType func(ci gopacket.CaptureInfo) layers.LinkType
	switch binary.LittleEndian.Uint32(magic) {
	case 0x0a0d0d0a: // pcapng section header block
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return 0, fmt.Errorf("open pcapng: %w", err)
		}
		src = ng
		linkType = func(ci gopacket.CaptureInfo) layers.LinkType {
			if len(ci.AncillaryData) > 0 {
				if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
					return lt
				}
			}
			return ng.LinkType()
		}
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1:
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("open pcap: %w", err)
		}
		lt := pr.LinkType()
		src = pr
		linkType = func(gopacket.CaptureInfo) layers.LinkType { return lt }
	default:
		return 0, fmt.Errorf("not a pcap or pcapng file (magic %x)", magic)
	}
	n := 0
	for {
		data, ci, err := src.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return n, nil
			}
			return n, fmt.Errorf("capture packet %d: %w", n+1, err)
		}
		n++
		a.Packet(ci.Timestamp, linkType(ci), data)
	}
}
