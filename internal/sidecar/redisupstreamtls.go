package sidecar

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/internal/tlsconf"
	proxyredis "github.com/tenantguard/tenantguard/proxy/redis"
)

// redisUpstreamTLS makes every connection of the Redis listener to
// redis-server a TLS one, with files re-read when they change (a renewed
// client certificate or CA bundle is used from the next connection on).
func redisUpstreamTLS(rc *proxyredis.Config, files tlsconf.ClientFiles, reg prometheus.Registerer, log *slog.Logger) error {
	c, err := tlsconf.NewClient(files, tlsconf.Options{Name: "redis upstream", Logger: log.With("component", "tls")})
	if err != nil {
		return fmt.Errorf("redis.upstream_tls: %w", err)
	}
	if c.HasCertificate() {
		if err := tlsconf.RegisterExpiry(reg, "redis upstream", c.NotAfter); err != nil {
			return err
		}
	}
	if files.InsecureSkipVerify {
		log.Warn("redis.upstream_tls.insecure_skip_verify is set: redis-server's certificate is NOT verified; " +
			"the connection is encrypted but anyone on the path can impersonate redis-server and read every tenant's data. " +
			"Set ca_file instead.")
	}
	rc.UpstreamTLS = c.TLSConfig
	return nil
}
