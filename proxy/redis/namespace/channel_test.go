package namespace_test

import (
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

func TestChannels(t *testing.T) {
	a := namespace.MustNew("acme", namespace.Spread)
	one := namespace.MustNew("acme", namespace.OneSlot)
	for _, tc := range []struct {
		ns   *namespace.Namespace
		in   string
		want string // "" means refused
	}{
		{a, "news", "c:acme:news"},
		{a, "", "c:acme:"},
		{a, "news.*", "c:acme:news.*"},
		{one, "news", "{c:acme}:news"},
		{a, "__keyspace@0__:user:1", "__keyspace@0__:t:acme:user:1"},
		{a, "__keyspace@0__:*", "__keyspace@0__:t:acme:*"},
		{a, "__keyspace@15__:", "__keyspace@15__:t:acme:"},
		{one, "__keyspace@0__:k", "__keyspace@0__:{t:acme}:k"},
		{a, "__keyevent@0__:set", ""},
		{a, "__keyevent@0__:*", ""},
		{a, "__keyspace@*__:*", ""},
		{a, "__keyspace@__:k", ""},
		{a, "__keyspace@0_:k", ""},
		{a, "__keyspace@0", ""},
		{a, "__keyspace@", ""},
		{a, "__key*", "c:acme:__key*"}, // a plain pattern: never matches notifications
		{a, "__redis__:invalidate", "c:acme:__redis__:invalidate"},
	} {
		got, ok := tc.ns.AppendChannel([]byte("x"), []byte(tc.in))
		if tc.want == "" {
			if ok || string(got) != "x" {
				t.Errorf("AppendChannel(%q) = %q, %v; want refusal", tc.in, got, ok)
			}
			continue
		}
		if !ok || string(got) != "x"+tc.want {
			t.Errorf("AppendChannel(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			continue
		}
		back, ok := tc.ns.AppendStripChannel([]byte("y"), got[1:])
		if !ok || string(back) != "y"+tc.in {
			t.Errorf("AppendStripChannel(%q) = %q, %v; want %q", got[1:], back, ok, tc.in)
		}
	}
}

func TestStripChannelRefuses(t *testing.T) {
	a := namespace.MustNew("acme", namespace.Spread)
	for _, ch := range []string{
		"news", "c:acm:e", "t:acme:x", "{c:acme}:x", "c:acme",
		"__keyspace@0__:t:other:k", "__keyspace@0__:k", "__keyevent@0__:set",
		"__keyspace@0__:{t:acme}:k",
	} {
		if got, ok := a.AppendStripChannel([]byte("x"), []byte(ch)); ok || string(got) != "x" {
			t.Errorf("AppendStripChannel(%q) = %q, %v; want refusal", ch, got, ok)
		}
	}
	if got, ok := a.StripChannel([]byte("c:acme:news")); !ok || string(got) != "news" {
		t.Errorf("StripChannel = %q, %v", got, ok)
	}
	if _, ok := a.StripChannel([]byte("__keyspace@0__:t:acme:k")); ok {
		t.Error("StripChannel accepted a notification channel")
	}
}

func TestScopeNotificationChannel(t *testing.T) {
	a := namespace.MustNew("acme", namespace.Spread)
	for in, want := range map[string]string{
		"__keyspace@0__:k":   "__keyspace@0__:t:acme:k",
		"__keyspace@3__:a*":  "__keyspace@3__:t:acme:a*",
		"__keyevent@0__:del": "",
		"news":               "",
	} {
		got, ok := a.ScopeNotificationChannel([]byte(in))
		if ok != (want != "") || string(got) != want {
			t.Errorf("ScopeNotificationChannel(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for ch, want := range map[string]bool{
		"__keyspace@0__:k": true, "__keyevent@0__:set": true, "__keyspace@": true,
		"__keyspace": false, "news": false, "c:acme:__keyspace@0__:k": false,
	} {
		if namespace.IsNotificationChannel([]byte(ch)) != want {
			t.Errorf("IsNotificationChannel(%q) != %v", ch, want)
		}
	}
}
