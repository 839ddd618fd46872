package authz

import (
	"encoding/hex"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
)

// answer is an encoded CheckResponse, made once and sent many times: the
// denials when the server starts, an allowed request's answer the first
// time its verdict is used. gRPC writes wire as it is (its buffer's Free
// does nothing), so one answer serves any number of concurrent checks.
type answer struct {
	wire mem.BufferSlice
}

func newAnswer(b []byte) *answer { return &answer{wire: mem.BufferSlice{mem.SliceBuffer(b)}} }

// encodeAnswer encodes resp; it cannot fail for the responses this
// package builds.
func encodeAnswer(resp *authv3.CheckResponse) *answer {
	b, err := proto.Marshal(resp)
	if err != nil {
		panic("authz: encode a CheckResponse: " + err.Error())
	}
	return newAnswer(b)
}

// okAnswer is an allowed request's answer, kept with the token's verdict
// (session.Verdict.SetMemo) so that a token in use is answered without
// encoding anything. A token's first answer is encoded and not kept, and
// its verdict only marked (wire nil): most first-seen tokens of a busy
// service are seen again, but those that are not should not hold 250
// bytes each until they expire.
type okAnswer struct {
	strip bool // made with the Authorization header stripped
	answer
	buf [1]mem.Buffer // wire's backing array
}

var seenOnce = &okAnswer{}

// allow returns vd's answer with the current strip setting, from its memo
// or made now.
func (s *Server) allow(vd *session.Verdict) *answer {
	strip := s.strip.Load()
	memo, _ := vd.Memo().(*okAnswer)
	if memo != nil && memo.wire != nil && memo.strip == strip {
		return &memo.answer
	}
	a := &okAnswer{strip: strip}
	a.buf[0] = mem.SliceBuffer(appendOK(make([]byte, 0, 256), vd.Claims(), strip))
	a.wire = a.buf[:]
	if memo == nil {
		vd.SetMemo(seenOnce)
	} else {
		vd.SetMemo(a)
	}
	return &a.answer
}

// Field numbers of the allowed answer (envoy/service/auth/v3/external_auth.proto,
// envoy/config/core/v3/base.proto).
const (
	fieldResponseStatus          = 1 // CheckResponse.status (google.rpc.Status; code 0 is the empty message)
	fieldResponseOK              = 3 // CheckResponse.ok_response
	fieldOKHeaders               = 2 // OkHttpResponse.headers
	fieldOKHeadersToRemove       = 5 // OkHttpResponse.headers_to_remove
	fieldOptionHeader            = 1 // HeaderValueOption.header
	fieldOptionAppendAction      = 3 // HeaderValueOption.append_action
	appendOverwriteIfExistsOrAdd = 2
)

// appendOK appends the encoding of okResponse(c, strip) to b: the same
// message, written directly (a test decodes it and compares).
func appendOK(b []byte, c token.Claims, strip bool) []byte {
	var sid [2 * len(token.SessionID{})]byte
	hex.Encode(sid[:], c.SessionID[:])
	headers := [...][2]string{{HeaderTenant, c.TenantID}, {HeaderUser, c.UserID}, {HeaderSession, string(sid[:])}}
	okLen := 0
	for _, h := range headers {
		okLen += protowire.SizeTag(fieldOKHeaders) + protowire.SizeBytes(optionLen(h[0], h[1]))
	}
	if strip {
		okLen += protowire.SizeTag(fieldOKHeadersToRemove) + protowire.SizeBytes(len("authorization"))
	}
	b = protowire.AppendTag(b, fieldResponseStatus, protowire.BytesType)
	b = protowire.AppendVarint(b, 0)
	b = protowire.AppendTag(b, fieldResponseOK, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(okLen))
	for _, h := range headers {
		b = protowire.AppendTag(b, fieldOKHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(optionLen(h[0], h[1])))
		b = protowire.AppendTag(b, fieldOptionHeader, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(headerLen(h[0], h[1])))
		b = protowire.AppendTag(b, fieldMapKey, protowire.BytesType)
		b = protowire.AppendString(b, h[0])
		b = protowire.AppendTag(b, fieldMapValue, protowire.BytesType)
		b = protowire.AppendString(b, h[1])
		b = protowire.AppendTag(b, fieldOptionAppendAction, protowire.VarintType)
		b = protowire.AppendVarint(b, appendOverwriteIfExistsOrAdd)
	}
	if strip {
		b = protowire.AppendTag(b, fieldOKHeadersToRemove, protowire.BytesType)
		b = protowire.AppendString(b, "authorization")
	}
	return b
}

// headerLen is the size of a HeaderValue{key, value}.
func headerLen(k, v string) int {
	return protowire.SizeTag(fieldMapKey) + protowire.SizeBytes(len(k)) + protowire.SizeTag(fieldMapValue) + protowire.SizeBytes(len(v))
}

// optionLen is the size of a HeaderValueOption{header, OVERWRITE_IF_EXISTS_OR_ADD}.
func optionLen(k, v string) int {
	return protowire.SizeTag(fieldOptionHeader) + protowire.SizeBytes(headerLen(k, v)) +
		protowire.SizeTag(fieldOptionAppendAction) + protowire.SizeVarint(appendOverwriteIfExistsOrAdd)
}
