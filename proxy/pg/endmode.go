package pg

import "github.com/tenantguard/tenantguard/policy"

// SetSessionEnd changes how connections whose token session is revoked or
// expires are ended, from the next such end on (a pushed policy's
// sessions.end_mode).
func (srv *Server) SetSessionEnd(m policy.SessionEndMode) error { return srv.endMode.Set(m) }

// SessionEnd is the mode in force: the configured one until SetSessionEnd.
func (srv *Server) SessionEnd() policy.SessionEndMode { return srv.endMode.Get() }
