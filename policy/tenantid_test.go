package policy

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

func TestValidTenantID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "acme": true, "0": true, "a-b_c": true, "9lives": true, "a-": true,
		"t" + strings.Repeat("x", 62): true,
		"":                            false,
		"t" + strings.Repeat("x", 63): false,
		"Acme":                        false, "-a": false, "_a": false, "a.b": false, "a b": false, "a/b": false,
		"acme\n": false, "ácme": false, "a\x00": false,
	} {
		if got := ValidTenantID(id); got != want {
			t.Errorf("ValidTenantID(%q) = %v, want %v", id, got, want)
		}
	}
	// Same answer as the regular expression on random strings.
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	const chars = "abz09_-A.\n\x00é"
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, r.IntN(70))
		for j := range b {
			b[j] = chars[r.IntN(len(chars))]
		}
		if ValidTenantID(string(b)) != re.MatchString(string(b)) {
			t.Fatalf("ValidTenantID(%q) disagrees with the regexp", b)
		}
	}
}
