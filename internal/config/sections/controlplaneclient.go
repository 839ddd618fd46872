package sections

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/tenantguard/tenantguard/internal/bearer"
	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// ControlPlaneClientFile is the `controlplane:` section of a sidecar's or
// ext_authz's configuration: where to take policy from.
type ControlPlaneClientFile struct {
	// Address of the control plane's xDS listener.
	Address string `yaml:"address"`
	// NodeID names this instance to the control plane; default the host
	// name and the process id. ${VAR} takes a variable from the
	// environment, so that an injected sidecar is named by its pod
	// (POD_NAMESPACE and POD_NAME from the downward API).
	NodeID string `yaml:"node_id"`
	// CacheFile keeps the last good policy, to start from when the control
	// plane is unreachable.
	CacheFile string `yaml:"cache_file"`
	// Delta uses incremental xDS instead of state of the world.
	Delta bool `yaml:"delta"`
	// Token (or TokenFile) is the control plane's xds_token.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// TLS, if present, dials the control plane over TLS: ca_file verifies
	// its certificate, cert_file and key_file are this node's client
	// certificate (mTLS: its identity must match node_id).
	TLS *ClientTLSFile `yaml:"tls"`
}

// ControlPlaneClient is the compiled `controlplane:` section.
type ControlPlaneClient struct {
	Address, NodeID, CacheFile string
	Delta                      bool
	Token                      string // "" = none
	// TLS is nil for a plaintext connection.
	TLS *tlsconf.ClientFiles
}

// ParseControlPlaneClient compiles the section; base resolves relative
// paths, role ("sidecar", "extauthz") starts the default node id.
func ParseControlPlaneClient(f *ControlPlaneClientFile, base, role string) (*ControlPlaneClient, *FieldError) {
	if _, _, err := net.SplitHostPort(f.Address); err != nil {
		return nil, &FieldError{"controlplane.address", fmt.Sprintf("required host:port of the control plane's xDS listener: %v", err)}
	}
	nodeID, err := ExpandEnv(f.NodeID)
	if err != nil {
		return nil, &FieldError{"controlplane.node_id", err.Error()}
	}
	out := &ControlPlaneClient{Address: f.Address, NodeID: nodeID, Delta: f.Delta}
	if out.NodeID == "" {
		host, _ := os.Hostname()
		out.NodeID = fmt.Sprintf("%s/%s-%d", role, host, os.Getpid())
	}
	if f.CacheFile != "" {
		out.CacheFile = Resolve(base, f.CacheFile)
	}
	tok, ferr := ReadToken(base, "controlplane.token", f.Token, f.TokenFile, false)
	if ferr != nil {
		return nil, ferr
	}
	out.Token = tok
	if out.TLS, ferr = ParseClientTLS(f.TLS, base, "controlplane.tls"); ferr != nil {
		return nil, ferr
	}
	return out, nil
}

// ReadToken reads a bearer token given inline or in a file: "" if neither
// and not required, else at least bearer.MinLen characters.
func ReadToken(base, field, inline, file string, required bool) (string, *FieldError) {
	tok := inline
	switch {
	case inline != "" && file != "":
		return "", &FieldError{field, "give the token inline or in a file, not both"}
	case file != "":
		b, err := os.ReadFile(Resolve(base, file))
		if err != nil {
			return "", &FieldError{field + "_file", err.Error()}
		}
		tok = strings.TrimSpace(string(b))
	}
	switch {
	case required && len(tok) < bearer.MinLen:
		return "", &FieldError{field, "required, at least 16 characters"}
	case tok != "" && len(tok) < bearer.MinLen:
		return "", &FieldError{field, "at least 16 characters"}
	}
	return tok, nil
}

// ExpandEnv replaces each ${NAME} in s with the environment variable NAME,
// which must be set and not empty; any other $ is kept.
func ExpandEnv(s string) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("%q: ${ without }", s)
		}
		name := s[i+2 : i+j]
		if !validEnvName(name) {
			return "", fmt.Errorf("${%s}: not a variable name", name)
		}
		v := os.Getenv(name)
		if v == "" {
			return "", fmt.Errorf("${%s}: the variable is not set", name)
		}
		b.WriteString(s[:i])
		b.WriteString(v)
		s = s[i+j+1:]
	}
}

func validEnvName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}
