package store

import (
	"fmt"
	"strings"
	"testing"
)

func TestUnifiedDiff(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "x\ny\n", b: "x\ny\n", want: ""},
		{
			name: "from empty",
			a:    "", b: "a\nb\n",
			want: "--- old\n+++ new\n@@ -0,0 +1,2 @@\n+a\n+b\n",
		},
		{
			name: "to empty",
			a:    "a\n", b: "",
			want: "--- old\n+++ new\n@@ -1 +0,0 @@\n-a\n",
		},
		{
			name: "one line changed in the middle",
			a:    "1\n2\n3\n4\n5\n6\n7\n8\n9\n", b: "1\n2\n3\n4\nfive\n6\n7\n8\n9\n",
			want: "--- old\n+++ new\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n",
		},
		{
			name: "insert at the start",
			a:    "b\nc\n", b: "a\nb\nc\n",
			want: "--- old\n+++ new\n@@ -1,2 +1,3 @@\n+a\n b\n c\n",
		},
		{
			name: "two hunks",
			a:    "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", b: "one\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\ntwelve\n",
			want: "--- old\n+++ new\n@@ -1,4 +1,4 @@\n-1\n+one\n 2\n 3\n 4\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+twelve\n",
		},
		{
			name: "hunks whose context touches merge",
			a:    "1\n2\n3\n4\n5\n6\n7\n8\n", b: "one\n2\n3\n4\n5\n6\n7\neight\n",
			want: "--- old\n+++ new\n@@ -1,8 +1,8 @@\n-1\n+one\n 2\n 3\n 4\n 5\n 6\n 7\n-8\n+eight\n",
		},
		{
			name: "no newline at end",
			a:    "a\nb", b: "a\nc",
			want: "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := unifiedDiff("old", "new", tc.a, tc.b); got != tc.want {
				t.Errorf("diff:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// TestLineDiffMinimal checks that the edit script rebuilds both texts and
// is as short as the longest common subsequence allows.
func TestLineDiffMinimal(t *testing.T) {
	alphabet := []string{"a", "b", "c"}
	seed := uint32(1)
	next := func() uint32 { seed = seed*1664525 + 1013904223; return seed >> 16 }
	for i := range 500 {
		a := make([]string, next()%12)
		for j := range a {
			a[j] = alphabet[next()%3]
		}
		b := make([]string, next()%12)
		for j := range b {
			b[j] = alphabet[next()%3]
		}
		checkScript(t, fmt.Sprint(i), a, b)
	}
}

func checkScript(t *testing.T, name string, a, b []string) {
	t.Helper()
	script, ok := lineDiff(a, b, len(a)+len(b))
	if !ok {
		t.Fatalf("%s: no script for %q → %q", name, a, b)
	}
	var ra, rb []string
	edits := 0
	for _, e := range script {
		switch e.kind {
		case editEqual:
			if a[e.a] != b[e.b] {
				t.Fatalf("%s: equal line %d/%d differs", name, e.a, e.b)
			}
			ra, rb = append(ra, a[e.a]), append(rb, b[e.b])
		case editDelete:
			ra = append(ra, a[e.a])
			edits++
		case editInsert:
			rb = append(rb, b[e.b])
			edits++
		}
	}
	if strings.Join(ra, ",") != strings.Join(a, ",") || strings.Join(rb, ",") != strings.Join(b, ",") {
		t.Fatalf("%s: script for %q → %q rebuilds %q → %q", name, a, b, ra, rb)
	}
	if want := len(a) + len(b) - 2*lcs(a, b); edits != want {
		t.Fatalf("%s: %d edits for %q → %q, the minimum is %d", name, edits, a, b, want)
	}
}

func lcs(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func FuzzLineDiff(f *testing.F) {
	f.Add("a\nb\nc\n", "a\nc\nd\n")
	f.Add("", "x\n")
	f.Add("{\n  \"a\": 1\n}\n", "{\n  \"a\": 2,\n  \"b\": 3\n}\n")
	f.Fuzz(func(t *testing.T, x, y string) {
		a, b := strings.Split(x, "\n"), strings.Split(y, "\n")
		if len(a)+len(b) > 400 {
			return
		}
		checkScript(t, "fuzz", a, b)
		_ = unifiedDiff("a", "b", x, y)
	})
}

func TestUnifiedDiffBounded(t *testing.T) {
	var a, b strings.Builder
	for i := range maxDiffEdits {
		fmt.Fprintf(&a, "a%d\n", i)
		fmt.Fprintf(&b, "b%d\n", i)
	}
	got := unifiedDiff("old", "new", a.String(), b.String())
	if !strings.HasPrefix(got, "diff omitted:") {
		t.Fatalf("a diff of %d changed lines was not omitted: %.200q", 2*maxDiffEdits, got)
	}
	// Past the line bound it is refused without running the algorithm.
	big := strings.Repeat("x\n", maxDiffLines+1)
	if got := unifiedDiff("old", "new", big, "y\n"); !strings.HasPrefix(got, "diff omitted:") {
		t.Fatalf("a diff of %d lines was not omitted", maxDiffLines+2)
	}
}

func TestCanonicalJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"sorted keys, no space", `{"b": 1, "a": [true, null, "x"]}`, `{"a":[true,null,"x"],"b":1}`},
		{"escapes only what JSON needs", `"\u003c\u2028é\u0001\t\"\\/"`, "\"<\u2028é\\u0001\\t\\\"\\\\/\""},
		{"code point order", `{"é": 1, "z": 2, "Z": 3}`, `{"Z":3,"z":2,"é":1}`},
		{"big integers kept", `{"n": 9223372036854775807}`, `{"n":9223372036854775807}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := canonicalize([]byte(`1.5`)); err == nil {
		t.Error("a float was accepted")
	}
}
