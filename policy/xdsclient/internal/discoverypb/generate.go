package discoverypb

// discovery.pb.go is generated from discovery.proto by buf with
// protoc-gen-go, both fetched through the Go module proxy, exactly as
// policy/policypb's policy.pb.go (see its generate.go);
// TG_CHECK_GENERATED=1 go test ./policy/xdsclient/internal/discoverypb
// regenerates into a temporary directory and compares.
//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate --template buf.gen.yaml
