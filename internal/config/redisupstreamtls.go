package config

import (
	"fmt"
	"strings"

	"github.com/tenantguard/tenantguard/internal/tlsconf"
)

// RedisUpstreamTLSFile is redis.upstream_tls: a client's TLS section for
// the connections to redis-server, and whether its certificate is
// checked at all.
type RedisUpstreamTLSFile struct {
	ClientTLSFile `yaml:",inline"`
	// InsecureSkipVerify accepts any certificate from redis-server:
	// encrypted, not authenticated. The sidecar logs a warning at start.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// parseRedisSchemes accepts redis.upstream and redis.cluster_seeds as
// redis:// or rediss:// URLs too (host:port only, no credentials or
// database): it strips the scheme, and rediss:// turns upstream TLS on.
// The seeds must agree.
func parseRedisSchemes(f *File, out *Sidecar) *fieldErr {
	scheme := ""
	strip := func(field string, addr *string) *fieldErr {
		s, rest, ok := strings.Cut(*addr, "://")
		if !ok {
			return nil
		}
		if s != "redis" && s != "rediss" {
			return failf(field, "%q: the scheme is redis:// or rediss://", *addr)
		}
		if strings.ContainsAny(rest, "@/?") {
			return failf(field, "%q: host:port only (credentials go in redis.username and redis.password)", *addr)
		}
		if scheme != "" && s != scheme {
			return failf(field, "%q: every address must use the same scheme", *addr)
		}
		scheme, *addr = s, rest
		return nil
	}
	if fe := strip("redis.upstream", &f.Redis.Upstream); fe != nil {
		return fe
	}
	for i := range f.Redis.ClusterSeeds {
		if fe := strip(fmt.Sprintf("redis.cluster_seeds[%d]", i), &f.Redis.ClusterSeeds[i]); fe != nil {
			return fe
		}
	}
	switch {
	case scheme == "rediss":
		out.RedisUpstreamTLS = &tlsconf.ClientFiles{} // the system's roots unless upstream_tls says otherwise
	case scheme == "redis" && f.Redis.UpstreamTLS != nil:
		return failf("redis.upstream_tls", "the upstream is redis://: use rediss:// (or host:port) for TLS")
	}
	return nil
}

// parseRedisUpstreamTLS compiles redis.upstream_tls and loads its files
// once.
func parseRedisUpstreamTLS(f *File, out *Sidecar, base string) *fieldErr {
	t := f.Redis.UpstreamTLS
	if t == nil {
		return nil
	}
	if out.RedisListen == "" {
		return failf("redis.upstream_tls", "there is no Redis listener (listen.redis)")
	}
	files, fe := parseClientTLS(&t.ClientTLSFile, base, "redis.upstream_tls")
	if fe != nil {
		return fe
	}
	if t.InsecureSkipVerify {
		if t.CAFile != "" || t.ServerName != "" {
			return failf("redis.upstream_tls.insecure_skip_verify", "contradicts ca_file and server_name, which are for verifying the certificate")
		}
		files.InsecureSkipVerify = true
	}
	out.RedisUpstreamTLS = files
	return nil
}
