// Command results puts one benchmark's markdown report into a section of
// bench/RESULTS.md, replacing that section's previous content and leaving
// every other section as it is, so each benchmark can be re-run alone:
//
//	go run ./bench/results -section pgbench -title "PostgreSQL: pgbench" -in /tmp/pgbench.md
//
// A section is the text between `<!-- begin NAME -->` and
// `<!-- end NAME -->`; a section not in the file yet is appended.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	file := flag.String("file", "bench/RESULTS.md", "the results file")
	section := flag.String("section", "", "the section's name (required)")
	title := flag.String("title", "", "the section's heading (default: the name)")
	in := flag.String("in", "", "markdown file with the section's new content (required)")
	note := flag.String("note", "", "a line put under the heading (e.g. the date and the machine)")
	flag.Parse()
	if *section == "" || *in == "" {
		fmt.Fprintln(os.Stderr, "results: -section and -in are required")
		os.Exit(2)
	}
	body, err := os.ReadFile(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "results:", err)
		os.Exit(1)
	}
	old, err := os.ReadFile(*file)
	if err != nil && !os.IsNotExist(err) {
		fmt.Fprintln(os.Stderr, "results:", err)
		os.Exit(1)
	}
	if *title == "" {
		*title = *section
	}
	content := "## " + *title + "\n\n"
	if *note != "" {
		content += *note + "\n\n"
	}
	content += strings.TrimSpace(string(body)) + "\n"
	out := Replace(string(old), *section, content)
	if err := os.WriteFile(*file, []byte(out), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "results:", err)
		os.Exit(1)
	}
}

// Replace returns doc with section name's content replaced by content (or
// the section appended when doc has none).
func Replace(doc, name, content string) string {
	begin, end := "<!-- begin "+name+" -->", "<!-- end "+name+" -->"
	block := begin + "\n" + content + end + "\n"
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		if doc != "" && !strings.HasSuffix(doc, "\n\n") {
			doc = strings.TrimRight(doc, "\n") + "\n\n"
		}
		return doc + block
	}
	rest := doc[j+len(end):]
	rest = strings.TrimPrefix(rest, "\n")
	return doc[:i] + block + rest
}
