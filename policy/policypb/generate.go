package policypb

// policy.pb.go is generated from policy.proto by buf with protoc-gen-go,
// both fetched through the Go module proxy; the protoc-gen-go version is the
// google.golang.org/protobuf version of go.mod (TestGenerateVersions checks
// that). TG_CHECK_GENERATED=1 go test ./policy/policypb regenerates into a
// temporary directory and compares.
//go:generate go run github.com/bufbuild/buf/cmd/buf@v1.75.0 generate --template buf.gen.yaml
