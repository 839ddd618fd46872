package compat

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func redisCLIVersion(t *testing.T) string {
	cli := lookPath(t, "redis-cli", "redis-tools")
	out, err := exec.Command(cli, "--version").Output()
	if err != nil {
		t.Fatalf("redis-cli --version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// redisCLI runs redis-cli as the tenant of urlKey: with args as one
// command, or with none reading commands from stdin, all on one
// connection. Replies are printed raw, one per line (stdin is no tty);
// error replies too, without a marker, and the exit status stays 0.
func redisCLI(ctx context.Context, env map[string]string, urlKey, stdin string, args ...string) (string, error) {
	return commandOutput(ctx, nil, stdin, "redis-cli", append([]string{"--no-auth-warning", "-u", env[urlKey]}, args...)...)
}

// isRefusal tells a refusal in redis-cli's raw output: an error reply whose
// code is ERR (a script error) or NOPERM (tenantguard's or an ACL's).
func isRefusal(reply string) bool {
	code, _, _ := strings.Cut(reply, " ")
	return code == "ERR" || code == "NOPERM"
}

var redisCLICases = []goCase{
	{"get_set", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "SET compat:redis-cli:k v1\nGET compat:redis-cli:k\nGET greeting\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "OK", "v1", "hello from acme"); err != nil {
			return "", err
		}
		return "SET, GET of its own key and the seeded greeting", nil
	}},
	{"pipeline", func(ctx context.Context, env map[string]string) (string, error) {
		// --pipe sends RESP as fast as it can and counts the replies.
		var resp strings.Builder
		for _, cmd := range [][]string{{"SET", "compat:redis-cli:p", "1"}, {"INCRBY", "compat:redis-cli:p", "41"}, {"EXPIRE", "compat:redis-cli:p", "60"}} {
			fmt.Fprintf(&resp, "*%d\r\n", len(cmd))
			for _, a := range cmd {
				fmt.Fprintf(&resp, "$%d\r\n%s\r\n", len(a), a)
			}
		}
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", resp.String(), "--pipe")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(out, "errors: 0, replies: 3") {
			return "", fmt.Errorf("--pipe: %s", out)
		}
		get, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "", "GET", "compat:redis-cli:p")
		if err != nil || strings.TrimSpace(get) != "42" {
			return "", fmt.Errorf("GET after --pipe: %q %v", get, err)
		}
		return "--pipe: 3 commands, 0 errors", nil
	}},
	{"multi_exec", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "MULTI\nSET compat:redis-cli:tx 1\nINCR compat:redis-cli:tx\nEXEC\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "OK", "QUEUED", "QUEUED", "OK", "2"); err != nil {
			return "", err
		}
		return "MULTI, 2 queued, EXEC", nil
	}},
	{"error_recovery", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "INCR greeting\nCONFIG GET maxmemory\nGET greeting\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		// One reply a line, in order: the INCR's error, CONFIG's refusal, the GET.
		var replies []string
		for _, l := range lines(out) {
			if l != "" {
				replies = append(replies, l)
			}
		}
		if len(replies) != 3 || !strings.HasPrefix(replies[0], "ERR ") || !strings.HasPrefix(replies[1], "NOPERM ") || replies[2] != "hello from acme" {
			return "", fmt.Errorf("want ERR, NOPERM, then the greeting:\n%s", out)
		}
		return "ERR and NOPERM, the connection still usable", nil
	}},
	{"isolation_keys", func(ctx context.Context, env map[string]string) (string, error) {
		if out, err := redisCLI(ctx, env, "TG_REDIS_URL_GLOBEX", "", "SET", "compat:redis-cli:secret", "globex-secret", "EX", "60"); err != nil || strings.TrimSpace(out) != "OK" {
			return "", fmt.Errorf("globex SET: %q %v", out, err)
		}
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "GET compat:redis-cli:secret\nEXISTS compat:redis-cli:secret\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if ls := lines(out); len(ls) < 2 || ls[0] != "" || ls[1] != "0" {
			return "", fmt.Errorf("acme reads globex's key: %q", out)
		}
		scan, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "", "--scan")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, scan)
		}
		for _, k := range lines(scan) {
			if k == "compat:redis-cli:secret" || strings.HasPrefix(k, "t:") {
				return "", fmt.Errorf("--scan shows acme %q", k)
			}
		}
		if !slices.Contains(lines(scan), "greeting") {
			return "", fmt.Errorf("--scan misses acme's greeting:\n%s", scan)
		}
		return "GET nil, EXISTS 0, --scan shows none of globex's keys", nil
	}},
	{"eval", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "", "EVAL", "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[1])", "1", "compat:redis-cli:eval", "6")
		if err != nil || strings.TrimSpace(out) != "7" {
			return "", fmt.Errorf("EVAL: %q %v, want 7", strings.TrimSpace(out), err)
		}
		get, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "", "GET", "compat:redis-cli:eval")
		if err != nil || strings.TrimSpace(get) != "7" {
			return "", fmt.Errorf("GET of the script's key: %q %v", get, err)
		}
		return "EVAL on acme's key", nil
	}},
	{"script_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		var refusals []string
		for _, body := range []string{
			"return redis.call('GET', 't:globex:greeting')",
			"return redis.call('SET', 't:globex:compat:redis-cli:pwned', 'acme was here')",
		} {
			out, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "", "EVAL", body, "0")
			reply := strings.TrimSpace(out)
			if err != nil || !isRefusal(reply) {
				return "", fmt.Errorf("%s: %q %v, want an error reply", body, reply, err)
			}
			refusals = append(refusals, reply)
		}
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_GLOBEX", "", "EXISTS", "compat:redis-cli:pwned")
		if err != nil || strings.TrimSpace(out) != "0" {
			return "", fmt.Errorf("globex has the key acme's script tried to set: %q %v", out, err)
		}
		return "refused: " + strings.Join(refusals, "; "), nil
	}},
	{"evalsha_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
		body := fmt.Sprintf("-- %d\nreturn 1", time.Now().UnixNano())
		sha, err := redisCLI(ctx, env, "TG_REDIS_URL_ACME", "", "SCRIPT", "LOAD", body)
		sha = strings.TrimSpace(sha)
		if err != nil || len(sha) != 40 {
			return "", fmt.Errorf("acme's SCRIPT LOAD: %q %v", sha, err)
		}
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_GLOBEX", "SCRIPT EXISTS "+sha+"\nEVALSHA "+sha+" 0\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		ls := lines(out)
		if len(ls) < 2 || ls[0] != "0" || !strings.HasPrefix(ls[1], "NOSCRIPT") {
			return "", fmt.Errorf("globex's SCRIPT EXISTS and EVALSHA of acme's script: %q", out)
		}
		return "globex: SCRIPT EXISTS 0, EVALSHA " + ls[1], nil
	}},
	{"globex_unaffected", func(ctx context.Context, env map[string]string) (string, error) {
		out, err := redisCLI(ctx, env, "TG_REDIS_URL_GLOBEX", "GET greeting\nGET compat:redis-cli:secret\n")
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		if err := expectLines(out, "hello from globex", "globex-secret"); err != nil {
			return "", err
		}
		return "globex's keys intact", nil
	}},
}
