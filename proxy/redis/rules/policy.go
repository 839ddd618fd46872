package rules

// Names of the commands a Policy can emulate, as Policy.Emulate's keys.
const (
	// EmulateFlushDB answers FLUSHDB by deleting the tenant's keys.
	EmulateFlushDB = "flushdb"
	// EmulateFlushAll answers FLUSHALL by deleting the tenant's keys.
	EmulateFlushAll = "flushall"
	// EmulateDBSize answers DBSIZE by counting the tenant's keys.
	EmulateDBSize = "dbsize"
	// EmulateClientSetName keeps CLIENT SETNAME and CLIENT GETNAME in the
	// session instead of naming the upstream connection.
	EmulateClientSetName = "client-setname"
)

// Defaults for the Policy limits left at zero.
const (
	// DefaultMaxPatternLen is the default Policy.MaxPatternLen.
	DefaultMaxPatternLen = 256
	// DefaultMaxPatternWildcards is the default Policy.MaxPatternWildcards.
	DefaultMaxPatternWildcards = 8
	// DefaultMaxScanCount is the default Policy.MaxScanCount.
	DefaultMaxScanCount = 1000
)

// Policy is the per-tenant command policy. The zero value refuses
// scripting, RESTORE and every emulated command, and applies the default
// limits.
type Policy struct {
	// AllowScripting allows EVAL, EVALSHA, FCALL (and their _RO forms),
	// SCRIPT LOAD, SCRIPT EXISTS and FUNCTION HELP. Scripts can reach keys
	// they do not declare: allow only for trusted tenants.
	AllowScripting bool
	// AllowRestore allows RESTORE and RESTORE-ASKING.
	AllowRestore bool
	// Emulate lists the commands the session emulates (Emulate... names);
	// other keys are ignored.
	Emulate map[string]bool
	// MaxPatternLen bounds the length of a client's glob patterns; 0 means
	// DefaultMaxPatternLen, a negative value no bound.
	MaxPatternLen int
	// MaxPatternWildcards bounds the '*', '?' and '[' of a client's glob
	// patterns; 0 means DefaultMaxPatternWildcards, negative no bound.
	MaxPatternWildcards int
	// MaxScanCount caps the COUNT of SCAN, HSCAN, SSCAN and ZSCAN; 0 means
	// DefaultMaxScanCount, negative no cap.
	MaxScanCount int
}

// limit resolves a Policy limit: 0 is def, negative is none (0).
func limit(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}
