package config

// RedisTLSFile is the Redis listener's `tls:` section: a listener's, and
// whether plaintext clients are still served on the same port.
type RedisTLSFile struct {
	ListenerTLSFile `yaml:",inline"`
	// AllowPlaintext serves clients that do not start a TLS handshake in
	// plaintext too; by default they are refused.
	AllowPlaintext bool `yaml:"allow_plaintext"`
}

// parseRedisTLS compiles redis.tls.
func parseRedisTLS(f *File, out *Sidecar, base string) *fieldErr {
	t := f.Redis.TLS
	if t == nil {
		return nil
	}
	if out.RedisListen == "" {
		return failf("redis.tls", "there is no Redis listener (listen.redis)")
	}
	files, fe := parseListenerTLS(&t.ListenerTLSFile, base, "redis.tls")
	if fe != nil {
		return fe
	}
	if files == nil && t.AllowPlaintext {
		return failf("redis.tls.allow_plaintext", "needs cert_file and key_file: without them the listener is plaintext only")
	}
	out.RedisTLS = files
	out.Redis.AllowPlaintext = t.AllowPlaintext
	return nil
}
