package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// requestIDPlaceholder is the x-request-id of an encoded request; load
// overwrites it in place with a fresh id for every Check, as Envoy sends a
// new UUID per request. Same length as a UUID.
const requestIDPlaceholder = "00000000-0000-4000-8000-000000000000"

// checkRequest is the CheckRequest Envoy's ext_authz HTTP filter sends for
// a browser's GET of an API page carrying a session token: the downstream
// and upstream addresses, the request time, every request header (a
// browser's, plus what Envoy adds), and the route's context_extensions.
func checkRequest(tok string, i int) *authv3.CheckRequest {
	sock := func(addr string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
	}
	path := "/api/v1/orders?page=2&sort=-created_at"
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      sock(fmt.Sprintf("10.1.%d.%d", i/250%250, i%250+1), uint32(40000+i%20000)),
		Destination: sock("10.1.200.17", 8080),
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Unix(1767225600, 123456789)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:     fmt.Sprint(9223372036854775807 - uint64(i)),
				Method: "GET",
				Headers: map[string]string{
					":authority":               "app.example.com",
					":method":                  "GET",
					":path":                    path,
					":scheme":                  "https",
					"user-agent":               "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
					"accept":                   "application/json, text/plain, */*",
					"accept-language":          "en-GB,en;q=0.9,de;q=0.8",
					"accept-encoding":          "gzip, deflate, br, zstd",
					"referer":                  "https://app.example.com/orders",
					"cookie":                   "_ga=GA1.1.1234567890.1767225600; theme=dark; locale=en-GB; _ga_XYZ123=GS1.1.1767225600.3.1.1767229200.0.0.0; consent=analytics%3Dfalse%2Cmarketing%3Dfalse",
					"sec-fetch-site":           "same-origin",
					"sec-fetch-mode":           "cors",
					"sec-fetch-dest":           "empty",
					"x-forwarded-for":          fmt.Sprintf("203.0.113.%d", i%250+1),
					"x-forwarded-proto":        "https",
					"x-envoy-external-address": fmt.Sprintf("203.0.113.%d", i%250+1),
					"x-request-id":             requestIDPlaceholder,
					"authorization":            "Bearer " + tok,
				},
				Path:     path,
				Host:     "app.example.com",
				Scheme:   "https",
				Protocol: "HTTP/1.1",
			},
		},
		ContextExtensions: map[string]string{"virtual_host": "app", "route": "api"},
		MetadataContext:   &corev3.Metadata{},
	}}
}

// encodedRequest is one Check's request as a gRPC message (the 5-byte
// length prefix and the protobuf), with the offset of its x-request-id.
type encodedRequest struct {
	msg   []byte
	reqID int
}

// encodeRequest marshals req into a gRPC length-prefixed message.
func encodeRequest(req *authv3.CheckRequest) (encodedRequest, error) {
	pb, err := proto.Marshal(req)
	if err != nil {
		return encodedRequest{}, err
	}
	msg := make([]byte, 5, 5+len(pb))
	binary.BigEndian.PutUint32(msg[1:], uint32(len(pb)))
	msg = append(msg, pb...)
	off := bytes.Index(msg, []byte(requestIDPlaceholder))
	if off < 0 {
		return encodedRequest{}, fmt.Errorf("x-request-id not found in the encoded request")
	}
	return encodedRequest{msg: msg, reqID: off}, nil
}

// setRequestID writes a fresh UUID-shaped request id for request n.
func (r encodedRequest) setRequestID(n uint64) {
	const hex = "0123456789abcdef"
	b := r.msg[r.reqID+24 : r.reqID+36] // the last group: 12 hex digits
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = hex[n&15]
		n >>= 4
	}
}

// checkResponseOK reports whether a CheckResponse's status code is OK
// (google.rpc.Status.code, field 1 of field 1; absent means 0) and, if
// not, the denied response's body (field 2, body field 3) for the error.
func checkResponseOK(b []byte) (bool, string) {
	code, body := uint64(0), ""
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, "unparseable CheckResponse"
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false, "unparseable CheckResponse"
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false, "unparseable CheckResponse"
		}
		b = b[n:]
		switch num {
		case 1: // status
			for len(v) > 0 {
				num, typ, n := protowire.ConsumeTag(v)
				if n < 0 {
					return false, "unparseable status"
				}
				v = v[n:]
				if num == 1 && typ == protowire.VarintType {
					code, n = protowire.ConsumeVarint(v)
				} else {
					n = protowire.ConsumeFieldValue(num, typ, v)
				}
				if n < 0 {
					return false, "unparseable status"
				}
				v = v[n:]
			}
		case 2: // denied_response
			var d authv3.DeniedHttpResponse
			if proto.Unmarshal(v, &d) == nil {
				body = d.GetBody()
			}
		}
	}
	return code == 0, body
}
