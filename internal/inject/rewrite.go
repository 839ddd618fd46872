package inject

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// rewriteURL points a postgres:// or redis:// URL at the sidecar: the
// host list becomes 127.0.0.1 and the sidecar's port; the user, password,
// database and options stay as written, byte for byte, except that TLS is
// not asked of the loopback hop (sslmode require, verify-ca and
// verify-full become disable, which the sidecar's listener on 127.0.0.1
// would otherwise refuse; rediss becomes redis). With a tenant source
// other than url the user name becomes $(TENANTGUARD_TENANT), which the
// kubelet expands. Rewriting a rewritten URL changes nothing.
func rewriteURL(raw string, ports Ports, tenant tenantSource) (string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "", errors.New("not a URL (postgres://… or redis://…)")
	}
	if _, err := url.Parse(raw); err != nil {
		return "", fmt.Errorf("not a valid URL: %v", redact(err))
	}
	var port int32
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		port = ports.Postgres
	case "redis", "rediss":
		if ports.Redis == 0 {
			return "", errors.New("a Redis URL, but the sidecar has no Redis listener")
		}
		port = ports.Redis
		scheme = "redis"
	default:
		return "", fmt.Errorf("scheme %q is neither postgres nor redis", scheme)
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts, hasUser := "", authority, false
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		userinfo, hosts, hasUser = authority[:at], authority[at+1:], true
	}
	if hosts == "" {
		return "", errors.New("the URL names no host (a unix socket?)")
	}
	if tenant.kind != "url" {
		_, password, hasPassword := strings.Cut(userinfo, ":")
		userinfo, hasUser = "$("+TenantEnv+")", true
		if hasPassword {
			userinfo += ":" + password
		}
	}
	out := scheme + "://"
	if hasUser {
		out += userinfo + "@"
	}
	out += "127.0.0.1:" + strconv.Itoa(int(port))
	if port == ports.Postgres {
		tail = loopbackSSLMode(tail)
	}
	return out + tail, nil
}

// loopbackSSLMode turns an sslmode that requires TLS into disable in the
// query part of tail (path?query#fragment).
func loopbackSSLMode(tail string) string {
	q := strings.IndexByte(tail, '?')
	if q < 0 {
		return tail
	}
	query, frag := tail[q+1:], ""
	if h := strings.IndexByte(query, '#'); h >= 0 {
		query, frag = query[:h], query[h:]
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		k, v, _ := strings.Cut(p, "=")
		if k == "sslmode" && (v == "require" || v == "verify-ca" || v == "verify-full") {
			params[i] = "sslmode=disable"
		}
	}
	return tail[:q+1] + strings.Join(params, "&") + frag
}

// redact drops the URL from a url.Parse error: it may hold a password.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
