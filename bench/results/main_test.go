package main

import "testing"

func TestReplace(t *testing.T) {
	doc := Replace("", "a", "## a\n\none\n")
	doc = Replace(doc, "b", "## b\n\ntwo\n")
	doc = Replace(doc, "a", "## a\n\nthree\n")
	want := "<!-- begin a -->\n## a\n\nthree\n<!-- end a -->\n\n<!-- begin b -->\n## b\n\ntwo\n<!-- end b -->\n"
	if doc != want {
		t.Fatalf("got\n%q\nwant\n%q", doc, want)
	}
	if again := Replace(doc, "b", "## b\n\ntwo\n"); again != doc {
		t.Fatalf("replacing with the same content changed the file:\n%q", again)
	}
}
