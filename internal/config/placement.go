package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/tenantguard/tenantguard/policy"
	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
)

// CredentialFile is one entry of postgres.credentials (or redis.credentials): the password of an
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

// parseCredentials reads postgres.credentials and redis.credentials; dir
// resolves password files.
func parseCredentials(f *File, out *Sidecar, dir string) *fieldErr {
	pg, fe := readCredentials(f.Postgres.Credentials, "postgres.credentials", dir)
	if fe != nil {
		return fe
	}
	for name, c := range pg {
		if out.Postgres.Credentials == nil {
			out.Postgres.Credentials = map[string]proxypg.Credential{}
		}
		out.Postgres.Credentials[name] = proxypg.Credential{User: c.User, Password: c.Password}
	}
	rd, fe := readCredentials(f.Redis.Credentials, "redis.credentials", dir)
	if fe != nil {
		return fe
	}
	for name, c := range rd {
		if out.Redis.Credentials == nil {
			out.Redis.Credentials = map[string]proxyredis.Credential{}
		}
		out.Redis.Credentials[name] = proxyredis.Credential{User: c.User, Password: c.Password}
	}
	return nil
}

// readCredentials reads one credentials list, field naming it.
func readCredentials(list []CredentialFile, field, dir string) (map[string]CredentialFile, *fieldErr) {
	out := map[string]CredentialFile{}
	for i, c := range list {
		field := fmt.Sprintf("%s[%d]", field, i)
		if !policy.ValidTenantID(c.Name) {
			return nil, failf(field+".name", "%q is not a credentials name (lower-case letters, digits, '-', '_')", c.Name)
		}
		if _, dup := out[c.Name]; dup {
			return nil, failf(field+".name", "credentials %q are listed twice", c.Name)
		}
		pw := c.Password
		switch {
		case c.Password != "" && c.PasswordFile != "":
			return nil, failf(field, "give password or password_file, not both")
		case c.PasswordFile != "":
			b, err := os.ReadFile(resolve(dir, c.PasswordFile))
			if err != nil {
				return nil, failf(field+".password_file", "%v", err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
		case c.Password == "":
			return nil, failf(field, "password or password_file is required")
		}
		out[c.Name] = CredentialFile{Name: c.Name, User: c.User, Password: pw}
	}
	return out, nil
}
