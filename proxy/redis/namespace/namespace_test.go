package namespace_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		tenant string
		mode   namespace.Mode
		want   error
	}{
		{"", namespace.Spread, namespace.ErrEmptyTenant},
		{"", namespace.OneSlot, namespace.ErrEmptyTenant},
		{strings.Repeat("a", namespace.MaxTenantLen+1), namespace.Spread, namespace.ErrTenantTooLong},
		{"acme", namespace.Mode(7), namespace.ErrMode},
		{strings.Repeat("a", namespace.MaxTenantLen), namespace.Spread, nil},
		{"acme", namespace.OneSlot, nil},
	} {
		ns, err := namespace.New(tc.tenant, tc.mode)
		if !errors.Is(err, tc.want) || (err == nil) != (ns != nil) {
			t.Errorf("New(%q, %v) = %v, %v; want error %v", tc.tenant, tc.mode, ns, err, tc.want)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("MustNew(\"\") did not panic")
		}
	}()
	namespace.MustNew("", namespace.Spread)
}

func TestPrefixes(t *testing.T) {
	for _, tc := range []struct {
		tenant  string
		mode    namespace.Mode
		key, ch string
	}{
		{"acme", namespace.Spread, "t:acme:", "c:acme:"},
		{"acme", namespace.OneSlot, "{t:acme}:", "{c:acme}:"},
		{"a-b_c9", namespace.Spread, "t:a-b_c9:", "c:a-b_c9:"},
		{"Acme", namespace.Spread, "t:%41cme:", "c:%41cme:"},
		{"a:b", namespace.Spread, "t:a%3Ab:", "c:a%3Ab:"},
		{"a%3ab", namespace.Spread, "t:a%253ab:", "c:a%253ab:"},
		{"{x}", namespace.OneSlot, "{t:%7Bx%7D}:", "{c:%7Bx%7D}:"},
		{"*?[]\\", namespace.Spread, "t:%2A%3F%5B%5D%5C:", "c:%2A%3F%5B%5D%5C:"},
		{"\x00\xff é", namespace.Spread, "t:%00%FF%20%C3%A9:", "c:%00%FF%20%C3%A9:"},
	} {
		ns := namespace.MustNew(tc.tenant, tc.mode)
		if ns.KeyPrefix() != tc.key || ns.ChannelPrefix() != tc.ch {
			t.Errorf("%q %v: prefixes %q %q, want %q %q", tc.tenant, tc.mode, ns.KeyPrefix(), ns.ChannelPrefix(), tc.key, tc.ch)
		}
		if ns.Tenant() != tc.tenant || ns.Mode() != tc.mode {
			t.Errorf("%q %v: Tenant, Mode = %q, %v", tc.tenant, tc.mode, ns.Tenant(), ns.Mode())
		}
		// The prefix is glob-free: escaping it changes nothing, so a pattern
		// built on it needs no escaping.
		if esc := namespace.AppendGlobEscaped(nil, []byte(ns.KeyPrefix())); string(esc) != ns.KeyPrefix() {
			t.Errorf("%q: key prefix %q needs glob escaping: %q", tc.tenant, ns.KeyPrefix(), esc)
		}
		if got := ns.AppendPattern(nil, nil); string(got) != ns.KeyPrefix() {
			t.Errorf("%q: pattern prefix %q differs from key prefix %q", tc.tenant, got, ns.KeyPrefix())
		}
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[namespace.Mode]string{namespace.Spread: "spread", namespace.OneSlot: "oneslot", 9: "Mode(9)"} {
		if m.String() != want {
			t.Errorf("%d.String() = %q, want %q", m, m.String(), want)
		}
	}
}

func TestKeys(t *testing.T) {
	a := namespace.MustNew("acme", namespace.Spread)
	one := namespace.MustNew("acme", namespace.OneSlot)
	b := namespace.MustNew("acm", namespace.Spread)
	for _, tc := range []struct {
		ns   *namespace.Namespace
		key  string
		want string
	}{
		{a, "user:1", "t:acme:user:1"},
		{a, "", "t:acme:"},
		{a, "{user1}:cart", "t:acme:{user1}:cart"},
		{one, "{user1}:cart", "{t:acme}:{user1}:cart"},
		{b, "e:x", "t:acm:e:x"},
	} {
		dst := []byte("keep")
		got := tc.ns.AppendKey(dst, []byte(tc.key))
		if string(got) != "keep"+tc.want {
			t.Errorf("AppendKey(%q) = %q, want %q", tc.key, got[4:], tc.want)
		}
		back, ok := tc.ns.StripKey(got[4:])
		if !ok || string(back) != tc.key {
			t.Errorf("StripKey(%q) = %q, %v", got[4:], back, ok)
		}
	}
	for _, tc := range []struct {
		ns  *namespace.Namespace
		key string
	}{
		{a, "t:acm:e:x"}, // tenant "acm"'s key "e:x"
		{b, "t:acme:x"},
		{a, "{t:acme}:x"},
		{one, "t:acme:x"},
		{a, "t:acme"},
		{a, ""},
		{a, "x"},
	} {
		if got, ok := tc.ns.StripKey([]byte(tc.key)); ok {
			t.Errorf("%s StripKey(%q) = %q, true; want false", tc.ns.KeyPrefix(), tc.key, got)
		}
	}
}

// hashTag returns the part of key Redis Cluster hashes (keyHashSlot).
func hashTag(key []byte) []byte {
	s := bytes.IndexByte(key, '{')
	if s < 0 {
		return key
	}
	e := bytes.IndexByte(key[s+1:], '}')
	if e <= 0 {
		return key
	}
	return key[s+1 : s+1+e]
}

func TestHashTags(t *testing.T) {
	for _, tc := range []struct {
		mode      namespace.Mode
		tenant    string
		key, want string
	}{
		{namespace.Spread, "acme", "{user1}:cart", "user1"},
		{namespace.Spread, "acme", "a{b}c{d}", "b"},
		{namespace.Spread, "acme", "plain", "t:acme:plain"},
		{namespace.Spread, "a{b}", "plain", "t:a%7Bb%7D:plain"},
		{namespace.OneSlot, "acme", "{user1}:cart", "t:acme"},
		{namespace.OneSlot, "acme", "plain", "t:acme"},
		{namespace.OneSlot, "a}b", "plain", "t:a%7Db"},
	} {
		ns := namespace.MustNew(tc.tenant, tc.mode)
		if got := hashTag(ns.AppendKey(nil, []byte(tc.key))); string(got) != tc.want {
			t.Errorf("%v %q: hash tag of %q is %q, want %q", tc.mode, tc.tenant, tc.key, got, tc.want)
		}
	}
}

func TestEncodedTenant(t *testing.T) {
	for in, want := range map[string]string{
		"acme":   "acme",
		"a_b-9":  "a_b-9",
		"%":      "%25",
		"%25":    "%2525",
		"A":      "%41",
		"a.b":    "a%2Eb",
		"\x00":   "%00",
		"\xff":   "%FF",
		"t:x}{*": "t%3Ax%7D%7B%2A",
	} {
		if got := namespace.AppendEncodedTenant(nil, in); string(got) != want {
			t.Errorf("AppendEncodedTenant(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEncodedTenantAlphabet(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	enc := namespace.AppendEncodedTenant(nil, string(all))
	if i := bytes.IndexAny(enc, ":{}*?[]\\ \x00"); i >= 0 {
		t.Errorf("encoding %q holds %q at %d", enc, enc[i], i)
	}
	for _, c := range enc {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '%' || 'A' <= c && c <= 'F') {
			t.Fatalf("encoding holds %q", c)
		}
	}
}
