package traffic

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r as one JSON object, the same document encoding/json produces for
// FlowRecord (field names, omitempty rules), without reflection: at a million packets per
// second the offline reader emits tens of thousands of records per second and reflection
// cost more than parsing them. prefix is written first inside the object (e.g.
// `"type":"flow",`).
func (r *FlowRecord) AppendJSON(b []byte, prefix string) []byte {
	b = append(b, '{')
	b = append(b, prefix...)
	b = appendStr(b, "proto", r.Proto, false)
	b = appendAddrPort(b, "client", r.Client)
	b = appendAddrPort(b, "server", r.Server)
	if r.Process != nil {
		p, err := json.Marshal(r.Process)
		if err == nil {
			b = append(b, `,"process":`...)
			b = append(b, p...)
		}
	}
	b = appendStr(b, "app", r.App, true)
	b = appendStr(b, "app_name", r.AppName, true)
	b = appendStr(b, "vendor", r.Vendor, true)
	b = appendStr(b, "category", r.Category, true)
	if r.Risk != 0 {
		b = append(b, `,"risk":`...)
		b = strconv.AppendInt(b, int64(r.Risk), 10)
	}
	b = appendStr(b, "baa", r.BAA, true)
	b = appendStr(b, "status", string(r.Status), false)
	b = appendStr(b, "tenant", r.Tenant, true)
	b = appendStr(b, "name", r.Name, true)
	b = appendStr(b, "name_source", string(r.NameSource), true)
	b = appendStr(b, "protocol", r.Protocol, true)
	b = appendStr(b, "sni", r.SNI, true)
	b = appendList(b, "alpn", r.ALPN)
	b = appendStr(b, "ja4", r.JA4, true)
	b = appendStr(b, "tls_version", r.TLSVersion, true)
	b = appendStr(b, "tls_client_max", r.TLSClientMax, true)
	b = appendStr(b, "tls_cipher", r.TLSCipher, true)
	if r.ECH {
		b = append(b, `,"ech":true`...)
	}
	b = appendStr(b, "quic_version", r.QUICVersion, true)
	b = appendStr(b, "dns_query", r.DNSQuery, true)
	b = appendStr(b, "stun_realm", r.STUNRealm, true)
	b = appendList(b, "flags", r.Flags)
	b = appendUint(b, "bytes_up", r.BytesUp)
	b = appendUint(b, "bytes_down", r.BytesDown)
	b = appendUint(b, "packets_up", r.PacketsUp)
	b = appendUint(b, "packets_down", r.PacketsDown)
	b = appendTime(b, "start", r.Start)
	b = appendTime(b, "end", r.End)
	return append(b, '}')
}

func appendKey(b []byte, k string) []byte {
	if len(b) > 0 && b[len(b)-1] != '{' && b[len(b)-1] != ',' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

func appendStr(b []byte, k, v string, omitEmpty bool) []byte {
	if omitEmpty && v == "" {
		return b
	}
	return appendJSONString(appendKey(b, k), v)
}

func appendUint(b []byte, k string, v uint64) []byte {
	return strconv.AppendUint(appendKey(b, k), v, 10)
}

func appendAddrPort(b []byte, k string, v netip.AddrPort) []byte {
	b = append(appendKey(b, k), '"')
	if v.IsValid() {
		b = v.AppendTo(b)
	}
	return append(b, '"')
}

func appendTime(b []byte, k string, t time.Time) []byte {
	b = append(appendKey(b, k), '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendList(b []byte, k string, v []string) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(appendKey(b, k), '[')
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString quotes s as encoding/json does with HTML escaping off.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, "0123456789abcdef"[r&15])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
