package redis

import (
	"fmt"

	"github.com/tenantguard/tenantguard/policy"
)

// SetSessionEnd changes how connections whose token session is revoked or
// expires are ended, from the next such end on (a pushed policy's
// sessions.end_mode).
func (srv *Server) SetSessionEnd(m policy.SessionEndMode) error {
	switch m {
	case policy.SessionEndImmediate, policy.SessionEndBoundary:
	default:
		return fmt.Errorf("session end mode %q: want %q or %q", m, policy.SessionEndImmediate, policy.SessionEndBoundary)
	}
	srv.endMode.Store(&m)
	return nil
}

// SessionEnd is the mode in force: the configured one until SetSessionEnd.
func (srv *Server) SessionEnd() policy.SessionEndMode {
	if m := srv.endMode.Load(); m != nil {
		return *m
	}
	return srv.cfg.SessionEnd
}
