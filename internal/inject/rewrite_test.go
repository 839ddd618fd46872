package inject

import (
	"strings"
	"testing"
)

func TestRewriteURL(t *testing.T) {
	ports := Ports{Postgres: 6432, Redis: 6380, Admin: 9187}
	byURL := tenantSource{kind: "url"}
	byLabel := tenantSource{kind: "label", key: "customer"}
	cases := []struct {
		name, in string
		tenant   tenantSource
		want     string // "" = an error containing err
		err      string
	}{
		{"postgres", "postgres://acme:pw@db.svc:5432/app", byURL, "postgres://acme:pw@127.0.0.1:6432/app", ""},
		{"postgresql, no port", "postgresql://acme:pw@db/app", byURL, "postgresql://acme:pw@127.0.0.1:6432/app", ""},
		{"options kept", "postgres://acme:pw@db:5432/app?application_name=x&connect_timeout=5", byURL, "postgres://acme:pw@127.0.0.1:6432/app?application_name=x&connect_timeout=5", ""},
		{"sslmode require", "postgres://a:b@db/app?sslmode=require", byURL, "postgres://a:b@127.0.0.1:6432/app?sslmode=disable", ""},
		{"sslmode verify-full among others", "postgres://a:b@db/app?x=1&sslmode=verify-full&sslrootcert=/ca.pem", byURL, "postgres://a:b@127.0.0.1:6432/app?x=1&sslmode=disable&sslrootcert=/ca.pem", ""},
		{"sslmode prefer kept", "postgres://a:b@db/app?sslmode=prefer", byURL, "postgres://a:b@127.0.0.1:6432/app?sslmode=prefer", ""},
		{"multiple hosts", "postgres://a:b@db1:5432,db2:5432/app?target_session_attrs=read-write", byURL, "postgres://a:b@127.0.0.1:6432/app?target_session_attrs=read-write", ""},
		{"ipv6 host", "postgres://a:b@[2001:db8::1]:5432/app", byURL, "postgres://a:b@127.0.0.1:6432/app", ""},
		{"password with @ escaped", "postgres://a:p%40ss@db/app", byURL, "postgres://a:p%40ss@127.0.0.1:6432/app", ""},
		{"kubelet references kept", "postgres://$(USER):$(PASS)@$(HOST):5432/$(DB)", byURL, "postgres://$(USER):$(PASS)@127.0.0.1:6432/$(DB)", ""},
		{"no user", "postgres://db/app", byURL, "postgres://127.0.0.1:6432/app", ""},
		{"redis", "redis://acme:pw@cache:6379/0", byURL, "redis://acme:pw@127.0.0.1:6380/0", ""},
		{"rediss loses TLS", "rediss://acme:pw@cache:6380", byURL, "redis://acme:pw@127.0.0.1:6380", ""},
		{"tenant from label", "postgres://ignored:pw@db/app", byLabel, "postgres://$(TENANTGUARD_TENANT):pw@127.0.0.1:6432/app", ""},
		{"tenant from label, no password", "redis://cache:6379/0", byLabel, "redis://$(TENANTGUARD_TENANT)@127.0.0.1:6380/0", ""},
		{"tenant from label, password only", "redis://:pw@cache:6379/0", byLabel, "redis://$(TENANTGUARD_TENANT):pw@127.0.0.1:6380/0", ""},
		{"unix socket", "postgres:///app?host=/var/run/postgresql", byURL, "", "no host"},
		{"not a url", "host=db port=5432 dbname=app", byURL, "", "not a URL"},
		{"other scheme", "mysql://a:b@db/app", byURL, "", "neither postgres nor redis"},
		{"invalid url", "postgres://a:b@db:port/app", byURL, "", "not a valid URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rewriteURL(tc.in, ports, tc.tenant)
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("rewriteURL(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.err)
				}
				if strings.Contains(err.Error(), "b@") || strings.Contains(err.Error(), ":b") {
					t.Fatalf("error quotes the URL's credentials: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("rewriteURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			again, err := rewriteURL(got, ports, tc.tenant)
			if err != nil || again != got {
				t.Fatalf("not idempotent: %q then %q (%v)", got, again, err)
			}
		})
	}
	if _, err := rewriteURL("redis://cache:6379", Ports{Postgres: 6432, Admin: 9187}, byURL); err == nil || !strings.Contains(err.Error(), "no Redis listener") {
		t.Fatalf("redis URL without a Redis listener: %v", err)
	}
}

func FuzzRewriteURL(f *testing.F) {
	for _, s := range []string{"postgres://a:b@h:1/d?sslmode=require", "redis://:p@h/0", "rediss://h", "postgresql://a@h1,h2/d#f?x"} {
		f.Add(s, false)
	}
	ports := Ports{Postgres: 6432, Redis: 6380, Admin: 9187}
	f.Fuzz(func(t *testing.T, in string, byLabel bool) {
		src := tenantSource{kind: "url"}
		if byLabel {
			src = tenantSource{kind: "label", key: "t"}
		}
		got, err := rewriteURL(in, ports, src)
		if err != nil {
			return
		}
		if !strings.Contains(got, "@127.0.0.1:") && !strings.Contains(got, "://127.0.0.1:") {
			t.Fatalf("rewriteURL(%q) = %q: not pointed at the sidecar", in, got)
		}
		if again, err := rewriteURL(got, ports, src); err != nil || again != got {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", in, got, again, err)
		}
	})
}
