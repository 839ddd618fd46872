package config

import (
	"github.com/tenantguard/tenantguard/internal/config/sections"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// The sections every file shares, and the ext_authz file, live in
// internal/config/sections, which links none of the data planes (the
// ext_authz-only build depends on that); they are re-exported here for the
// sidecar's, the control plane's and the injector's files and their users.
type (
	// Duration is a time.Duration written as "5s", "250ms".
	Duration = sections.Duration
	// Error is a configuration error: which file, which field, what is wrong.
	Error = sections.Error
	// ListenerTLSFile is a listener's `tls:` section.
	ListenerTLSFile = sections.ListenerTLSFile
	// ClientTLSFile is a client's `tls:` section.
	ClientTLSFile = sections.ClientTLSFile
	// SessionsFile is the `sessions:` section as written.
	SessionsFile = sections.SessionsFile
	// Sessions is the compiled `sessions:` section.
	Sessions = sections.Sessions
	// ControlPlaneClientFile is the `controlplane:` section as written.
	ControlPlaneClientFile = sections.ControlPlaneClientFile
	// ControlPlaneClient is the compiled `controlplane:` section.
	ControlPlaneClient = sections.ControlPlaneClient
	// ExtAuthzFile is the ext_authz service's configuration file as written.
	ExtAuthzFile = sections.ExtAuthzFile
	// ExtAuthz is the compiled ext_authz configuration.
	ExtAuthz = sections.ExtAuthz
)

// LoadExtAuthz reads and validates the ext_authz configuration at path.
func LoadExtAuthz(path string) (*ExtAuthz, error) { return sections.LoadExtAuthz(path) }

// ParseExtAuthz validates ext_authz configuration text; name is used in
// errors and its directory resolves relative key paths.
func ParseExtAuthz(name string, data []byte) (*ExtAuthz, error) {
	return sections.ParseExtAuthz(name, data)
}

func decodeStrict(name string, data []byte, v any) error { return sections.DecodeStrict(name, data, v) }

func resolve(base, p string) string { return sections.Resolve(base, p) }

func expandEnv(s string) (string, error) { return sections.ExpandEnv(s) }

// fromSections turns the sections package's field error into this one's.
func fromSections(e *sections.FieldError) *fieldErr {
	if e == nil {
		return nil
	}
	return &fieldErr{field: e.Field, msg: e.Msg}
}

func readToken(base, field, inline, file string, required bool) (string, *fieldErr) {
	tok, fe := sections.ReadToken(base, field, inline, file, required)
	return tok, fromSections(fe)
}

func parseListenerTLS(f *ListenerTLSFile, base, field string) (*tlsconf.ServerFiles, *fieldErr) {
	files, fe := sections.ParseListenerTLS(f, base, field)
	return files, fromSections(fe)
}

func parseSessions(f *SessionsFile, base string, signing bool) (*Sessions, *fieldErr) {
	s, fe := sections.ParseSessions(f, base, signing)
	return s, fromSections(fe)
}

func parseControlPlaneClient(f *ControlPlaneClientFile, base, role string) (*ControlPlaneClient, *fieldErr) {
	c, fe := sections.ParseControlPlaneClient(f, base, role)
	return c, fromSections(fe)
}

func parseClientTLS(f *ClientTLSFile, base, field string) (*tlsconf.ClientFiles, *fieldErr) {
	files, fe := sections.ParseClientTLS(f, base, field)
	return files, fromSections(fe)
}
