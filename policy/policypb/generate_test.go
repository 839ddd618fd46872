package policypb_test

import (
	"os"
	"testing"

	"github.com/tenantguard/tenantguard/internal/gencheck"
)

// TestGenerateVersions checks, without the network, that buf runs the
// protoc-gen-go of go.mod's google.golang.org/protobuf and that
// policy.pb.go says it was made by that version.
func TestGenerateVersions(t *testing.T) { gencheck.Versions(t, "policy.pb.go") }

// TestGeneratedFileIsCurrent regenerates policy.pb.go with generate.go's
// exact command and compares (only with TG_CHECK_GENERATED=1: it fetches
// buf through the Go module proxy).
func TestGeneratedFileIsCurrent(t *testing.T) { gencheck.Current(t, "policy.pb.go") }

// readFile returns a file of the package directory.
func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
