package keyspec

import (
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Command is one Redis command, or one subcommand of a container command
// such as CLIENT or OBJECT, as COMMAND INFO and COMMAND DOCS describe it.
// Commands returned by this package are shared and must not be modified.
type Command struct {
	// Name is the lower-case command name; a subcommand is named
	// "container|sub", e.g. "client|kill".
	Name string
	// Arity is the number of arguments including the command name (and the
	// subcommand name): positive means exactly, negative at least -Arity.
	Arity int
	// Flags are the command flags (write, readonly, admin, movablekeys...).
	Flags Flag
	// ACLCategories are the command's ACL categories (@read, @dangerous...).
	ACLCategories Category
	// Tips are the command tips, e.g. "request_policy:all_shards".
	Tips []string
	// KeySpecs are the key specifications, in the server's order.
	KeySpecs []KeySpec
	// Subcommands lists the full names of a container's subcommands, sorted.
	Subcommands []string
	// Group is the documentation group, e.g. "string" or "server".
	Group string
	// Since is the Redis version that introduced the command.
	Since string
	// DocFlags are the documentation flags (deprecated, syscmd).
	DocFlags DocFlag
}

// KeySpec is one key specification: where the search for keys begins, how
// the keys are found from there, and how the command accesses them.
type KeySpec struct {
	// Flags say how the keys are accessed (RW, access, insert...).
	Flags KeySpecFlag
	// BeginSearch finds the first argument of the spec.
	BeginSearch BeginSearch
	// FindKeys finds the keys from BeginSearch's position on.
	FindKeys FindKeys
	// Notes is the server's free-text explanation, if any.
	Notes string
}

// BeginSearchType says how a key spec finds its first argument.
type BeginSearchType uint8

// The begin_search types of COMMAND INFO.
const (
	// BeginUnknown means the start cannot be found from the arguments.
	BeginUnknown BeginSearchType = iota
	// BeginIndex starts at the fixed argument BeginSearch.Index.
	BeginIndex
	// BeginKeyword starts after the first argument equal to
	// BeginSearch.Keyword, searching from BeginSearch.StartFrom (backwards
	// from the end when StartFrom is negative).
	BeginKeyword
)

// BeginSearch is a key spec's begin_search.
type BeginSearch struct {
	// Type selects which of the other fields apply.
	Type BeginSearchType
	// Index is the argument position for BeginIndex.
	Index int
	// Keyword is the upper-case keyword for BeginKeyword.
	Keyword string
	// StartFrom is where the keyword search starts for BeginKeyword;
	// negative counts from the end.
	StartFrom int
}

// FindKeysType says how a key spec finds its keys after the beginning.
type FindKeysType uint8

// The find_keys types of COMMAND INFO.
const (
	// FindUnknown means the keys cannot be found from the arguments.
	FindUnknown FindKeysType = iota
	// FindRange takes keys from the beginning up to LastKey every KeyStep
	// arguments; a negative LastKey counts from the end, and with Limit > 0
	// only 1/Limit of the remaining arguments are keys.
	FindRange
	// FindKeynum reads the number of keys from the argument KeyNumIdx after
	// the beginning; the keys start FirstKey after the beginning, every
	// KeyStep arguments.
	FindKeynum
)

// FindKeys is a key spec's find_keys.
type FindKeys struct {
	// Type selects which of the other fields apply.
	Type FindKeysType
	// LastKey is the last key relative to the beginning (FindRange);
	// negative counts from the end of the arguments.
	LastKey int
	// KeyStep is the distance between keys (FindRange and FindKeynum).
	KeyStep int
	// Limit, when positive, stops a negative LastKey at 1/Limit of the
	// remaining arguments (FindRange).
	Limit int
	// KeyNumIdx is the position of the key count relative to the beginning
	// (FindKeynum).
	KeyNumIdx int
	// FirstKey is the first key relative to the beginning (FindKeynum).
	FirstKey int
}

// Flag is a set of command flags.
type Flag uint32

// Command flags as COMMAND INFO names them.
const (
	FlagWrite           Flag = 1 << iota // write: may modify the keyspace
	FlagReadonly                         // readonly: only reads keys
	FlagDenyOOM                          // denyoom: may use memory, refused when out of memory
	FlagModule                           // module: implemented by a module
	FlagAdmin                            // admin: administrative command
	FlagPubSub                           // pubsub: Pub/Sub command
	FlagNoScript                         // noscript: not allowed in scripts
	FlagBlocking                         // blocking: may block the client
	FlagLoading                          // loading: allowed while loading the dataset
	FlagStale                            // stale: allowed on a replica with stale data
	FlagSkipMonitor                      // skip_monitor: not shown by MONITOR
	FlagSkipSlowlog                      // skip_slowlog: not shown in the slow log
	FlagAsking                           // asking: cluster ASKING semantics
	FlagFast                             // fast: O(1) or O(log N)
	FlagNoAuth                           // no_auth: allowed before authentication
	FlagNoMandatoryKeys                  // no_mandatory_keys: may take no keys at all
	FlagNoAsyncLoading                   // no_async_loading: refused during async loading
	FlagNoMulti                          // no_multi: not allowed in MULTI
	FlagMovableKeys                      // movablekeys: key positions depend on the arguments
	FlagAllowBusy                        // allow_busy: allowed while a script is busy
)

var flagNames = [...]string{
	"write", "readonly", "denyoom", "module", "admin", "pubsub", "noscript",
	"blocking", "loading", "stale", "skip_monitor", "skip_slowlog", "asking",
	"fast", "no_auth", "no_mandatory_keys", "no_async_loading", "no_multi",
	"movablekeys", "allow_busy",
}

// Has reports whether every flag in g is set in f.
func (f Flag) Has(g Flag) bool { return f&g == g }

// String returns the flags' COMMAND INFO names, separated by spaces.
func (f Flag) String() string { return setString(uint64(f), flagNames[:], "") }

// Category is a set of ACL categories.
type Category uint32

// ACL categories as COMMAND INFO names them (without the "@").
const (
	CatKeyspace    Category = 1 << iota // @keyspace
	CatRead                             // @read
	CatWrite                            // @write
	CatSet                              // @set
	CatSortedSet                        // @sortedset
	CatList                             // @list
	CatHash                             // @hash
	CatString                           // @string
	CatBitmap                           // @bitmap
	CatHyperLogLog                      // @hyperloglog
	CatGeo                              // @geo
	CatStream                           // @stream
	CatPubSub                           // @pubsub
	CatAdmin                            // @admin
	CatFast                             // @fast
	CatSlow                             // @slow
	CatBlocking                         // @blocking
	CatDangerous                        // @dangerous
	CatConnection                       // @connection
	CatTransaction                      // @transaction
	CatScripting                        // @scripting
)

var categoryNames = [...]string{
	"keyspace", "read", "write", "set", "sortedset", "list", "hash", "string",
	"bitmap", "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow",
	"blocking", "dangerous", "connection", "transaction", "scripting",
}

// Has reports whether every category in d is set in c.
func (c Category) Has(d Category) bool { return c&d == d }

// String returns the categories as "@name"s separated by spaces.
func (c Category) String() string { return setString(uint64(c), categoryNames[:], "@") }

// KeySpecFlag is a set of key spec flags.
type KeySpecFlag uint16

// Key spec flags as COMMAND INFO names them.
const (
	KeyRO            KeySpecFlag = 1 << iota // RO: read-only
	KeyRW                                    // RW: read-write
	KeyOW                                    // OW: overwrite
	KeyRM                                    // RM: remove
	KeyAccess                                // access: returns or copies user data
	KeyUpdate                                // update: updates data
	KeyInsert                                // insert: only adds data
	KeyDelete                                // delete: explicitly deletes data
	KeyNotKey                                // not_key: a key name that is not a key (e.g. a pattern)
	KeyIncomplete                            // incomplete: the spec may miss keys
	KeyVariableFlags                         // variable_flags: flags depend on the arguments
)

var keySpecFlagNames = [...]string{
	"RO", "RW", "OW", "RM", "access", "update", "insert", "delete", "not_key",
	"incomplete", "variable_flags",
}

// Has reports whether every flag in g is set in f.
func (f KeySpecFlag) Has(g KeySpecFlag) bool { return f&g == g }

// String returns the flags' COMMAND INFO names, separated by spaces.
func (f KeySpecFlag) String() string { return setString(uint64(f), keySpecFlagNames[:], "") }

// DocFlag is a set of COMMAND DOCS doc_flags.
type DocFlag uint8

// Documentation flags as COMMAND DOCS names them.
const (
	DocDeprecated DocFlag = 1 << iota // deprecated
	DocSysCmd                         // syscmd: meant for internal use (replication, cluster)
)

var docFlagNames = [...]string{"deprecated", "syscmd"}

// Has reports whether every flag in g is set in f.
func (f DocFlag) Has(g DocFlag) bool { return f&g == g }

// String returns the flags' COMMAND DOCS names, separated by spaces.
func (f DocFlag) String() string { return setString(uint64(f), docFlagNames[:], "") }

// setString names the bits of set; bits without a name print as "bit<N>".
func setString(set uint64, names []string, prefix string) string {
	var b strings.Builder
	for set != 0 {
		i := bits.TrailingZeros64(set)
		set &^= 1 << i
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if i < len(names) {
			b.WriteString(prefix + names[i])
		} else {
			b.WriteString("bit" + strconv.Itoa(i))
		}
	}
	return b.String()
}

// Container returns the container's name for a subcommand ("client" for
// "client|kill") and "" for a top-level command.
func (c *Command) Container() string {
	if i := strings.IndexByte(c.Name, '|'); i >= 0 {
		return c.Name[:i]
	}
	return ""
}

// HasKeys reports whether the command has a key spec for real keys, i.e.
// one not marked not_key. Commands without one take no keys.
func (c *Command) HasKeys() bool {
	for i := range c.KeySpecs {
		if !c.KeySpecs[i].Flags.Has(KeyNotKey) {
			return true
		}
	}
	return false
}

// KeysComplete reports whether the key specs locate every key the command
// can access: no spec (other than not_key ones) is marked incomplete or has
// an unknown begin_search or find_keys. AppendKeyIndexes refuses commands
// for which it is false with ErrIncomplete.
func (c *Command) KeysComplete() bool {
	for i := range c.KeySpecs {
		ks := &c.KeySpecs[i]
		if ks.Flags.Has(KeyNotKey) {
			continue
		}
		if ks.Flags.Has(KeyIncomplete) || ks.BeginSearch.Type == BeginUnknown || ks.FindKeys.Type == FindUnknown {
			return false
		}
	}
	return true
}

// Get returns the command with the given canonical name (lower-case,
// "container|sub" for subcommands), or nil.
func Get(name string) *Command { return table[name] }

// Commands returns every command and subcommand in the table, sorted by name.
func Commands() []*Command {
	out := make([]*Command, 0, len(table))
	for _, c := range table {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Command) int { return strings.Compare(a.Name, b.Name) })
	return out
}
