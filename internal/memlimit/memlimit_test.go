package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "", want: 0},
		{in: "none", want: Unlimited},
		{in: "1048576", want: 1 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: "512 KiB", want: 512 << 10},
		{in: "2GiB", want: 2 << 30},
		{in: "100B", want: 100},
		{in: "64MB", bad: true},
		{in: "-1MiB", bad: true},
		{in: "0", bad: true},
		{in: "lots", bad: true},
		{in: "99999999999GiB", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("Parse(%q) = %d, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestContainerLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name  string
		files []string
		want  int64
	}{
		{"v2 limit", []string{write("v2", "536870912\n")}, 512 << 20},
		{"v2 max", []string{write("v2max", "max\n"), write("v1a", "268435456\n")}, 0},
		{"v1 limit after a missing v2", []string{filepath.Join(dir, "absent"), write("v1", "268435456\n")}, 256 << 20},
		{"v1 no limit", []string{write("v1none", "9223372036854771712\n")}, 0},
		{"none", []string{filepath.Join(dir, "absent")}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := containerLimit(tc.files); got != tc.want {
				t.Fatalf("containerLimit = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestChoose(t *testing.T) {
	dir := t.TempDir()
	saved := cgroupFiles
	defer func() { cgroupFiles = saved }()
	p := filepath.Join(dir, "memory.max")
	if err := os.WriteFile(p, []byte("1073741824\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cgroupFiles = []string{p}
	t.Setenv("GOMEMLIMIT", "")
	if got, src := Choose(0); src != SourceContainer || got != 966367641 {
		t.Errorf("Choose(0) in a 1 GiB container = %d, %s", got, src)
	}
	if got, src := Choose(300 << 20); src != SourceConfig || got != 300<<20 {
		t.Errorf("Choose(300MiB) = %d, %s", got, src)
	}
	if got, src := Choose(Unlimited); src != SourceNone || got != 0 {
		t.Errorf("Choose(none) = %d, %s", got, src)
	}
	cgroupFiles = []string{filepath.Join(dir, "absent")}
	if got, src := Choose(0); src != SourceNone || got != 0 {
		t.Errorf("Choose(0) outside a container = %d, %s", got, src)
	}
	// GOMEMLIMIT wins over the configuration: the runtime applied it.
	t.Setenv("GOMEMLIMIT", "123MiB")
	if _, src := Choose(300 << 20); src != SourceEnv {
		t.Errorf("Choose with GOMEMLIMIT set: source %s", src)
	}
}

func TestApply(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	if got, src := Apply(200 << 20); got != 200<<20 || src != SourceConfig {
		t.Fatalf("Apply = %d, %s", got, src)
	}
	if got := debug.SetMemoryLimit(-1); got != 200<<20 {
		t.Fatalf("runtime's limit %d after Apply(200MiB)", got)
	}
}
