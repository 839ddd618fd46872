package policypb_test

import (
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

func TestTypeURL(t *testing.T) {
	a, err := anypb.New(&policypb.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != policypb.TypeURL {
		t.Fatalf("an Any of a Policy has type URL %q, TypeURL is %q", a.GetTypeUrl(), policypb.TypeURL)
	}
	if err := policypb.Validate(&policypb.Policy{Name: policypb.DefaultName}); err != nil {
		t.Fatalf("DefaultName is not a valid name: %v", err)
	}
}
