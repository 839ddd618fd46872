package policypb_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

var update = flag.Bool("update", false, "rewrite the MarshalJSON and MarshalYAML golden files in testdata")

const (
	acmeVerifier1  = "SCRAM-SHA-256$4096:OLopLdLn2iIXV2xKEo1XcA==$//3M5CupSzKX1w6u8HiK635fFImcH0okPkDYYZHP8jQ=:ZiWR3X/MmfuYovCcz0sGV9woCQm3U1q95TjeelpKh+A="
	acmeVerifier2  = "SCRAM-SHA-256$4096:XGRcrE9YfBP6tDewpVkAsQ==$Cx+6g++2DtewABUCaXesZUUnk6X3fej5zPORLuw6/Z0=:j0J3+Z3mmXSX6vjPlDWiZA1sejDcZ3AeZoQlex2FvCg="
	globexVerifier = "SCRAM-SHA-256$4096:25lz7cas1wqdYykKP6ZvhQ==$qY+cIJyYtPqao4Gr44gvlASsvS4jB7G3dklhATZkg1I=:9gPM7G3N6cWKWhsdyZvWJfPljCkAv37aQGey5fpJJ2s="
)

// twoTenants is testdata/two-tenants.yaml built by hand.
func twoTenants() *policypb.Policy {
	return &policypb.Policy{
		Version: "42",
		Tenants: []*policypb.Tenant{
			{
				Id:          "acme",
				Credentials: []string{acmeVerifier1, acmeVerifier2},
				Allow:       &policypb.Permissions{Read: true, Write: true},
				Limits: &policypb.Limits{MaxConnections: 50, MaxTransactions: 10,
					StatementTimeout: durationpb.New(30 * time.Second), CommandsPerSecond: 5000},
			},
			{
				Id:                   "globex",
				Credentials:          []string{globexVerifier},
				Allow:                &policypb.Permissions{Read: true},
				Limits:               &policypb.Limits{StatementTimeout: durationpb.New(2500 * time.Millisecond)},
				ShowConstraintDetail: true,
			},
		},
		Tables: []*policypb.Table{
			{Name: "public.orders", TenantColumn: "tenant_id"},
			{Name: "public.currencies", Shared: true},
		},
		Redis: &policypb.RedisRules{Namespace: policypb.NamespaceMode_NAMESPACE_MODE_ONE_SLOT, AllowScripting: proto.Bool(false), Emulate: []string{"flushdb", "dbsize"}},
		Sessions: &policypb.SessionSettings{
			Ttl: durationpb.New(15 * time.Minute), MaxAge: durationpb.New(12 * time.Hour), Grace: durationpb.New(30 * time.Second),
			EndMode: policypb.SessionEndMode_SESSION_END_MODE_BOUNDARY, StripAuthorization: proto.Bool(true),
		},
	}
}

func TestParseYAMLTwoTenants(t *testing.T) {
	p, err := policypb.ParseYAML(readFile(t, "testdata/two-tenants.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := twoTenants(); !proto.Equal(p, want) {
		t.Fatalf("parsed\n%v\nwant\n%v", p, want)
	}
	if err := policypb.Validate(p); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

// TestMarshalJSONGolden pins MarshalJSON's exact output: proto names,
// two-space indent, durations as "30s", enums by name, zero values omitted.
func TestMarshalJSONGolden(t *testing.T) {
	got, err := policypb.MarshalJSON(twoTenants())
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/two-tenants.json"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, golden); !bytes.Equal(got, want) {
		t.Fatalf("MarshalJSON differs from %s (go test -run TestMarshalJSONGolden -update to accept):\n%s", golden, got)
	}
	for _, want := range []string{`"statement_timeout": "30s"`, `"statement_timeout": "2.500s"`, `"namespace": "NAMESPACE_MODE_ONE_SLOT"`, `"max_age": "43200s"`} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("MarshalJSON output lacks %s", want)
		}
	}
}

// TestMarshalYAMLGolden pins MarshalYAML's output: block style, the field
// order of MarshalJSON, two-space indent.
func TestMarshalYAMLGolden(t *testing.T) {
	got, err := policypb.MarshalYAML(twoTenants())
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/two-tenants.marshal.yaml"
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if want := readFile(t, golden); !bytes.Equal(got, want) {
		t.Fatalf("MarshalYAML differs from %s (go test -run TestMarshalYAMLGolden -update to accept):\n%s", golden, got)
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		p    *policypb.Policy
	}{
		{"empty", &policypb.Policy{}},
		{"two tenants", twoTenants()},
		{"strip false and zero durations", &policypb.Policy{Sessions: &policypb.SessionSettings{
			StripAuthorization: proto.Bool(false), Grace: durationpb.New(0)}}},
		{"string that reads as other types", &policypb.Policy{Version: "true", Tenants: []*policypb.Tenant{
			{Id: "123", Credentials: []string{"null", "1.5", "- x", "a: b", "#c", "  padded  ", "line\nbreak"}}}}},
		{"characters YAML must escape", &policypb.Policy{Version: "\t\u0080\u007f\u0085\ufeff\u2028\U0001F600\x00\r\n", Tenants: []*policypb.Tenant{
			{Id: "\ufeffbom", Credentials: []string{"\u0080", "'\"", "\\", "~", ""}}}}},
		{"enum values outside the enum", &policypb.Policy{Redis: &policypb.RedisRules{Namespace: 7},
			Sessions: &policypb.SessionSettings{EndMode: -3}}},
		{"suspended and shared", &policypb.Policy{Tenants: []*policypb.Tenant{{Id: "x", Suspended: true}},
			Tables: []*policypb.Table{{Name: "public.t", Shared: true}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js, err := policypb.MarshalJSON(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			fromJSON, err := policypb.ParseJSON(js)
			if err != nil {
				t.Fatalf("ParseJSON(MarshalJSON):\n%s\n%v", js, err)
			}
			if !proto.Equal(fromJSON, tc.p) {
				t.Fatalf("JSON round trip:\n%s\ngave %v", js, fromJSON)
			}
			y, err := policypb.MarshalYAML(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			fromYAML, err := policypb.ParseYAML(y)
			if err != nil {
				t.Fatalf("ParseYAML(MarshalYAML):\n%s\n%v", y, err)
			}
			if !proto.Equal(fromYAML, tc.p) {
				t.Fatalf("YAML round trip:\n%s\ngave %v", y, fromYAML)
			}
			if bytes.Contains(y, []byte("{")) && len(tc.p.GetTenants()) > 0 {
				t.Errorf("MarshalYAML wrote flow style:\n%s", y)
			}
		})
	}
}

// TestYAMLAndJSONAgree: the same policy written both ways parses equal,
// with both protojson spellings of field names.
func TestYAMLAndJSONAgree(t *testing.T) {
	y := `
tenants:
  - id: acme
    credentials: ["` + acmeVerifier1 + `"]
    showConstraintDetail: true
    limits: {max_connections: 3, statementTimeout: 1.5s}
sessions: {end_mode: SESSION_END_MODE_IMMEDIATE, maxAge: 60s}
`
	j := `{"tenants": [{"id": "acme", "credentials": ["` + acmeVerifier1 + `"], "show_constraint_detail": true,
  "limits": {"maxConnections": 3, "statement_timeout": "1.5s"}}],
  "sessions": {"endMode": "SESSION_END_MODE_IMMEDIATE", "max_age": "60s"}}`
	py, err := policypb.ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	pj, err := policypb.ParseJSON([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(py, pj) {
		t.Fatalf("YAML gave %v\nJSON gave %v", py, pj)
	}
	if got := py.GetTenants()[0].GetLimits().GetStatementTimeout().AsDuration(); got != 1500*time.Millisecond {
		t.Fatalf("statement_timeout = %v", got)
	}
}

func TestParseRefuses(t *testing.T) {
	cases := []struct {
		name  string
		yaml  bool
		input string
		want  string // substring of the error
		field string // the FieldError's field, if any
	}{
		{"unknown top-level field yaml", true, "tenant: []", "tenant: unknown field", "tenant"},
		{"unknown top-level field json", false, `{"tenant": []}`, "tenant: unknown field", "tenant"},
		{"unknown nested field yaml", true, "tenants:\n  - id: a\n  - id: b\n    limits: {max_conections: 3}", "tenants[1].limits.max_conections: unknown field", "tenants[1].limits.max_conections"},
		{"unknown nested field json", false, `{"tenants": [{"id": "a", "limits": {"maxConections": 3}}]}`, "tenants[0].limits.maxConections: unknown field", "tenants[0].limits.maxConections"},
		{"unknown redis field json", false, `{"redis": {"emulate": [], "allowScripts": true}}`, "redis.allowScripts: unknown field", "redis.allowScripts"},
		{"unknown session field yaml", true, "sessions: {ttl: 60s, strip: true}", "sessions.strip: unknown field", "sessions.strip"},
		{"duration without unit", true, "sessions: {ttl: \"90\"}", `sessions.ttl: "90" is not a duration, e.g. "30s", "0.250s", "1m30s" or "250ms"`, "sessions.ttl"},
		{"duration unknown unit", false, `{"sessions": {"ttl": "2d"}}`, `sessions.ttl: "2d" is not a duration`, "sessions.ttl"},
		{"go duration beyond 292 years", true, "sessions: {ttl: 3000000h}", `sessions.ttl: "3000000h" is not a duration`, "sessions.ttl"},
		{"duration number", false, `{"sessions": {"ttl": 60}}`, "sessions.ttl: expected a duration", "sessions.ttl"},
		{"duration out of range", false, `{"sessions": {"grace": "999999999999s"}}`, "grace", ""},
		{"enum by unknown word", true, "redis: {namespace: one_slot}", `redis.namespace: "one_slot" is not one of NAMESPACE_MODE_SPREAD, NAMESPACE_MODE_ONE_SLOT (or spread, one-slot)`, "redis.namespace"},
		{"enum unspecified has no word", false, `{"sessions": {"end_mode": "unspecified"}}`, `sessions.end_mode: "unspecified" is not one of SESSION_END_MODE_IMMEDIATE, SESSION_END_MODE_BOUNDARY (or immediate, boundary)`, "sessions.end_mode"},
		{"enum full name lower case", false, `{"redis": {"namespace": "namespace_mode_spread"}}`, `redis.namespace: "namespace_mode_spread" is not one of`, "redis.namespace"},
		{"string for bool", true, "tenants: [{id: a, suspended: \"yes\"}]", "tenants[0].suspended: expected true or false", "tenants[0].suspended"},
		{"number for string", true, "tenants: [{id: a, credentials: [x, 12]}]", "tenants[0].credentials[1]: expected a string", "tenants[0].credentials[1]"},
		{"scalar for list", false, `{"tables": {"name": "public.t"}}`, "tables: expected a list", "tables"},
		{"scalar for message", true, "tables: [public.orders]", "tables[0]: expected a mapping", "tables[0]"},
		{"int32 overflow", false, `{"tenants": [{"limits": {"max_connections": 3000000000}}]}`, "tenants[0].limits.max_connections: expected a whole number", "tenants[0].limits.max_connections"},
		{"fraction for int32", true, "tenants: [{limits: {commands_per_second: 1.5}}]", "tenants[0].limits.commands_per_second: expected a whole number", "tenants[0].limits.commands_per_second"},
		{"duplicate field json", false, `{"version": "a", "version": "b"}`, "duplicate", ""},
		{"duplicate field two spellings", false, `{"tenants": [{"show_constraint_detail": true, "showConstraintDetail": false}]}`, "duplicate", ""},
		{"duplicate key yaml", true, "version: a\nversion: b", "already defined", ""},
		{"two yaml documents", true, "version: a\n---\nversion: b", "more than one YAML document", ""},
		{"non-string key", true, "tenants:\n  - 1: x", "tenants[0]: mapping key 1 is not a string", ""},
		{"top level list yaml", true, "- a", "", ""},
		{"top level string json", false, `"x"`, "", ""},
		{"not json", false, `{"version": `, "", ""},
		{"bad yaml", true, "a: [", "", ""},
		{"infinite number", true, "version: .inf", "not a finite number", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parse := policypb.ParseJSON
			if tc.yaml {
				parse = policypb.ParseYAML
			}
			p, err := parse([]byte(tc.input))
			if err == nil {
				t.Fatalf("accepted %q as %v", tc.input, p)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if tc.field != "" {
				var fe *policy.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("error %q: want a FieldError for %s", err, tc.field)
				}
			}
			if tc.yaml && strings.Contains(err.Error(), "(line ") {
				t.Errorf("YAML error %q carries a position in the intermediate JSON", err)
			}
		})
	}
}

func TestParseEmptyYAML(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "---\n", "{}"} {
		p, err := policypb.ParseYAML([]byte(in))
		if err != nil {
			t.Fatalf("ParseYAML(%q): %v", in, err)
		}
		if !proto.Equal(p, &policypb.Policy{}) {
			t.Fatalf("ParseYAML(%q) = %v", in, p)
		}
	}
}

// TestYAMLAnchors: anchors and merge keys are plain YAML and work.
func TestYAMLAnchors(t *testing.T) {
	y := `
x-limits: &std {max_connections: 5, statement_timeout: 10s}
tenants:
  - {id: a, limits: *std}
  - id: b
    limits: {<<: *std, max_connections: 7}
`
	if _, err := policypb.ParseYAML([]byte(y)); err == nil || !strings.Contains(err.Error(), "x-limits: unknown field") {
		t.Fatalf("a top-level x-limits key must be refused as unknown, got %v", err)
	}
	y = `
tenants:
  - &a {id: a, limits: &std {max_connections: 5, statement_timeout: 10s}}
  - id: b
    limits: {<<: *std, max_connections: 7}
`
	p, err := policypb.ParseYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GetTenants()[1].GetLimits(); got.GetMaxConnections() != 7 || got.GetStatementTimeout().AsDuration() != 10*time.Second {
		t.Fatalf("merged limits = %v", got)
	}
}

// TestParseShortForms: Go durations and the configuration's short enum
// words are accepted in YAML and JSON and read as the protojson forms do.
func TestParseShortForms(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		json string
		want *policypb.Policy
	}{
		{"hours minutes seconds",
			"sessions: {ttl: 1h, max_age: 1m30s, grace: 250ms}",
			`{"sessions": {"ttl": "1h", "maxAge": "1m30s", "grace": "250ms"}}`,
			&policypb.Policy{Sessions: &policypb.SessionSettings{Ttl: durationpb.New(time.Hour),
				MaxAge: durationpb.New(90 * time.Second), Grace: durationpb.New(250 * time.Millisecond)}}},
		{"fractions and small units",
			"tenants: [{id: a, limits: {statement_timeout: 1.5h}}, {id: b, limits: {statement_timeout: 1us}}, {id: c, limits: {statement_timeout: \"0\"}}]",
			`{"tenants": [{"id": "a", "limits": {"statement_timeout": "1.5h"}}, {"id": "b", "limits": {"statementTimeout": "1µs"}}, {"id": "c", "limits": {"statement_timeout": "0"}}]}`,
			&policypb.Policy{Tenants: []*policypb.Tenant{
				{Id: "a", Limits: &policypb.Limits{StatementTimeout: durationpb.New(90 * time.Minute)}},
				{Id: "b", Limits: &policypb.Limits{StatementTimeout: durationpb.New(time.Microsecond)}},
				{Id: "c", Limits: &policypb.Limits{StatementTimeout: durationpb.New(0)}}}}},
		{"negative go duration",
			"sessions: {grace: -1m}",
			`{"sessions": {"grace": "-1m"}}`,
			&policypb.Policy{Sessions: &policypb.SessionSettings{Grace: durationpb.New(-time.Minute)}}},
		{"protojson durations unchanged",
			"sessions: {ttl: 900s, grace: 0.250s}",
			`{"sessions": {"ttl": "900s", "grace": "0.250s"}}`,
			&policypb.Policy{Sessions: &policypb.SessionSettings{Ttl: durationpb.New(15 * time.Minute), Grace: durationpb.New(250 * time.Millisecond)}}},
		{"short enum words",
			"redis: {namespace: one-slot}\nsessions: {end_mode: immediate}",
			`{"redis": {"namespace": "one-slot"}, "sessions": {"endMode": "immediate"}}`,
			&policypb.Policy{Redis: &policypb.RedisRules{Namespace: policypb.NamespaceMode_NAMESPACE_MODE_ONE_SLOT},
				Sessions: &policypb.SessionSettings{EndMode: policypb.SessionEndMode_SESSION_END_MODE_IMMEDIATE}}},
		{"short enum words any case",
			"redis: {namespace: SPREAD}\nsessions: {end_mode: Boundary}",
			`{"redis": {"namespace": "Spread"}, "sessions": {"end_mode": "BOUNDARY"}}`,
			&policypb.Policy{Redis: &policypb.RedisRules{Namespace: policypb.NamespaceMode_NAMESPACE_MODE_SPREAD},
				Sessions: &policypb.SessionSettings{EndMode: policypb.SessionEndMode_SESSION_END_MODE_BOUNDARY}}},
		{"full enum names and numbers unchanged",
			"redis: {namespace: NAMESPACE_MODE_ONE_SLOT}\nsessions: {end_mode: 1}",
			`{"redis": {"namespace": "NAMESPACE_MODE_ONE_SLOT"}, "sessions": {"end_mode": 1}}`,
			&policypb.Policy{Redis: &policypb.RedisRules{Namespace: policypb.NamespaceMode_NAMESPACE_MODE_ONE_SLOT},
				Sessions: &policypb.SessionSettings{EndMode: policypb.SessionEndMode_SESSION_END_MODE_IMMEDIATE}}},
		{"duration-like strings elsewhere are left alone",
			"version: 1h\nname: spread\ntenants: [{id: 1m, credentials: [250ms]}]",
			`{"version": "1h", "name": "spread", "tenants": [{"id": "1m", "credentials": ["250ms"]}]}`,
			&policypb.Policy{Version: "1h", Name: "spread", Tenants: []*policypb.Tenant{{Id: "1m", Credentials: []string{"250ms"}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			py, err := policypb.ParseYAML([]byte(tc.yaml))
			if err != nil {
				t.Fatalf("ParseYAML: %v", err)
			}
			if !proto.Equal(py, tc.want) {
				t.Errorf("ParseYAML = %v, want %v", py, tc.want)
			}
			pj, err := policypb.ParseJSON([]byte(tc.json))
			if err != nil {
				t.Fatalf("ParseJSON: %v", err)
			}
			if !proto.Equal(pj, tc.want) {
				t.Errorf("ParseJSON = %v, want %v", pj, tc.want)
			}
			// MarshalJSON writes the canonical protojson form.
			js, err := policypb.MarshalJSON(pj)
			if err != nil {
				t.Fatal(err)
			}
			for _, short := range []string{`"1h"`, `"1m30s"`, `"250ms"`, `"one-slot"`, `"immediate"`, `"Spread"`} {
				if bytes.Contains(js, []byte(short)) && !strings.Contains(tc.name, "elsewhere") {
					t.Errorf("MarshalJSON kept the short form %s:\n%s", short, js)
				}
			}
		})
	}
}

// TestParseJSONShortFormsKeepStrictness: rewriting short forms keeps what
// protojson refuses refused, with errors that point into the text as given.
func TestParseJSONShortFormsKeepStrictness(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  string
	}{
		{"duplicate field", `{"version": "a", "version": "b", "sessions": {"ttl": "1h"}}`, "duplicate"},
		{"duplicate field after a rewrite", `{"sessions": {"ttl": "1h", "ttl": "2h"}}`, "duplicate"},
		{"invalid UTF-8 elsewhere", "{\"version\": \"\xff\", \"sessions\": {\"ttl\": \"1h\"}}", "invalid UTF-8"},
		{"trailing data", `{"sessions": {"ttl": "1h"}} {}`, ""},
		{"error position kept", "{\"sessions\": {\"ttl\": \"1h\"},\n\n  \"tables\": [{\"name\": 7}]}", "tables[0].name: expected a string"},
		{"protojson position kept", "{\"sessions\": {\"ttl\": \"1h\"},\n\n  \"version\": \"a\", \"version\": \"b\"}", "(line 3:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policypb.ParseJSON([]byte(tc.input))
			if err == nil {
				t.Fatalf("accepted %q as %v", tc.input, p)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
