package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

// CredentialFile is one entry of postgres.credentials: the password of an
// upstream role that a policy cluster names (clusters[].postgres.credentials),
// so that the policy, which reaches every sidecar and the audit trail,
// carries only the name.
type CredentialFile struct {
	Name         string `yaml:"name"`
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// PlacementFile is a tenant's placement: the names of its clusters.
type PlacementFile struct {
	Postgres string `yaml:"postgres"`
	Redis    string `yaml:"redis"`
}

func (p *PlacementFile) spec() policy.Placement {
	if p == nil {
		return policy.Placement{}
	}
	return policy.Placement{Postgres: p.Postgres, Redis: p.Redis}
}

// ClusterFile is one upstream cluster of the file's policy, as the control
// plane's policy writes it (policypb.Cluster).
type ClusterFile struct {
	Name     string `yaml:"name"`
	Default  bool   `yaml:"default"`
	Postgres *struct {
		Hosts                []string `yaml:"hosts"`
		Database             string   `yaml:"database"`
		User                 string   `yaml:"user"`
		Credentials          string   `yaml:"credentials"`
		MaxServerConnections int      `yaml:"max_server_connections"`
		MinPerSidecar        int      `yaml:"min_per_sidecar"`
	} `yaml:"postgres"`
	Redis *struct {
		Address      string   `yaml:"address"`
		ClusterSeeds []string `yaml:"cluster_seeds"`
		Credentials  string   `yaml:"credentials"`
	} `yaml:"redis"`
}

// clusterSpecs converts the file's clusters; policy.Compile validates them.
func clusterSpecs(cs []ClusterFile) []policy.ClusterSpec {
	var out []policy.ClusterSpec
	for _, c := range cs {
		s := policy.ClusterSpec{Name: c.Name, Default: c.Default}
		if pg := c.Postgres; pg != nil {
			s.Postgres = &policy.PostgresCluster{Hosts: pg.Hosts, Database: pg.Database, User: pg.User, Credentials: pg.Credentials,
				MaxServerConnections: pg.MaxServerConnections, MinPerSidecar: pg.MinPerSidecar}
		}
		if r := c.Redis; r != nil {
			s.Redis = &policy.RedisCluster{Address: r.Address, Seeds: r.ClusterSeeds, Credentials: r.Credentials}
		}
		out = append(out, s)
	}
	return out
}

// parseCredentials reads postgres.credentials; dir resolves password files.
func parseCredentials(f *File, out *Sidecar, dir string) *fieldErr {
	for i, c := range f.Postgres.Credentials {
		field := fmt.Sprintf("postgres.credentials[%d]", i)
		if !policy.ValidTenantID(c.Name) {
			return failf(field+".name", "%q is not a credentials name (lower-case letters, digits, '-', '_')", c.Name)
		}
		if _, dup := out.Postgres.Credentials[c.Name]; dup {
			return failf(field+".name", "credentials %q are listed twice", c.Name)
		}
		pw := c.Password
		switch {
		case c.Password != "" && c.PasswordFile != "":
			return failf(field, "give password or password_file, not both")
		case c.PasswordFile != "":
			b, err := os.ReadFile(resolve(dir, c.PasswordFile))
			if err != nil {
				return failf(field+".password_file", "%v", err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
		case c.Password == "":
			return failf(field, "password or password_file is required")
		}
		if out.Postgres.Credentials == nil {
			out.Postgres.Credentials = map[string]proxypg.Credential{}
		}
		out.Postgres.Credentials[c.Name] = proxypg.Credential{User: c.User, Password: pw}
	}
	return nil
}
