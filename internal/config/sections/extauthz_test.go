package sections

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/internal/memlimit"
)

// TestExtAuthzMemoryLimit: memory_limit takes a size, or none; unset is
// the default (0); a size the collector could not live under is refused,
// naming the field.
func TestExtAuthzMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	k, err := token.GenerateKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "k1.key.pem"), k.MarshalPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "listen: {grpc: 127.0.0.1:9001, http: 127.0.0.1:9002}\nadmin_token: an-admin-token-of-some-length\n" +
		"sessions: {store: redis://127.0.0.1:6379/1, signing_key: k1.key.pem}\ntenants: [acme]\n"
	name := filepath.Join(dir, "extauthz.yaml")
	for _, tc := range []struct {
		name, line string
		want       int64
		err        string
	}{
		{"unset", "", 0, ""},
		{"size", "memory_limit: 384MiB\n", 384 << 20, ""},
		{"none", "memory_limit: none\n", memlimit.Unlimited, ""},
		{"too small", "memory_limit: 16MiB\n", 0, "memory_limit: 16777216 bytes is below 32 MiB"},
		{"not a size", "memory_limit: 2GB\n", 0, `memory_limit: "2GB" is not a memory size`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseExtAuthz(name, []byte(base+tc.line))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || c.MemoryLimit != tc.want {
				t.Fatalf("memory limit %+v, %v; want %d", c, err, tc.want)
			}
		})
	}
}
