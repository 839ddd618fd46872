//go:build !sidecar && !extauthz

package main

import (
	"testing"

	"github.com/tenantguard/tenantguard/internal/inject"
)

// The hooks' default wait is the injected sidecar's startup timeout.
func TestInjectWaitTimeout(t *testing.T) {
	if injectWaitTimeout != inject.DefaultStartupTimeout {
		t.Fatalf("injectWaitTimeout %v, inject.DefaultStartupTimeout %v", injectWaitTimeout, inject.DefaultStartupTimeout)
	}
}
