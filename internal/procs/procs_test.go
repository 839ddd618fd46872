package procs

import (
	"runtime"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
		bad  bool
	}{
		{"", 0, false}, {"auto", Auto, false}, {"1", 1, false}, {" 4 ", 4, false},
		{"0", 0, true}, {"-2", 0, true}, {"two", 0, true}, {"1025", 0, true},
	} {
		got, err := Parse(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, error %v", c.in, got, err, c.want, c.bad)
		}
	}
}

func TestChooseAndApply(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })

	t.Setenv("GOMAXPROCS", "")
	if n, src := Choose(0); n != Default || src != SourceDefault {
		t.Errorf("unset: %d from %s", n, src)
	}
	if n, src := Choose(3); n != 3 || src != SourceConfig {
		t.Errorf("configured 3: %d from %s", n, src)
	}
	runtime.GOMAXPROCS(5)
	if n, src := Choose(Auto); n != 5 || src != SourceAuto {
		t.Errorf("auto: %d from %s, want the runtime's 5", n, src)
	}
	if n, _ := Apply(2); n != 2 || runtime.GOMAXPROCS(0) != 2 {
		t.Errorf("Apply(2) = %d, runtime has %d", n, runtime.GOMAXPROCS(0))
	}
	runtime.GOMAXPROCS(5)
	if n, _ := Apply(Auto); n != 5 || runtime.GOMAXPROCS(0) != 5 {
		t.Errorf("Apply(auto) changed the runtime's 5 to %d", runtime.GOMAXPROCS(0))
	}

	t.Setenv("GOMAXPROCS", "7") // as if read by the runtime at start
	runtime.GOMAXPROCS(7)
	if n, src := Apply(1); n != 7 || src != SourceEnv || runtime.GOMAXPROCS(0) != 7 {
		t.Errorf("environment 7, configured 1: %d from %s, runtime %d", n, src, runtime.GOMAXPROCS(0))
	}
}
