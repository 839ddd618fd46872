package authz

import (
	"strings"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// A CheckRequest from Envoy is about 1 KB of headers, addresses and
// metadata around a 4.6 KB token, and a decision reads three strings of
// it. Decoding it into authv3.CheckRequest builds a map of every header,
// copies every string and checks each for valid UTF-8 (a third of a cached
// check's CPU); scanCheckRequest instead walks the encoding down to the
// three fields and points into it. Its answers are those of a full decode
// followed by requestOf, which the package's fuzz test checks on mutated
// requests.

// Field numbers on the path to what a decision reads
// (envoy/service/auth/v3/attribute_context.proto, envoy/config/core/v3/base.proto).
const (
	fieldCheckRequestAttributes = 1  // CheckRequest.attributes
	fieldAttributesRequest      = 4  // AttributeContext.request
	fieldRequestHTTP            = 2  // AttributeContext.Request.http
	fieldHTTPMethod             = 2  // AttributeContext.HttpRequest.method
	fieldHTTPHeaders            = 3  // AttributeContext.HttpRequest.headers (map<string, string>)
	fieldHTTPPath               = 4  // AttributeContext.HttpRequest.path
	fieldHTTPHeaderMap          = 13 // AttributeContext.HttpRequest.header_map
	fieldHeaderMapHeaders       = 1  // HeaderMap.headers
	fieldMapKey                 = 1  // a map entry's key; HeaderValue.key
	fieldMapValue               = 2  // a map entry's value; HeaderValue.value
	fieldHeaderValueRaw         = 3  // HeaderValue.raw_value
)

// scanCheckRequest reads into r, from the encoded CheckRequest b, what
// requestOf reads from the decoded one. Strings in r point into b. It
// follows the decoder's rules: of a field given more than once the last
// counts, a message given more than once is merged (so the headers maps
// are merged, later keys winning, and the header_map lists are
// concatenated), and a known field with another wire type is an unknown
// field, skipped. It reports false if b is not well-formed protobuf on the
// path it walks; then the caller decodes b in full, which gives the
// decoder's own error.
//
// Unlike the decoder it does not look inside the fields it skips (peers,
// metadata, other headers), so a request whose cookie is not valid UTF-8
// is judged on its token instead of failing to decode. A non-UTF-8
// Authorization header is refused either way: it is no token.
func scanCheckRequest(b []byte, r *request) bool {
	var sc scanner
	ok := eachField(b, func(num protowire.Number, v []byte) bool {
		if num != fieldCheckRequestAttributes {
			return true
		}
		return eachField(v, func(num protowire.Number, v []byte) bool {
			if num != fieldAttributesRequest {
				return true
			}
			return eachField(v, func(num protowire.Number, v []byte) bool {
				if num != fieldRequestHTTP {
					return true
				}
				return sc.http(v)
			})
		})
	})
	if !ok {
		return false
	}
	*r = request{method: sc.method, path: sc.path}
	switch {
	case sc.hasMapAuth:
		r.auth, r.hasAuth = sc.mapAuth, true
	case sc.hasListAuth:
		r.auth, r.hasAuth = sc.listAuth, true
	}
	return true
}

// scanner collects the fields of every occurrence of HttpRequest.
type scanner struct {
	method, path string
	mapAuth      string // headers["authorization"], the last entry
	hasMapAuth   bool
	listAuth     string // the first header_map entry named Authorization in any case
	hasListAuth  bool
}

// http reads one occurrence of AttributeContext.HttpRequest.
func (sc *scanner) http(b []byte) bool {
	return eachField(b, func(num protowire.Number, v []byte) bool {
		switch num {
		case fieldHTTPMethod:
			sc.method = str(v)
		case fieldHTTPPath:
			sc.path = str(v)
		case fieldHTTPHeaders:
			var key, val []byte
			ok := eachField(v, func(num protowire.Number, v []byte) bool {
				switch num {
				case fieldMapKey:
					key = v
				case fieldMapValue:
					val = v
				}
				return true
			})
			if !ok {
				return false
			}
			if string(key) == "authorization" {
				sc.mapAuth, sc.hasMapAuth = str(val), true
			}
		case fieldHTTPHeaderMap:
			return eachField(v, func(num protowire.Number, v []byte) bool {
				if num != fieldHeaderMapHeaders {
					return true
				}
				var key, val, raw []byte
				ok := eachField(v, func(num protowire.Number, v []byte) bool {
					switch num {
					case fieldMapKey:
						key = v
					case fieldMapValue:
						val = v
					case fieldHeaderValueRaw:
						raw = v
					}
					return true
				})
				if !ok {
					return false
				}
				if !sc.hasListAuth && strings.EqualFold(str(key), "authorization") {
					// An empty raw_value decodes as none: header() then takes value.
					if len(raw) > 0 {
						val = raw
					}
					sc.listAuth, sc.hasListAuth = str(val), true
				}
				return true
			})
		}
		return true
	})
}

// eachField calls f with the number and contents of every length-delimited
// field of the message b, in order, and skips fields of other wire types
// (none of the fields read has one). It stops when f returns false and
// reports whether b was well-formed and f never returned false.
func eachField(b []byte, f func(num protowire.Number, v []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if !f(num, v) {
			return false
		}
	}
	return true
}

// str views b as a string without copying: b must not change while the
// string is in use (the request's buffer is reused only after its check).
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
