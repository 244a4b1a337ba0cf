package traffic

import (
	"bytes"
	"strings"
)

var httpMethods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("HEAD "), []byte("DELETE "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "),
}

// looksHTTP reports whether b starts like an HTTP/1.x request.
func looksHTTP(b []byte) bool {
	for _, m := range httpMethods {
		if len(b) >= len(m) && bytes.Equal(b[:len(m)], m) {
			return true
		}
		if len(b) < len(m) && bytes.HasPrefix(m, b) {
			return true // too short to tell yet
		}
	}
	return false
}

// ParseHTTPHost returns the host named by an HTTP/1.x request head: the Host header, or
// the authority of a CONNECT request (a proxy tunnel). complete is false while the head
// has not ended and no Host line was seen yet.
func ParseHTTPHost(b []byte) (host string, complete bool) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	head := b
	if end >= 0 {
		head = b[:end+2]
	}
	line, rest, ok := bytes.Cut(head, []byte("\r\n"))
	if !ok {
		return "", false
	}
	if target, ok := bytes.CutPrefix(line, []byte("CONNECT ")); ok {
		if sp := bytes.IndexByte(target, ' '); sp > 0 {
			return cleanHost(string(target[:sp])), true
		}
	}
	for len(rest) > 0 {
		var l []byte
		l, rest, ok = bytes.Cut(rest, []byte("\r\n"))
		if !ok && end < 0 {
			return "", false // header line not complete yet
		}
		if len(l) > 5 && (l[0] == 'H' || l[0] == 'h') && strings.EqualFold(string(l[:5]), "host:") {
			return cleanHost(string(bytes.TrimSpace(l[5:]))), true
		}
	}
	return "", end >= 0
}

// cleanHost strips a port and brackets and rejects anything that is not a plain host.
func cleanHost(h string) string {
	if strings.HasPrefix(h, "[") { // [v6]:port
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	if !validHostname([]byte(h)) {
		return ""
	}
	return strings.ToLower(h)
}
