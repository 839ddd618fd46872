//go:build !sidecar

package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestRedisUpstreamTLS: redis.upstream_tls and rediss:// addresses turn
// TLS to redis-server on, with paths resolved against the file's
// directory; contradictions are errors naming the field.
func TestRedisUpstreamTLS(t *testing.T) {
	dir := tlsDir(t)
	abs := func(name string) string { return filepath.Join(dir, name) }
	withRedis := func(redis string) string {
		return strings.Replace(valid, "  admin: 127.0.0.1:9187\n", "  admin: 127.0.0.1:9187\n  redis: 127.0.0.1:6380\n", 1) + "redis:\n" + redis
	}
	for _, tc := range []struct {
		name, redis string
		tls         bool   // upstream TLS on
		ca          string // its ca_file
		upstream    string
		seeds       int
		insecure    bool
		err         string // the field an error names
	}{
		{name: "plaintext", redis: "  upstream: 127.0.0.1:6379\n", upstream: "127.0.0.1:6379"},
		{name: "redis://", redis: "  upstream: redis://127.0.0.1:6379\n", upstream: "127.0.0.1:6379"},
		{name: "rediss:// with the system's roots", redis: "  upstream: rediss://redis.internal:6380\n", tls: true, upstream: "redis.internal:6380"},
		{name: "rediss:// and upstream_tls", redis: "  upstream: rediss://127.0.0.1:6380\n  upstream_tls: {ca_file: ca.pem, cert_file: client.crt, key_file: client.key, server_name: redis}\n",
			tls: true, ca: abs("ca.pem"), upstream: "127.0.0.1:6380"},
		{name: "host:port and upstream_tls", redis: "  upstream: 127.0.0.1:6380\n  upstream_tls: {ca_file: ca.pem}\n", tls: true, ca: abs("ca.pem"), upstream: "127.0.0.1:6380"},
		{name: "cluster seeds", redis: "  cluster_seeds: [rediss://127.0.0.1:7000, rediss://127.0.0.1:7001]\n  upstream_tls: {ca_file: ca.pem}\n", tls: true, ca: abs("ca.pem"), seeds: 2},
		{name: "insecure", redis: "  upstream: rediss://127.0.0.1:6380\n  upstream_tls: {insecure_skip_verify: true}\n", tls: true, upstream: "127.0.0.1:6380", insecure: true},
		{name: "insecure with a CA", redis: "  upstream: 127.0.0.1:6380\n  upstream_tls: {ca_file: ca.pem, insecure_skip_verify: true}\n", err: "redis.upstream_tls.insecure_skip_verify"},
		{name: "redis:// with upstream_tls", redis: "  upstream: redis://127.0.0.1:6380\n  upstream_tls: {ca_file: ca.pem}\n", err: "redis.upstream_tls"},
		{name: "mixed seeds", redis: "  cluster_seeds: [rediss://127.0.0.1:7000, redis://127.0.0.1:7001]\n", err: "redis.cluster_seeds[1]"},
		{name: "credentials in the URL", redis: "  upstream: rediss://u:p@127.0.0.1:6380\n", err: "redis.upstream"},
		{name: "unknown scheme", redis: "  upstream: http://127.0.0.1:6380\n", err: "redis.upstream"},
		{name: "a CA that does not load", redis: "  upstream: 127.0.0.1:6380\n  upstream_tls: {ca_file: junk.pem}\n", err: "redis.upstream_tls.ca_file"},
		{name: "cert without key", redis: "  upstream: 127.0.0.1:6380\n  upstream_tls: {cert_file: client.crt}\n", err: "redis.upstream_tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := Parse(abs("sidecar.yaml"), []byte(withRedis(tc.redis)))
			if tc.err != "" {
				var ce *Error
				if err == nil || !errors.As(err, &ce) || ce.Field != tc.err {
					t.Fatalf("error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sc.RedisUpstreamTLS != nil; got != tc.tls {
				t.Fatalf("upstream TLS %v, want %v", sc.RedisUpstreamTLS, tc.tls)
			}
			if tc.tls && (sc.RedisUpstreamTLS.CAFile != tc.ca || sc.RedisUpstreamTLS.InsecureSkipVerify != tc.insecure) {
				t.Fatalf("upstream TLS %+v", *sc.RedisUpstreamTLS)
			}
			if sc.Redis.Upstream != tc.upstream || len(sc.Redis.Cluster) != tc.seeds {
				t.Fatalf("upstream %q, seeds %q", sc.Redis.Upstream, sc.Redis.Cluster)
			}
			for _, s := range sc.Redis.Cluster {
				if strings.Contains(s, "://") {
					t.Fatalf("seed %q keeps its scheme", s)
				}
			}
		})
	}
}
