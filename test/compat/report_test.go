package compat

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// result is one case's outcome. Scripts print it as one JSON line:
// {"case": "copy_from", "ok": true, "detail": ...}.
type result struct {
	Case   string          `json:"case"`
	OK     bool            `json:"ok"`
	Detail json.RawMessage `json:"detail"`
}

// plan is the first line a script prints, before running any case, so that
// a case lost to a crash or a hang is noticed:
// {"client": "psycopg2", "version": "2.9.5", "cases": ["connect_read", …]}.
type plan struct {
	Client  string   `json:"client"`
	Version string   `json:"version"`
	Cases   []string `json:"cases"`
}

// report is what one run of a client gave: its plan and the results it
// printed, and how the run ended.
type report struct {
	plan
	results map[string]result
	runErr  error  // the script's exit error or timeout, if any
	stderr  string // what the script wrote to stderr
}

// parseReport reads a script's output: a plan line, then result lines.
// Lines that are not JSON objects (a library's own chatter) are ignored.
func parseReport(stdout []byte) (report, error) {
	r := report{results: map[string]result{}}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	sawPlan := false
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		if !sawPlan {
			if err := json.Unmarshal(line, &r.plan); err != nil || len(r.Cases) == 0 {
				return r, fmt.Errorf("first line is not a plan: %s", line)
			}
			sawPlan = true
			continue
		}
		var res result
		if err := json.Unmarshal(line, &res); err != nil || res.Case == "" {
			return r, fmt.Errorf("not a result: %s", line)
		}
		if _, dup := r.results[res.Case]; dup {
			return r, fmt.Errorf("case %q reported twice", res.Case)
		}
		r.results[res.Case] = res
	}
	if !sawPlan {
		return r, fmt.Errorf("no plan line in the output:\n%s", stdout)
	}
	return r, sc.Err()
}

// judge turns a client's report into one subtest per planned case. A case
// listed in pending that fails is skipped with the reason; one that passes
// fails the test, so the list is kept honest. Every other case must pass.
func judge(t *testing.T, client string, r report) {
	t.Helper()
	if r.Version != "" {
		t.Logf("%s %s", client, r.Version)
	}
	if r.runErr != nil {
		t.Logf("%s ended with %v; stderr:\n%s", client, r.runErr, r.stderr)
	}
	planned := map[string]bool{}
	for _, name := range r.Cases {
		planned[name] = true
		t.Run(name, func(t *testing.T) {
			id := client + "/" + name
			res, reported := r.results[name]
			reason, isPending := pending[id]
			detail := detailString(res.Detail)
			switch {
			case !reported && isPending:
				t.Skipf("pending: %s (the case did not report: %v)", reason, r.runErr)
			case !reported:
				t.Fatalf("the case did not report (%v); stderr:\n%s", r.runErr, r.stderr)
			case isPending && res.OK:
				t.Fatalf("now works: remove %q from pending (%s)", id, detail)
			case isPending:
				t.Skipf("pending: %s: %s", reason, detail)
			case !res.OK:
				t.Fatal(detail)
			default:
				t.Log(detail)
			}
		})
	}
	var extra []string
	for name := range r.results {
		if !planned[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("%s reported cases it did not plan: %v", client, extra)
	}
	for id := range pending {
		name, ok := strings.CutPrefix(id, client+"/")
		if ok && !planned[name] {
			t.Errorf("pending lists %q, which %s does not run", id, client)
		}
	}
}

// detailString renders a result's detail: a JSON string as its text,
// anything else as JSON.
func detailString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}
