package policypb

import (
	"context"

	"google.golang.org/grpc"
)

// BudgetReportMethod is the connection budget's report stream (see
// budget.proto): sidecars send LoadReports, the control plane Shares.
const BudgetReportMethod = "/tenantguard.policy.v1.Budget/Report"

var budgetReportDesc = grpc.StreamDesc{StreamName: "Report", ClientStreams: true, ServerStreams: true}

// OpenBudgetReport opens the report stream on cc (a sidecar's side).
func OpenBudgetReport(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (grpc.BidiStreamingClient[LoadReport, Shares], error) {
	s, err := cc.NewStream(ctx, &budgetReportDesc, BudgetReportMethod, append([]grpc.CallOption{grpc.StaticMethod()}, opts...)...)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[LoadReport, Shares]{ClientStream: s}, nil
}

// BudgetServer is the control plane's side of the report stream.
type BudgetServer interface {
	Report(grpc.BidiStreamingServer[LoadReport, Shares]) error
}

// RegisterBudgetServer adds the Budget service to g.
func RegisterBudgetServer(g grpc.ServiceRegistrar, srv BudgetServer) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: "tenantguard.policy.v1.Budget",
		HandlerType: (*BudgetServer)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Report",
			ClientStreams: true,
			ServerStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				return srv.(BudgetServer).Report(&grpc.GenericServerStream[LoadReport, Shares]{ServerStream: stream})
			},
		}},
		Metadata: "policy/policypb/budget.proto",
	}, srv)
}
