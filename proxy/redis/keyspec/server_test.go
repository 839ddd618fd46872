package keyspec_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/test/harness"
)

// startRedis starts a redis-server of the test's own.
func startRedis(t *testing.T) *redis.Client { return harness.FreshRedis(t) }

func toAny(args []string) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
	}
	return out
}

func toBytes(args []string) [][]byte {
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = []byte(a)
	}
	return out
}

// getkeysCases generates argument lists for c: every argument count from
// one below its arity to a few above, with plain, numeric and keyword
// arguments mixed in at random, and key counts and keywords at every
// position for its keynum and keyword specs.
func getkeysCases(c *keyspec.Command, rng *rand.Rand) [][]string {
	prefix := strings.Split(c.Name, "|")
	n := max(c.Arity, -c.Arity)
	hi := n + 1
	if c.Arity < 0 {
		hi = n + 7
	}
	plain := func(argc int) []string {
		a := make([]string, argc)
		for i := range a {
			if i < len(prefix) {
				a[i] = prefix[i]
			} else {
				a[i] = "p" + strconv.Itoa(i)
			}
		}
		return a
	}
	pool := []string{"0", "1", "2", "3", "-1", "01", "x"}
	for _, ks := range c.KeySpecs {
		if kw := ks.BeginSearch.Keyword; kw != "" {
			// Upper, lower and mixed case, and look-alikes that only Unicode
			// case folding (which Redis does not do) would match.
			lookalike := strings.NewReplacer("S", "\u017f", "K", "\u212a").Replace(kw)
			pool = append(pool, kw, kw, kw, strings.ToLower(kw), strings.ToLower(kw[:1])+kw[1:], lookalike)
		}
	}
	var out [][]string
	for argc := max(len(prefix), n-1); argc <= hi; argc++ {
		out = append(out, plain(argc))
		for range 20 {
			a := plain(argc)
			for i := len(prefix); i < argc; i++ {
				if rng.IntN(3) == 0 {
					a[i] = pool[rng.IntN(len(pool))]
				}
			}
			out = append(out, a)
		}
	}
	for _, ks := range c.KeySpecs {
		switch {
		case ks.FindKeys.Type == keyspec.FindKeynum && ks.BeginSearch.Type == keyspec.BeginIndex:
			idx := ks.BeginSearch.Index + ks.FindKeys.KeyNumIdx
			for count := range 5 {
				for argc := idx + 1; argc <= idx+ks.FindKeys.FirstKey+count+3; argc++ {
					a := plain(max(argc, len(prefix)))
					if idx < len(a) {
						a[idx] = strconv.Itoa(count)
					}
					out = append(out, a)
				}
			}
		case ks.BeginSearch.Type == keyspec.BeginKeyword:
			for argc := n; argc <= n+8; argc++ {
				for pos := len(prefix); pos < argc; pos++ {
					a := plain(argc)
					a[pos] = ks.BeginSearch.Keyword
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// TestLocateMatchesGetkeys cross-checks AppendKeyIndexes against a real
// redis-server's COMMAND GETKEYS for every command and subcommand. Where
// Redis returns keys, Locate must return exactly those, or refuse the
// command as incomplete or ambiguous; arity errors and commands without keys
// must agree too.
func TestLocateMatchesGetkeys(t *testing.T) {
	rdb := startRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	type result struct {
		args []string
		cmd  *redis.Cmd
	}
	var cases []result
	seen := map[string]bool{}
	rng := rand.New(rand.NewPCG(1, 2))
	checked := 0
	for _, c := range keyspec.Commands() {
		if len(c.Subcommands) > 0 {
			continue // a container's own arguments name its subcommands
		}
		checked++
		for _, args := range getkeysCases(c, rng) {
			k := strings.Join(args, "\x00")
			// COMMAND GETKEYS takes at least the command and one argument.
			if len(args) >= 2 && !seen[k] {
				seen[k] = true
				cases = append(cases, result{args: args})
			}
		}
	}
	for start := 0; start < len(cases); start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i < min(start+1000, len(cases)); i++ {
			cases[i].cmd = pipe.Do(ctx, toAny(append([]string{"COMMAND", "GETKEYS"}, cases[i].args...))...)
		}
		_, _ = pipe.Exec(ctx) // each case's error is in its cmd
	}

	counts := map[string]int{}
	examples := map[string][]string{}
	count := func(what string, args []string) {
		counts[what]++
		if examples[what] == nil {
			examples[what] = args
		}
	}
	var mismatches int
	var fallback [][]string
	mismatch := func(args []string, format string, a ...any) {
		mismatches++
		if mismatches <= 30 {
			t.Errorf("%q: %s", args, fmt.Sprintf(format, a...))
		}
	}
	for _, r := range cases {
		args := toBytes(r.args)
		cmd, err := keyspec.Lookup(args)
		if err != nil {
			mismatch(r.args, "Lookup: %v", err)
			continue
		}
		idx, lerr := cmd.AppendKeyIndexes(nil, args)
		var located []string
		for _, i := range idx {
			located = append(located, r.args[i])
		}
		reply, rerr := r.cmd.StringSlice()
		switch {
		case rerr != nil && strings.Contains(rerr.Error(), "Invalid number of arguments"):
			count("redis: arity error", r.args)
			if !errors.Is(lerr, keyspec.ErrArity) {
				mismatch(r.args, "Redis: %v; Locate: %v, %v", rerr, located, lerr)
			}
		case errors.Is(lerr, keyspec.ErrArity):
			if rerr == nil || !strings.Contains(rerr.Error(), "no key arguments") {
				mismatch(r.args, "Locate: %v; Redis: %v, %v", lerr, reply, rerr)
			}
			count("redis: no key arguments (checked before arity); Locate: arity error", r.args)
		case rerr != nil && strings.Contains(rerr.Error(), "no key arguments"):
			count("redis: no key arguments", r.args)
			if cmd.HasKeys() || lerr != nil || len(idx) > 0 {
				mismatch(r.args, "Redis: %v; Locate: %v, %v", rerr, located, lerr)
			}
		case rerr != nil && strings.Contains(rerr.Error(), "Invalid arguments specified"):
			switch {
			case lerr != nil:
				count("redis: invalid arguments; Locate: refused too", r.args)
			case len(idx) == 0:
				count("redis: invalid arguments; Locate: no keys", r.args)
			default:
				// ZUNIONSTORE dst 0 ...: the destination, no source keys.
				count("redis: invalid arguments; Locate: keys (a key count of 0)", r.args)
			}
		case rerr != nil:
			mismatch(r.args, "unexpected Redis error %v", rerr)
		case len(reply) == 0 && lerr != nil:
			count("redis: no keys; Locate: refused", r.args)
		case len(reply) == 0:
			count("redis: no keys; Locate: no keys", r.args)
			if len(idx) > 0 {
				mismatch(r.args, "Redis: no keys; Locate: %v", located)
			}
		case errors.Is(lerr, keyspec.ErrIncomplete):
			count("redis: keys; Locate: refused, incomplete spec ("+cmd.Name+")", r.args)
		case errors.Is(lerr, keyspec.ErrAmbiguousKeyword):
			count("redis: keys; Locate: refused, keyword twice ("+cmd.Name+")", r.args)
		case errors.Is(lerr, keyspec.ErrInvalidKeys):
			// Redis's key specs failed too (same rules), so GETKEYS fell
			// back to the command's own getkeys function, which is laxer
			// (atoi key counts, XREAD's STREAMS anywhere). Refusing is
			// harmless if running the command fails: checked below.
			count("redis: keys from its getkeys fallback; Locate: refused, invalid keys; running it fails too", r.args)
			fallback = append(fallback, r.args)
		case lerr != nil || !slices.Equal(located, reply):
			mismatch(r.args, "Redis: %q; Locate: %q (%v), %v", reply, located, idx, lerr)
		default:
			count("redis: keys; Locate: same keys", r.args)
		}
	}
	// Run the commands Locate refused but GETKEYS found keys for, inside
	// MULTI so that blocking commands cannot block: each must fail.
	for _, args := range fallback {
		cmds, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Do(ctx, toAny(args)...)
			return nil
		})
		if err == nil && len(cmds) > 0 {
			err = cmds[0].Err()
		}
		if err == nil {
			mismatch(args, "Locate refused it as invalid, but Redis runs it")
		}
	}
	t.Logf("%d COMMAND GETKEYS cases over %d commands and subcommands, %d mismatches", len(cases), checked, mismatches)
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		t.Logf("%6d  %s, e.g. %q", counts[k], k, examples[k])
	}
	if counts["redis: keys; Locate: same keys"] < 5000 {
		t.Errorf("only %d cases with keys agreed", counts["redis: keys; Locate: same keys"])
	}
}

// TestErrorsMatchRedis checks that unknown-command and arity errors read
// exactly like redis-server's replies to the same (never executed) commands.
func TestErrorsMatchRedis(t *testing.T) {
	rdb := startRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{"GET"}, {"get", "a", "b"}, {"MSET", "k"}, {"OBJECT", "ENCODING"}, {"Client"},
		{"CLIENT", "KILL"}, {"client", "nope"}, {"xinfo", "x|y"}, {"nope", "a", "b"},
		{"client|kill", "id", "1"}, {"g\r\net", "a\nb"}, {"nope", strings.Repeat("y", 100), strings.Repeat("z", 100)},
		{strings.Repeat("x", 200)}, {"xread", "streams", "s"},
	} {
		b := toBytes(args)
		cmd, err := keyspec.Lookup(b)
		if err == nil {
			err = cmd.CheckArity(len(b))
		}
		rerr := rdb.Do(ctx, toAny(args)...).Err()
		if err == nil || rerr == nil || err.Error() != rerr.Error() {
			t.Errorf("%q: keyspec error %q, redis error %q", args, err, rerr)
		}
	}
}

// TestTableIsGenerated regenerates the table with the generator against the
// local redis-server and compares it with the committed table_gen.go.
func TestTableIsGenerated(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	gen, out := filepath.Join(dir, "gen"), filepath.Join(dir, "table_gen.go")
	for _, c := range []*exec.Cmd{
		exec.CommandContext(ctx, goBin, "build", "-o", gen, "./gen"),
		exec.CommandContext(ctx, gen, "-out", out),
	} {
		c.WaitDelay = 10 * time.Second
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, b)
		}
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("table_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := lines(got), lines(want)
	i := 0
	for i < min(len(gl), len(wl)) && gl[i] == wl[i] {
		i++
	}
	at := func(l []string) string {
		if i < len(l) {
			return l[i]
		}
		return "<end of file>"
	}
	source := "<none>"
	if len(gl) > 1 {
		source = gl[1]
	}
	t.Fatalf("committed table_gen.go (redis-server %s) differs from what the local redis-server generates (%s);"+
		" run `go generate ./proxy/redis/keyspec` and review the diff. First difference, line %d:\n  generated: %s\n  committed: %s",
		keyspec.ServerVersion, source, i+1, at(gl), at(wl))
}

func lines(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
