package authz

import (
	"context"
	"fmt"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec that codec falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Register serves s as envoy.service.auth.v3.Authorization on gs, which
// must have been made with ServerOptions: Check requests are read with
// scanCheckRequest instead of being decoded, and answers are sent as
// encoded once (see answer). The answers are those of Check.
func (s *Server) Register(gs *grpc.Server) { gs.RegisterService(&serviceDesc, s) }

// ServerOptions are what a grpc.Server needs for Register: the codec that
// hands Check its request undecoded and sends encoded answers as they are.
// Every other message, of every other service on the server, goes through
// gRPC's usual protobuf codec.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2("proto")})}
}

// serviceDesc is authv3.Authorization_ServiceDesc with Check's handler
// replaced.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

var checkInfo = &grpc.UnaryServerInfo{FullMethod: authv3.Authorization_Check_FullMethodName}

// checkHandler is the gRPC handler of Check under Register.
func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Server)
	in := views.Get().(*checkView)
	defer in.release()
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor != nil {
		// Interceptors expect Envoy's types: give them the request decoded.
		req := new(authv3.CheckRequest)
		if err := proto.Unmarshal(in.buf, req); err != nil {
			return nil, err
		}
		return interceptor(ctx, req, checkInfo, func(ctx context.Context, req any) (any, error) {
			return s.Check(ctx, req.(*authv3.CheckRequest))
		})
	}
	start := time.Now()
	result, vd := s.decide(ctx, &in.req)
	out := s.denials[result]
	if vd != nil {
		out = s.allow(vd)
	}
	s.m.observe(result, start)
	return out, nil
}

// checkView is a Check request as the decision reads it: the encoded
// message, copied out of gRPC's buffers, and the strings read from it.
// Views are pooled; one is in use from the decoding of a request until its
// answer is chosen.
type checkView struct {
	buf []byte
	req request
}

// maxPooledView bounds the buffer a pooled view keeps: a request bigger
// than any Envoy sends in practice (64 KiB of headers) is not kept.
const maxPooledView = 64 << 10

var views = sync.Pool{New: func() any { return new(checkView) }}

func (v *checkView) release() {
	v.req = request{}
	if cap(v.buf) > maxPooledView {
		v.buf = nil
	}
	views.Put(v)
}

// decode reads the request in v.buf, in full only if the scan fails.
func (v *checkView) decode() error {
	if scanCheckRequest(v.buf, &v.req) {
		return nil
	}
	req := new(authv3.CheckRequest)
	if err := proto.Unmarshal(v.buf, req); err != nil {
		return err
	}
	v.req = requestOf(req)
	return nil
}

// codec is the server's codec under Register: Check's request goes to a
// checkView, an answer is sent as encoded, and everything else goes
// through proto.
type codec struct{ proto encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.(*answer); ok {
		return a.wire, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	cv, ok := v.(*checkView)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	cv.buf = cv.buf[:0]
	for _, b := range data {
		cv.buf = append(cv.buf, b.ReadOnlyData()...)
	}
	if err := cv.decode(); err != nil {
		return fmt.Errorf("decode CheckRequest: %w", err)
	}
	return nil
}

func (codec) Name() string { return "proto" }
