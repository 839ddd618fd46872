package firewall

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func newTestFirewall(t *testing.T) *Firewall {
	f, err := New(Config{BindingSetting: "tenantguard.binding", ProtectedSchema: "tenantguard"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

// checkCase is a query and the verdict the firewall must give it. The
// fuzz test seeds its corpus with every one of them.
type checkCase struct {
	query string
	rule  string // "" = allowed
	class Class
	state bool
}

var checkCases = []checkCase{
	{"SELECT * FROM orders WHERE tenant_id = 'globex'", "", Read, false},
	{"select 1; select 2", "", Read, false},
	{"INSERT INTO orders (tenant_id, item) VALUES ('acme', 'x')", "", Write, false},
	{"WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "", Read | Write, false},
	{"SELECT * FROM orders FOR UPDATE", "", Read | Write, false},
	{"UPDATE orders SET amount = 1", "", Write, false},
	{"COPY orders TO STDOUT", "", Read, false},
	{"COPY orders FROM STDIN", "", Write, false},
	{"SET application_name = 'x'", "", 0, true},
	{"SET LOCAL work_mem = '4MB'", "", 0, false},
	{"SHOW search_path", "", Read, false},
	{"BEGIN; SELECT 1; COMMIT", "", Read, false},
	{"EXPLAIN SELECT * FROM orders", "", Read, false},
	{"SELECT current_setting('tenantguard.binding')", "", Read, false},
	{"SELECT tenantguard.current_tenant()", "", Read, false},
	{"SELECT pg_advisory_lock(1)", "", Read, true},
	{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "", Read, true},
	{"CREATE TABLE t (x int)", "", DDL, false},
	{"CREATE TEMP TABLE t (x int)", "", DDL, true},

	{"SELECT set_config('tenantguard.binding', 'globex', false)", "tenant-binding", 0, false},
	{"select 1; SELECT SET_CONFIG('tenantguard.binding', 'globex', true)", "tenant-binding", 0, false},
	{"WITH x AS (SELECT pg_catalog.set_config('a', 'b', false)) SELECT * FROM x", "tenant-binding", 0, false},
	{"SELECT * FROM orders WHERE tenant_id = (SELECT set_config('tenantguard.binding', 'globex', true))", "tenant-binding", 0, false},
	{"SELECT set_config(concat('tenantguard', '.binding'), 'x', false)", "tenant-binding", 0, false},
	{"SET tenantguard.binding = 'globex'", "tenant-binding", 0, false},
	{"SET LOCAL tenantguard.binding TO 'globex'", "tenant-binding", 0, false},
	{"set \"tenantguard.binding\" = 'globex'", "tenant-binding", 0, false},
	{"RESET tenantguard.binding", "tenant-binding", 0, false},
	{"RESET ALL", "tenant-binding", 0, false},
	{"DISCARD ALL", "tenant-binding", 0, false},
	{"UPDATE pg_settings SET setting = 'globex' WHERE name = 'tenantguard.binding'", "tenant-binding", 0, false},
	{"SET ROLE postgres", "role-switch", 0, false},
	{"RESET ROLE", "role-switch", 0, false},
	{"SET SESSION AUTHORIZATION postgres", "role-switch", 0, false},
	{"SET row_security = off", "row-security", 0, false},
	{"SET client_encoding = 'GBK'", "encoding", 0, false},
	{"SET NAMES 'SJIS'", "encoding", 0, false},
	{"SET LOCAL client_encoding TO 'BIG5'", "encoding", 0, false},
	{"SET standard_conforming_strings = off", "encoding", 0, false},
	{"SET standard_conforming_strings = 'no'", "encoding", 0, false},
	{"SET client_encoding = 'UTF-8'", "", 0, true},
	{"SET NAMES 'unicode'", "", 0, true},
	{"SET standard_conforming_strings = on", "", 0, true},
	{"SET standard_conforming_strings TO 'true'", "", 0, true},
	{"RESET client_encoding", "", 0, true},
	{"SET standard_conforming_strings TO DEFAULT", "", 0, true},
	{"DO $$ BEGIN PERFORM 1; END $$", "do-block", 0, false},
	{"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", "create-function", 0, false},
	{"CREATE PROCEDURE p() LANGUAGE sql AS 'select 1'", "create-function", 0, false},
	{"PREPARE TRANSACTION 'x'", "two-phase-commit", 0, false},
	{"COMMIT PREPARED 'x'", "two-phase-commit", 0, false},
	{"COPY orders TO '/tmp/x'", "copy-file-program", 0, false},
	{"COPY orders FROM PROGRAM 'id'", "copy-file-program", 0, false},
	{"SELECT pg_read_file('/etc/passwd')", "server-files", 0, false},
	{"SELECT lo_import('/etc/passwd')", "large-objects", 0, false},
	{"SELECT * FROM pg_largeobject", "large-objects", 0, false},
	{"SELECT dblink_connect('host=x')", "dblink-fdw", 0, false},
	{"SELECT query_to_xml('SELECT pg_terminate_backend(pid) FROM pg_stat_activity', true, true, '')", "dynamic-sql", 0, false},
	{"SELECT pg_catalog.table_to_xml('pg_stat_activity', true, false, '')", "dynamic-sql", 0, false},
	{"SELECT schema_to_xml('tenantguard', true, false, '')", "dynamic-sql", 0, false},
	{"SELECT * FROM ts_stat('SELECT set_config(''tenantguard.binding'', ''globex'', false)::tsvector')", "dynamic-sql", 0, false},
	{"SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM aliases')", "dynamic-sql", 0, false},
	{"SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)", "", Read, false},
	{"CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw", "dblink-fdw", 0, false},
	{"CREATE EXTENSION dblink", "dblink-fdw", 0, false},
	{"SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "signal-backend", 0, false},
	{"SELECT pg_cancel_backend(1234)", "signal-backend", 0, false},
	{"SELECT * FROM pg_stat_activity", "other-sessions", 0, false},
	{"SELECT * FROM pg_catalog.pg_locks", "other-sessions", 0, false},
	{"SELECT * FROM pg_stat_statements", "other-sessions", 0, false},
	{"LISTEN ch", "", 0, false},      // answered by the proxy (Verdict.Listen)
	{"NOTIFY ch, 'x'", "", 0, false}, // namespaced by the proxy (Verdict.Notify)
	{"SELECT pg_listening_channels()", "listen-notify", 0, false},
	{"EXPLAIN ANALYZE SELECT 1", "explain-analyze", 0, false},
	{"EXPLAIN (ANALYZE false) SELECT 1", "explain-analyze", 0, false},
	{"EXPLAIN SELECT set_config('a','b',false)", "tenant-binding", 0, false},
	{"ALTER ROLE tg_app BYPASSRLS", "roles-and-privileges", 0, false},
	{"ALTER DATABASE app SET row_security = off", "roles-and-privileges", 0, false},
	{"ALTER SYSTEM SET fsync = off", "roles-and-privileges", 0, false},
	{"GRANT ALL ON orders TO public", "roles-and-privileges", 0, false},
	{"ALTER TABLE orders DISABLE ROW LEVEL SECURITY", "row-security", 0, false},
	{"ALTER TABLE orders NO FORCE ROW LEVEL SECURITY", "row-security", 0, false},
	{"DROP POLICY tenantguard_isolation ON orders", "row-security", 0, false},
	{"TRUNCATE orders", "truncate", 0, false},
	{"SELECT * FROM tenantguard.binding_key", "tenantguard-schema", 0, false},
	{"SELECT tenantguard.hmac('x')", "tenantguard-schema", 0, false},
	{"LOAD 'plpgsql'", "server-administration", 0, false},
	{"VACUUM orders", "server-administration", 0, false},
	{"SELEC 1", "syntax", 0, false},
	{"SELECT 'caf\xc3'", "encoding", 0, false},
}

func TestCheck(t *testing.T) {
	f := newTestFirewall(t)
	for _, tc := range checkCases {
		t.Run(tc.query, func(t *testing.T) {
			// Twice: the second answer comes from the cache.
			for i := 0; i < 2; i++ {
				v := f.Check(tc.query)
				f.cache.Wait()
				if v.Rule != tc.rule {
					t.Fatalf("rule %q (%s), want %q", v.Rule, v.Reason, tc.rule)
				}
				if tc.rule != "" {
					if v.Reason == "" {
						t.Fatal("refusal without a reason")
					}
					continue
				}
				if v.Class != tc.class || v.SessionState != tc.state {
					t.Fatalf("class %v state %v, want %v %v", v.Class, v.SessionState, tc.class, tc.state)
				}
			}
		})
	}
}

// TestCacheKeyIgnoresOnlyConstants: queries that differ in constants share
// a verdict; ones that differ in anything else do not.
func TestCacheKeyIgnoresOnlyConstants(t *testing.T) {
	f := newTestFirewall(t)
	if v := f.Check("SELECT abalance FROM accounts WHERE aid = 1"); v.Refused() {
		t.Fatal(v.Reason)
	}
	f.cache.Wait()
	if v := f.Check("SELECT abalance FROM accounts WHERE aid = 2"); v.Refused() {
		t.Fatal(v.Reason)
	}
	if v := f.Check("SELECT abalance FROM accounts WHERE aid = set_config('tenantguard.binding', 'x', false)::int"); !v.Refused() {
		t.Fatal("differs in a function, must not share the cached verdict")
	}
	if v := f.Check(strings.Repeat("SELECT 1;", 3)); v.Refused() {
		t.Fatal(v.Reason)
	}
}

// TestFingerprint: statements that differ only in constants share a
// fingerprint, whether or not their verdict came from the cache; others
// do not.
func TestFingerprint(t *testing.T) {
	f := newTestFirewall(t)
	a := f.Check("SELECT name FROM items WHERE id = 1").Fingerprint
	f.cache.Wait()
	b := f.Check("SELECT name FROM items WHERE id = 42").Fingerprint
	c := f.Check("SELECT name FROM items WHERE qty = 1").Fingerprint
	d := f.Check("SELECT name FROM items WHERE id = $1").Fingerprint
	if a == 0 || a != b || a != d {
		t.Fatalf("same shape, fingerprints %x %x %x", a, b, d)
	}
	if c == a {
		t.Fatal("different statements share a fingerprint")
	}
	if v := f.Check("SELEC nonsense"); v.Fingerprint == 0 || !v.Syntax {
		t.Fatalf("syntax error: %+v", v)
	}
}

// TestVerdictsReadingConstants: a verdict that depends on a constant's
// value is cached by exact text, on both paths, so an allowed value never
// answers for a refused one.
func TestVerdictsReadingConstants(t *testing.T) {
	for _, path := range []struct {
		name  string
		check func(*Firewall, string) *Verdict
	}{{"shape", (*Firewall).Check}, {"normalized", (*Firewall).checkNormalized}} {
		t.Run(path.name, func(t *testing.T) {
			f := newTestFirewall(t)
			if v := path.check(f, "SET client_encoding = 'UTF8'"); v.Refused() {
				t.Fatal(v.Reason)
			}
			f.cache.Wait()
			if v := path.check(f, "SET client_encoding = 'GBK'"); v.Rule != "encoding" {
				t.Fatalf("rule %q", v.Rule)
			}
		})
	}
}

// TestValidText: the eight-at-a-time check agrees with the careful one.
func TestValidText(t *testing.T) {
	for _, s := range []string{"", "SELECT 1", "SELECT 'café'", "SELECT 'caf\xc3'", "SELECT 1\x00", "\x00", "12345678\x00",
		"1234567\x80", "abcdefgh", "abcdefghi\xff", "éééééééé"} {
		want := utf8.ValidString(s) && !strings.Contains(s, "\x00")
		if got := validText(s); got != want {
			t.Errorf("validText(%q) = %v", s, got)
		}
	}
}
