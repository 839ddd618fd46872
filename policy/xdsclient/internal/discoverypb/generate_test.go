package discoverypb_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/internal/gencheck"
)

// TestGenerateVersions checks, without the network, that buf runs the
// protoc-gen-go of go.mod's google.golang.org/protobuf and that
// discovery.pb.go says it was made by that version.
func TestGenerateVersions(t *testing.T) { gencheck.Versions(t, "discovery.pb.go") }

// TestGeneratedFileIsCurrent regenerates discovery.pb.go with generate.go's
// exact command and compares (only with TG_CHECK_GENERATED=1: it fetches
// buf through the Go module proxy).
func TestGeneratedFileIsCurrent(t *testing.T) { gencheck.Current(t, "discovery.pb.go") }
