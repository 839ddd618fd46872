package rules

import (
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
)

// TestTableNames catches typos: a misspelt name would silently fall back
// to the default treatment.
func TestTableNames(t *testing.T) {
	for name, e := range table {
		cmd := keyspec.Get(name)
		if cmd == nil {
			t.Errorf("table names %q, which keyspec does not know", name)
			continue
		}
		if e.kind == kPlain && cmd.Flags.Has(keyspec.FlagAdmin) {
			t.Errorf("admin command %s forwarded as plain", name)
		}
		if e.kind == kRefuse && e.rule == "" {
			t.Errorf("%s refused without a rule", name)
		}
	}
}

func TestParseInt(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1, "-1": -1, "1000": 1000,
		"9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63,
	} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-", "-0", "00", "01", "+1", " 1", "1 ", "1x",
		"9223372036854775808", "-9223372036854775809", "99999999999999999999"} {
		if got, ok := parseInt([]byte(in)); ok {
			t.Errorf("parseInt(%q) = %d, true; want false", in, got)
		}
	}
}

func TestLimit(t *testing.T) {
	for _, tc := range [][3]int{{0, 7, 7}, {-1, 7, 0}, {3, 7, 3}} {
		if got := limit(tc[0], tc[1]); got != tc[2] {
			t.Errorf("limit(%d, %d) = %d, want %d", tc[0], tc[1], got, tc[2])
		}
	}
}
