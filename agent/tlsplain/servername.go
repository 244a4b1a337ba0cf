package tlsplain

import (
	"bytes"
	"net"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// http2Preface starts every HTTP/2 connection (RFC 9113 §3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// ServerName finds the server a client addressed in the first plaintext of a connection:
// the Host header of an HTTP/1.x request or the :authority of the first HTTP/2 HEADERS
// frame. done is true when the answer is final (found, or this is not HTTP); false means
// more bytes may still tell. The name is lower case without a port.
func ServerName(b []byte) (name string, done bool) {
	switch {
	case bytes.HasPrefix(b, []byte(http2Preface)):
		return http2Authority(b[len(http2Preface):])
	case len(b) < len(http2Preface) && bytes.HasPrefix([]byte(http2Preface), b):
		return "", false
	}
	return http1Host(b)
}

func http1Host(b []byte) (string, bool) {
	// Request line: METHOD SP target SP HTTP/1.x CRLF; methods are upper-case tokens.
	sp := -1
	for i, c := range b[:min(len(b), 17)] {
		if c == ' ' {
			sp = i
			break
		}
		if c < 'A' || c > 'Z' {
			return "", true // not an HTTP request
		}
	}
	if sp <= 0 {
		return "", sp == 0 || len(b) > 16
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	head := b
	if end >= 0 {
		head = b[:end+2]
	}
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("host")) {
			return cleanHost(string(bytes.TrimSpace(v))), true
		}
	}
	return "", end >= 0
}

func http2Authority(b []byte) (string, bool) {
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags := b[3], b[4]
		if len(b) < 9+n {
			return "", false
		}
		payload := b[9 : 9+n]
		b = b[9+n:]
		if typ != 0x1 { // HEADERS; SETTINGS and WINDOW_UPDATE come first
			continue
		}
		if flags&0x8 != 0 { // PADDED
			if len(payload) < 1 || int(payload[0]) >= len(payload) {
				return "", true
			}
			payload = payload[1 : len(payload)-int(payload[0])]
		}
		if flags&0x20 != 0 { // PRIORITY
			if len(payload) < 5 {
				return "", true
			}
			payload = payload[5:]
		}
		var name string
		dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
			if f.Name == ":authority" && name == "" {
				name = f.Value
			}
		})
		dec.SetMaxStringLength(1024)
		_, _ = dec.Write(payload) // a fragment split over CONTINUATION frames ends early: keep what was read
		return cleanHost(name), true
	}
	return "", false
}

// cleanHost lower-cases a host[:port] and drops the port and IPv6 brackets.
func cleanHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.Trim(h, "[]")
	if len(h) > 253 {
		return ""
	}
	// A name or an IP literal: anything else is not a server name (and must not reach
	// policy or the event as arbitrary bytes).
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':') {
			return ""
		}
	}
	return strings.ToLower(h)
}
