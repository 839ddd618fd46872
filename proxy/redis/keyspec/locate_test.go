package keyspec_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
)

// argv splits a command line on spaces into arguments.
func argv(line string) [][]byte {
	var args [][]byte
	for f := range strings.FieldsSeq(line) {
		args = append(args, []byte(f))
	}
	return args
}

func TestLocate(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []int
	}{
		// begin_search index, find_keys range.
		{"GET k", []int{1}},
		{"set k v GET EX 10", []int{1}},
		{"GETEX k PERSIST", []int{1}},
		{"MGET a b c", []int{1, 2, 3}},
		{"MSET k1 v1 k2 v2", []int{1, 3}},
		{"MSETNX a 1 b 2 c 3", []int{1, 3, 5}},
		{"DEL a b", []int{1, 2}},
		{"EXISTS a", []int{1}},
		{"TOUCH a b", []int{1, 2}},
		{"WATCH a b", []int{1, 2}},
		{"RENAME a b", []int{1, 2}},
		{"COPY a b DB 1 REPLACE", []int{1, 2}},
		{"SMOVE a b m", []int{1, 2}},
		{"LMOVE a b LEFT RIGHT", []int{1, 2}},
		{"BLMOVE a b LEFT RIGHT 0", []int{1, 2}},
		{"BRPOPLPUSH a b 0", []int{1, 2}},
		{"BLPOP a b 0", []int{1, 2}},        // range lastkey -2: the timeout is no key
		{"BZPOPMIN z1 z2 1.5", []int{1, 2}}, // likewise
		{"SINTERSTORE d a b", []int{1, 2, 3}},
		{"SUNIONSTORE d a", []int{1, 2}},
		{"BITOP AND dest a b", []int{2, 3, 4}},
		{"BITFIELD k SET u8 0 1", []int{1}},
		{"BITFIELD_RO k GET u8 0", []int{1}},
		{"PFCOUNT a b", []int{1, 2}},
		{"PFMERGE d a b", []int{1, 2, 3}},
		{"LCS a b LEN", []int{1, 2}},
		{"RESTORE k 0 payload REPLACE", []int{1}},
		{"XADD s * f v", []int{1}},
		{"XAUTOCLAIM s g c 0 0", []int{1}},
		{"ZRANGESTORE d src 0 -1", []int{1, 2}},
		{"GEOSEARCH k FROMLONLAT 0 0 BYBOX 1 1 km", []int{1}},
		{"GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 1 km", []int{1, 2}},
		// begin_search index, find_keys keynum.
		{"ZUNIONSTORE dest 2 k1 k2 WEIGHTS 1 2", []int{1, 3, 4}},
		{"ZINTER 2 a b WITHSCORES", []int{2, 3}},
		{"ZDIFFSTORE d 1 a", []int{1, 3}},
		{"ZUNION 0 a", nil}, // a key count of 0 selects no keys
		{"SINTERCARD 2 a b LIMIT 5", []int{2, 3}},
		{"LMPOP 2 a b LEFT COUNT 3", []int{2, 3}},
		{"BLMPOP 0 2 a b LEFT", []int{3, 4}},
		{"ZMPOP 1 z MAX", []int{2}},
		{"BZMPOP 1.5 1 z MIN", []int{3}},
		{"EVAL script 2 k1 k2 a1", []int{3, 4}},
		{"EVAL script 0", nil},
		{"EVAL script 0 a1 a2", nil},
		{"EVALSHA sha 1 k", []int{3}},
		{"EVAL_RO s 1 k a", []int{3}},
		{"FCALL f 1 k a", []int{3}},
		{"FCALL_RO f 0", nil},
		// begin_search keyword, find_keys range with limit.
		{"XREAD COUNT 1 STREAMS s1 s2 0 0", []int{4, 5}},
		{"XREAD streams s1 $", []int{2}},
		{"XREAD BLOCK 0 STREAMS s 0", []int{4}},
		{"XREAD COUNT 1 BLOCK 0", nil},              // no STREAMS: no keys, as in Redis
		{"XREAD \u017ftreams s 0", nil},             // strcasecmp folds ASCII only
		{"XREAD STREAMS s1 s2 s3 0 0", []int{2, 3}}, // unbalanced: Redis rounds down
		{"XREADGROUP GROUP g c STREAMS s1 s2 > >", []int{5, 6}},
		{"XREADGROUP GROUP STREAMS c COUNT 1 STREAMS s1 >", []int{7}}, // group "STREAMS" is before startfrom
		// begin_search keyword, find_keys range 0.
		{"GEORADIUS g 0 0 10 km", []int{1}},
		{"GEORADIUS g 0 0 10 km STORE dst", []int{1, 7}},
		{"GEORADIUS g 0 0 10 km STOREDIST dst COUNT 3", []int{1, 7}},
		{"GEORADIUS g 0 0 10 km STORE a STOREDIST b", []int{1, 7, 9}},
		{"GEORADIUS g 0 0 10 km COUNT 3 store", []int{1}}, // last argument is never searched
		{"GEORADIUS g 0 0 10 km STOREDIST STORE", []int{1, 7}},
		{"GEORADIUSBYMEMBER g m 10 km STORE d", []int{1, 6}},
		// Subcommands: the key is after the subcommand name.
		{"OBJECT ENCODING k", []int{2}},
		{"object freq k", []int{2}},
		{"MEMORY USAGE k SAMPLES 5", []int{2}},
		{"XINFO STREAM s FULL", []int{2}},
		{"XINFO GROUPS s", []int{2}},
		{"XINFO CONSUMERS s g", []int{2}},
		{"XGROUP CREATE s g $ MKSTREAM", []int{2}},
		{"XGROUP SETID s g 0", []int{2}},
		// No keys.
		{"PING", nil},
		{"KEYS *", nil},
		{"FLUSHALL", nil},
		{"CLIENT KILL ID 5", nil},
		{"OBJECT HELP", nil},
		{"PUBLISH ch m", nil},
		{"SPUBLISH ch m", nil}, // not_key spec: a shard channel, not a key
		{"MULTI", nil},
	} {
		args := argv(tc.line)
		cmd, err := keyspec.Lookup(args)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tc.line, err)
			continue
		}
		got, err := keyspec.Locate(cmd, args)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Locate(%s, %q) = %v, %v; want %v", cmd.Name, tc.line, got, err, tc.want)
		}
	}
}

func TestLocateErrors(t *testing.T) {
	for _, tc := range []struct {
		line string
		kind error
		msg  string
	}{
		{"GET", keyspec.ErrArity, "ERR wrong number of arguments for 'get' command"},
		{"GET a b", keyspec.ErrArity, "ERR wrong number of arguments for 'get' command"},
		{"MSET k", keyspec.ErrArity, "ERR wrong number of arguments for 'mset' command"},
		{"OBJECT ENCODING", keyspec.ErrArity, "ERR wrong number of arguments for 'object|encoding' command"},
		{"CLIENT", keyspec.ErrArity, "ERR wrong number of arguments for 'client' command"},
		{"XREAD STREAMS s", keyspec.ErrArity, "ERR wrong number of arguments for 'xread' command"},
		// Incomplete or unknown key specs: refused whatever the arguments.
		{"SORT k", keyspec.ErrIncomplete, "ERR the keys of 'sort' cannot be located from its key specs"},
		{"SORT k BY w_* GET o_* STORE dst", keyspec.ErrIncomplete, ""},
		{"SORT_RO k", keyspec.ErrIncomplete, ""},
		{"MIGRATE h 6379 k 0 5000", keyspec.ErrIncomplete, ""},
		{"MIGRATE h 6379 \"\" 0 5000 KEYS a b", keyspec.ErrIncomplete, ""},
		// A keyword twice: GEORADIUS stores into the last STORE, key specs
		// (and COMMAND GETKEYS) name the first.
		{"GEORADIUS g 0 0 1 km STORE a STORE b", keyspec.ErrAmbiguousKeyword,
			"ERR keyword 'STORE' appears more than once in 'georadius'"},
		{"GEORADIUS g 0 0 1 km STOREDIST STORE STORE d2", keyspec.ErrAmbiguousKeyword, ""},
		{"XREAD STREAMS a streams 0 0", keyspec.ErrAmbiguousKeyword, ""},
		// Bad key counts and keys beyond the arguments.
		{"ZUNIONSTORE d x a", keyspec.ErrInvalidKeys, "ERR Invalid key arguments specified for 'zunionstore' command"},
		{"ZUNIONSTORE d 3 a b", keyspec.ErrInvalidKeys, ""},
		{"ZUNIONSTORE d -1 a", keyspec.ErrInvalidKeys, ""},
		{"ZUNIONSTORE d 01 a", keyspec.ErrInvalidKeys, ""},
		{"ZUNIONSTORE d +1 a", keyspec.ErrInvalidKeys, ""},
		{"EVAL s 2 k", keyspec.ErrInvalidKeys, ""},
		{"EVAL s 1", keyspec.ErrInvalidKeys, ""},
		{"LMPOP 99999999999999999999 a LEFT", keyspec.ErrInvalidKeys, ""},
		{"BLMPOP 0 3 a b", keyspec.ErrInvalidKeys, ""},
		{"XREAD COUNT 1 STREAMS s", keyspec.ErrInvalidKeys, ""},
	} {
		args := argv(tc.line)
		cmd, err := keyspec.Lookup(args)
		if err != nil {
			t.Errorf("Lookup(%q): %v", tc.line, err)
			continue
		}
		dst := []int{42}
		got, err := cmd.AppendKeyIndexes(dst, args)
		if !errors.Is(err, tc.kind) {
			t.Errorf("AppendKeyIndexes(%q) = %v, %v; want %v", tc.line, got, err, tc.kind)
			continue
		}
		if !slices.Equal(got, dst) {
			t.Errorf("AppendKeyIndexes(%q) changed dst to %v on error", tc.line, got)
		}
		var kerr *keyspec.Error
		if !errors.As(err, &kerr) || kerr.Command != cmd.Name {
			t.Errorf("AppendKeyIndexes(%q) error %#v: want *keyspec.Error for %s", tc.line, err, cmd.Name)
		}
		if tc.msg != "" && err.Error() != tc.msg {
			t.Errorf("AppendKeyIndexes(%q) error %q, want %q", tc.line, err, tc.msg)
		}
	}
}

func TestAppendKeyIndexesAppends(t *testing.T) {
	args := argv("MSET a 1 b 2")
	cmd := keyspec.Get("mset")
	dst := make([]int, 1, 8)
	got, err := cmd.AppendKeyIndexes(dst, args)
	if err != nil || !slices.Equal(got, []int{0, 1, 3}) || &got[0] != &dst[0] {
		t.Fatalf("AppendKeyIndexes = %v, %v; want [0 1 3] in dst's array", got, err)
	}
}

func TestLookup(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"get k", "get"},
		{"GeT k", "get"},
		{"CLIENT kill ID 1", "client|kill"},
		{"client", "client"},
		{"OBJECT encoding k", "object|encoding"},
		{"xinfo STREAM s", "xinfo|stream"},
		{"memory USAGE k", "memory|usage"},
		{"config GET maxmemory", "config|get"},
		{"GET client", "get"},
	} {
		cmd, err := keyspec.Lookup(argv(tc.line))
		if err != nil || cmd.Name != tc.want {
			t.Errorf("Lookup(%q) = %v, %v; want %s", tc.line, cmd, err, tc.want)
		}
	}
	long := strings.Repeat("x", 200)
	for _, tc := range []struct {
		args [][]byte
		msg  string
	}{
		{nil, "ERR unknown command '', with args beginning with: "},
		{argv("nope a b"), "ERR unknown command 'nope', with args beginning with: 'a' 'b' "},
		{argv("client|kill id 1"), "ERR unknown command 'client|kill', with args beginning with: 'id' '1' "},
		{argv("client nope"), "ERR unknown subcommand 'nope'. Try CLIENT HELP."},
		{argv("client kill|id 1"), "ERR unknown subcommand 'kill|id'. Try CLIENT HELP."},
		{[][]byte{[]byte("g\r\net")}, "ERR unknown command 'g  et', with args beginning with: "},
		{argv(long), "ERR unknown command '" + long[:128] + "', with args beginning with: "},
		{argv("nope " + long + " b"), "ERR unknown command 'nope', with args beginning with: '" + long[:128] + "' "},
	} {
		cmd, err := keyspec.Lookup(tc.args)
		if !errors.Is(err, keyspec.ErrUnknownCommand) || err.Error() != tc.msg {
			t.Errorf("Lookup(%q) = %v, %q; want %q", tc.args, cmd, err, tc.msg)
		}
	}
}

func TestTable(t *testing.T) {
	all := keyspec.Commands()
	if len(all) < 300 {
		t.Fatalf("only %d commands in the table", len(all))
	}
	for _, c := range all {
		if keyspec.Get(c.Name) != c {
			t.Errorf("Get(%q) does not return the table's command", c.Name)
		}
		if c.Arity == 0 {
			t.Errorf("%s: arity 0", c.Name)
		}
		for _, sub := range c.Subcommands {
			if s := keyspec.Get(sub); s == nil || s.Container() != c.Name {
				t.Errorf("%s: subcommand %s missing or in another container", c.Name, sub)
			}
		}
		for i, ks := range c.KeySpecs {
			if ks.FindKeys.Type != keyspec.FindUnknown && ks.FindKeys.KeyStep < 1 {
				t.Errorf("%s key spec %d: key step %d", c.Name, i, ks.FindKeys.KeyStep)
			}
		}
	}
	get := keyspec.Get("get")
	if got := get.Flags.String(); got != "readonly fast" {
		t.Errorf("get flags %q", got)
	}
	if got := get.ACLCategories.String(); got != "@read @string @fast" {
		t.Errorf("get categories %q", got)
	}
	if got := get.KeySpecs[0].Flags.String(); got != "RO access" {
		t.Errorf("get key spec flags %q", got)
	}
	if !keyspec.Get("flushall").ACLCategories.Has(keyspec.CatDangerous) || !keyspec.Get("keys").ACLCategories.Has(keyspec.CatDangerous) {
		t.Error("flushall and keys should be @dangerous")
	}
	if c := keyspec.Get("sort"); c.KeysComplete() || !c.Flags.Has(keyspec.FlagMovableKeys) {
		t.Error("sort: want movablekeys and incomplete key specs")
	}
	if c := keyspec.Get("spublish"); c.HasKeys() {
		t.Error("spublish: its only key spec is not_key")
	}
	if c := keyspec.Get("georadius"); !c.HasKeys() || !c.KeysComplete() {
		t.Error("georadius: want complete key specs")
	}
}
