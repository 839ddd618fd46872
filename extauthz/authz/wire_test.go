package authz

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
)

// The fast path (Register: scanCheckRequest, encoded answers) must answer
// exactly as Check does on the decoded request. These tests compare the
// two on the same inputs.

// signatures checks tokens with a token.Verifier alone (no store).
type signatures struct{ v *token.Verifier }

func (s signatures) Verify(_ context.Context, tok string) (*session.Verdict, error) {
	c, err := s.v.Verify(tok, time.Now())
	if err != nil {
		return nil, err
	}
	return session.NewVerdict(c), nil
}

func newSignatureServer(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	key, err := token.GenerateKey("wire")
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	c, err := token.NewClaims("acme", "alice@example.com", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := key.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return New(signatures{v}, opts, nil, nil), tok
}

// browserRequest is a CheckRequest as Envoy sends it, with headers set
// both in the headers map (h) and in header_map (raw, when not nil).
func browserRequest(h map[string]string, raw []*corev3.HeaderValue) *authv3.CheckRequest {
	headers := map[string]string{
		":authority": "app.example.com", ":method": "GET", ":path": "/orders?page=2", ":scheme": "https",
		"user-agent": "Mozilla/5.0", "cookie": "theme=dark", "x-request-id": "3c9f2a8e-7c1b-4d5e-9f1a-2b3c4d5e6f70",
	}
	for k, v := range h {
		headers[k] = v
	}
	hr := &authv3.AttributeContext_HttpRequest{Id: "1", Method: "GET", Headers: headers, Path: "/orders?page=2", Host: "app.example.com", Scheme: "https"}
	if raw != nil {
		hr.Headers = h
		hr.HeaderMap = &corev3.HeaderMap{Headers: raw}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51544}}}}},
		Request:           &authv3.AttributeContext_Request{Http: hr},
		ContextExtensions: map[string]string{"virtual_host": "app"},
	}}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wireRequests are encodings that stress the decoder's rules: merged
// messages, repeated fields, unknown fields with a known number.
func wireRequests(t testing.TB, tok string) map[string][]byte {
	t.Helper()
	bearer := "Bearer " + tok
	enc := func(m proto.Message) []byte { return mustMarshal(t, m) }
	out := map[string][]byte{
		"browser":           enc(browserRequest(map[string]string{"authorization": bearer}, nil)),
		"no authorization":  enc(browserRequest(nil, nil)),
		"empty":             nil,
		"raw header map":    enc(browserRequest(nil, []*corev3.HeaderValue{{Key: "Accept", Value: "*/*"}, {Key: "Authorization", RawValue: []byte(bearer)}})),
		"header map value":  enc(browserRequest(nil, []*corev3.HeaderValue{{Key: "authorization", Value: bearer}})),
		"empty raw value":   enc(browserRequest(nil, []*corev3.HeaderValue{{Key: "AUTHORIZATION", Value: bearer, RawValue: []byte{}}})),
		"first in list":     enc(browserRequest(nil, []*corev3.HeaderValue{{Key: "authorization", Value: "Basic x"}, {Key: "authorization", Value: bearer}})),
		"map beats list":    enc(browserRequest(map[string]string{"authorization": bearer}, []*corev3.HeaderValue{{Key: "authorization", Value: "Basic x"}})),
		"no scheme":         enc(browserRequest(map[string]string{"authorization": tok}, nil)),
		"empty auth header": enc(browserRequest(map[string]string{"authorization": ""}, nil)),
	}
	// A message given twice is merged: the second http's headers add to
	// the first's, later keys win; scalars take the last value.
	first := enc(browserRequest(map[string]string{"authorization": "Basic x"}, nil))
	second := enc(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: "POST", Path: "/later", Headers: map[string]string{"authorization": bearer}}}}})
	out["merged"] = append(append([]byte{}, first...), second...)
	out["merged, first wins"] = append(append([]byte{}, second...), enc(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{}})...)
	// A known field with another wire type is an unknown field.
	bogus := protowire.AppendTag(nil, fieldCheckRequestAttributes, protowire.VarintType)
	bogus = protowire.AppendVarint(bogus, 7)
	out["unknown wire type"] = append(bogus, out["browser"]...)
	// A map entry given its key twice takes the last; one without a value
	// has "".
	entry := protowire.AppendTag(nil, fieldMapKey, protowire.BytesType)
	entry = protowire.AppendString(entry, "x")
	entry = protowire.AppendTag(entry, fieldMapKey, protowire.BytesType)
	entry = protowire.AppendString(entry, "authorization")
	httpMsg := protowire.AppendTag(nil, fieldHTTPHeaders, protowire.BytesType)
	httpMsg = protowire.AppendBytes(httpMsg, entry)
	out["entry without value"] = wrapHTTP(httpMsg)
	// raw_value given, then given empty: the last counts, and an empty one
	// decodes as none, so value is used.
	hv := protowire.AppendTag(nil, fieldMapKey, protowire.BytesType)
	hv = protowire.AppendString(hv, "Authorization")
	hv = protowire.AppendTag(hv, fieldMapValue, protowire.BytesType)
	hv = protowire.AppendString(hv, bearer)
	hv = protowire.AppendTag(hv, fieldHeaderValueRaw, protowire.BytesType)
	hv = protowire.AppendString(hv, "Basic x")
	hv = protowire.AppendTag(hv, fieldHeaderValueRaw, protowire.BytesType)
	hv = protowire.AppendString(hv, "")
	hm := protowire.AppendTag(nil, fieldHeaderMapHeaders, protowire.BytesType)
	hm = protowire.AppendBytes(hm, hv)
	httpMsg = protowire.AppendTag(nil, fieldHTTPHeaderMap, protowire.BytesType)
	httpMsg = protowire.AppendBytes(httpMsg, hm)
	out["raw value emptied"] = wrapHTTP(httpMsg)
	return out
}

// wrapHTTP wraps an encoded HttpRequest into a CheckRequest.
func wrapHTTP(http []byte) []byte {
	req := protowire.AppendTag(nil, fieldRequestHTTP, protowire.BytesType)
	req = protowire.AppendBytes(req, http)
	attrs := protowire.AppendTag(nil, fieldAttributesRequest, protowire.BytesType)
	attrs = protowire.AppendBytes(attrs, req)
	b := protowire.AppendTag(nil, fieldCheckRequestAttributes, protowire.BytesType)
	return protowire.AppendBytes(b, attrs)
}

// decodeRequest is the reference: a full decode and requestOf.
func decodeRequest(b []byte) (request, error) {
	var m authv3.CheckRequest
	if err := proto.Unmarshal(b, &m); err != nil {
		return request{}, err
	}
	return requestOf(&m), nil
}

func TestScanMatchesDecode(t *testing.T) {
	_, tok := newSignatureServer(t, Options{})
	for name, b := range wireRequests(t, tok) {
		t.Run(name, func(t *testing.T) {
			want, err := decodeRequest(b)
			if err != nil {
				t.Fatalf("reference decode: %v", err)
			}
			var got request
			if !scanCheckRequest(b, &got) {
				t.Fatal("scan refused a request that decodes")
			}
			if got != want {
				t.Errorf("scan = %+v\n want %+v", short(got), short(want))
			}
		})
	}
}

// short abbreviates the token in r for messages.
func short(r request) request {
	if len(r.auth) > 40 {
		r.auth = r.auth[:40] + "…"
	}
	return r
}

// FuzzScan: whenever a full decode succeeds, the scan succeeds and reads
// the same; when the decode fails, the scan may succeed (it does not look
// into fields it skips) but must not panic.
func FuzzScan(f *testing.F) {
	for _, b := range wireRequests(f, "tg1.AAAA.BBBB") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got request
		ok := scanCheckRequest(b, &got)
		want, err := decodeRequest(b)
		if err != nil {
			return
		}
		if !ok {
			t.Fatalf("scan refused a request that decodes: %x", b)
		}
		if got != want {
			t.Fatalf("scan = %+v, decode = %+v", got, want)
		}
	})
}

// viaRegister answers an encoded request as Register's handler does.
func viaRegister(t testing.TB, s *Server, b []byte) (*authv3.CheckResponse, error) {
	t.Helper()
	c := codec{proto: encoding.GetCodecV2("proto")}
	dec := func(v any) error { return c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, v) }
	out, err := checkHandler(s, context.Background(), dec, nil)
	if err != nil {
		return nil, err
	}
	wire, err := c.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	var resp authv3.CheckResponse
	if err := proto.Unmarshal(wire.Materialize(), &resp); err != nil {
		t.Fatalf("the encoded answer does not decode: %v", err)
	}
	return &resp, nil
}

// viaCheck answers a request as Check does after a full decode.
func viaCheck(s *Server, b []byte) (*authv3.CheckResponse, error) {
	var req authv3.CheckRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return nil, err
	}
	return s.Check(context.Background(), &req)
}

func TestRegisterAnswersAsCheck(t *testing.T) {
	for _, strip := range []bool{true, false} {
		s, tok := newSignatureServer(t, Options{StripAuthorization: strip, TenantAllowed: func(id string) bool { return id == "acme" }})
		reqs := wireRequests(t, tok)
		reqs["tampered"] = mustMarshal(t, browserRequest(map[string]string{"authorization": "Bearer " + tok[:len(tok)-1] + "A"}, nil))
		reqs["malformed"] = mustMarshal(t, browserRequest(map[string]string{"authorization": "Bearer tg1.x.y"}, nil))
		reqs["other version"] = mustMarshal(t, browserRequest(map[string]string{"authorization": "Bearer tg2.x.y"}, nil))
		for name, b := range reqs {
			t.Run(name, func(t *testing.T) {
				want, err := viaCheck(s, b)
				if err != nil {
					t.Fatal(err)
				}
				for i := range 2 { // the second time, an allowed answer comes from the verdict's memo
					got, err := viaRegister(t, s, b)
					if err != nil {
						t.Fatal(err)
					}
					if !proto.Equal(got, want) {
						t.Fatalf("answer %d via Register:\n%v\nvia Check:\n%v", i, got, want)
					}
				}
			})
		}
	}
}

// TestAllowFollowsStrip: an answer kept with a verdict is remade when the
// strip setting changes.
func TestAllowFollowsStrip(t *testing.T) {
	s, tok := newSignatureServer(t, Options{StripAuthorization: true})
	vd, err := s.checker.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, strip := range []bool{true, false, true} {
		s.SetStripAuthorization(strip)
		var got authv3.CheckResponse
		if err := proto.Unmarshal(s.allow(vd).wire.Materialize(), &got); err != nil {
			t.Fatal(err)
		}
		if want := okResponse(vd.Claims(), strip); !proto.Equal(&got, want) {
			t.Fatalf("strip %v: %v, want %v", strip, &got, want)
		}
	}
}

func TestRegisterRefusesGarbage(t *testing.T) {
	s, _ := newSignatureServer(t, Options{})
	bad := []byte{0x0a, 0x05, 0x01} // attributes, 5 bytes long, 1 given
	if _, err := viaRegister(t, s, bad); err == nil || !strings.Contains(err.Error(), "decode CheckRequest") {
		t.Fatalf("err = %v, want a decode error", err)
	}
}

// FuzzWire: any Authorization header, in the headers map or raw in
// header_map, gets the same answer through Register as through Check.
func FuzzWire(f *testing.F) {
	s, tok := newSignatureServer(f, Options{StripAuthorization: true})
	for _, seed := range []string{"", "Bearer ", "Bearer " + tok, "bearer  " + tok, "Basic x", "Bearer tg1.", "Bearer " + tok[:100], tok} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, hdr string, raw bool) {
		req := browserRequest(map[string]string{"authorization": hdr}, nil)
		if raw {
			req = browserRequest(nil, []*corev3.HeaderValue{{Key: "Authorization", RawValue: []byte(hdr)}})
		}
		b, err := proto.Marshal(req)
		if err != nil {
			return // not valid UTF-8: Envoy would send it raw
		}
		want, err := viaCheck(s, b)
		if err != nil {
			return
		}
		got, err := viaRegister(t, s, b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("via Register:\n%v\nvia Check:\n%v", got, want)
		}
	})
}
