package firewall

import (
	"strings"
	"testing"
)

func TestNamespaceNotify(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // substrings of the rewritten text
		same     bool
	}{
		{"notify", "NOTIFY orders", []string{`NOTIFY "tg.acme.orders"`}, false},
		{"notify payload", "NOTIFY orders, 'shipped 42'", []string{`"tg.acme.orders"`, `'shipped 42'`}, false},
		{"pg_notify constant", "SELECT pg_notify('orders', 'x')", []string{`pg_notify('tg.acme.' || 'orders', 'x')`}, false},
		{"pg_notify qualified", "SELECT pg_catalog.pg_notify('orders', 'x')", []string{`'tg.acme.' || 'orders'`}, false},
		{"pg_notify column", "SELECT pg_notify(channel, payload) FROM outbox", []string{`'tg.acme.' || channel`}, false},
		{"pg_notify nested", "SELECT coalesce(pg_notify(upper('a'), 'b')::text, '')", []string{`'tg.acme.' || upper('a')`}, false},
		{"no notify", "SELECT 1", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NamespaceNotify(tc.in, "tg.acme.")
			if err != nil {
				t.Fatal(err)
			}
			if tc.same && got != tc.in {
				t.Fatalf("rewrote %q to %q", tc.in, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Fatalf("%q rewrote to %q, want it to contain %q", tc.in, got, w)
				}
			}
		})
	}
}

func TestChannels(t *testing.T) {
	ops, err := Channels("LISTEN orders; UNLISTEN stock; UNLISTEN *")
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 || !ops[0].Listen || ops[0].Channel != "orders" || ops[1].Listen || ops[1].Channel != "stock" || ops[2].Channel != "" {
		t.Fatalf("ops %+v", ops)
	}
	if _, err := Channels("LISTEN a; SELECT 1"); err != ErrMixedListen {
		t.Fatalf("mixed: %v", err)
	}
}

func TestListenNotifyVerdicts(t *testing.T) {
	fw, err := New(Config{BindingSetting: "tenantguard.binding", ProtectedSchema: "tenantguard"})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	for _, tc := range []struct {
		sql            string
		listen, notify bool
	}{
		{"LISTEN ch", true, false},
		{"UNLISTEN *", true, false},
		{"NOTIFY ch, 'x'", false, true},
		{"SELECT pg_notify('ch', 'x')", false, true},
		{"SELECT pg_catalog.pg_notify(c, p) FROM t", false, true},
		{"SELECT 1", false, false},
	} {
		v := fw.Check(tc.sql)
		if v.Refused() || v.Listen != tc.listen || v.Notify != tc.notify {
			t.Errorf("%s: refused %q, listen %v, notify %v; want listen %v, notify %v", tc.sql, v.Rule, v.Listen, v.Notify, tc.listen, tc.notify)
		}
	}
}

func TestCopyTarget(t *testing.T) {
	c, err := CopyTarget("COPY orders (item, amount) FROM STDIN WITH (FORMAT csv, HEADER true)")
	if err != nil || c.Schema != "" || c.Table != "orders" || len(c.Columns) != 2 || c.Columns[1] != "amount" {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = CopyTarget(`COPY public."Orders" FROM STDIN BINARY`)
	if err != nil || c.Schema != "public" || c.Table != "Orders" || c.Columns != nil {
		t.Fatalf("%+v %v", c, err)
	}
	for _, q := range []string{"COPY orders TO STDOUT", "COPY (SELECT 1) TO STDOUT", "SELECT 1", "COPY a FROM STDIN; COPY b FROM STDIN"} {
		if _, err := CopyTarget(q); err == nil {
			t.Errorf("%s: accepted", q)
		}
	}
	got, err := RewriteCopy("COPY orders (item, amount) FROM STDIN WITH (FORMAT csv, HEADER true)", "public.orders")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, `tenantguard_copy."public.orders"(item, amount)`) || !strings.Contains(strings.ToLower(got), "format") || !strings.Contains(strings.ToLower(got), "header") {
		t.Fatalf("rewritten: %s", got)
	}
	fw, err := New(Config{BindingSetting: "tenantguard.binding", ProtectedSchema: "tenantguard"})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if v := fw.Check("COPY orders FROM STDIN"); v.Refused() || !v.CopyFrom {
		t.Fatalf("COPY FROM STDIN: %+v", v)
	}
	if v := fw.Check(`SELECT * FROM tenantguard_copy."public.orders"`); v.Rule != "tenantguard-schema" {
		t.Fatalf("the stage schema: %+v", v)
	}
}
