package rules

import (
	"errors"
	"strings"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
)

// The rules a refusal names (Error.Rule).
const (
	// RuleServerWide: the command observes or changes the whole server.
	RuleServerWide = "server-wide"
	// RuleReplication: replication and failover commands.
	RuleReplication = "replication"
	// RulePersistence: SAVE, BGSAVE, BGREWRITEAOF, LASTSAVE.
	RulePersistence = "persistence"
	// RuleCluster: CLUSTER subcommands other than KEYSLOT.
	RuleCluster = "cluster"
	// RuleCrossDB: SELECT n, SWAPDB, MOVE, COPY ... DB n, MIGRATE.
	RuleCrossDB = "cross-db"
	// RuleWholeKeyspace: RANDOMKEY, PUBSUB NUMPAT, and FLUSHDB, FLUSHALL
	// and DBSIZE unless emulated.
	RuleWholeKeyspace = "whole-keyspace"
	// RuleScripting: scripts and functions while AllowScripting is off.
	RuleScripting = "scripting"
	// RuleSharedScripts: SCRIPT KILL and SCRIPT DEBUG, which act on the
	// script running for any tenant.
	RuleSharedScripts = "shared-scripts"
	// RuleFunctions: FUNCTION (but HELP), FCALL and FCALL_RO. Function
	// libraries and function names are server-wide, and a library's code
	// registers its names as it runs, so names cannot be confined to a
	// tenant: one tenant could register a name another tenant calls.
	RuleFunctions = "functions"
	// RuleScriptInMulti: a script queued in MULTI, which must run on the
	// client's own connection while scripts run on the tenant's script
	// connection (see the session).
	RuleScriptInMulti = "script-in-multi"
	// RuleRestore: RESTORE while AllowRestore is off.
	RuleRestore = "restore"
	// RuleClientReply: CLIENT REPLY.
	RuleClientReply = "client-reply"
	// RuleClientTracking: CLIENT TRACKING.
	RuleClientTracking = "client-tracking"
	// RuleKeyevent: keyevent (and malformed keyspace) notification channels.
	RuleKeyevent = "keyevent"
	// RulePatternBounds: a glob pattern too long or with too many wildcards.
	RulePatternBounds = "pattern-bounds"
	// RuleKeySpecs: the command's keys cannot all be located.
	RuleKeySpecs = "key-specs"
	// RuleAdmin: an admin command not otherwise handled.
	RuleAdmin = "admin"
	// RuleDangerous: a @dangerous command not otherwise handled.
	RuleDangerous = "dangerous"
	// RuleUnclassified: a command without keys not known to be safe.
	RuleUnclassified = "unclassified"
)

// ErrSyntax is Redis's own syntax error, returned for option lists that
// Rewrite parses (SCAN, SORT) and Redis would refuse anyway.
var ErrSyntax = errors.New("ERR syntax error")

// ArgError is an error redis-server itself gives for a command's arguments
// (EVAL's key count, say), worded as it words it: the message is the reply
// without the leading '-'. Nothing was refused by a rule.
type ArgError string

// Error returns the reply text.
func (e ArgError) Error() string { return string(e) }

// Redis's replies for a script's bad key count (evalGenericCommand).
const (
	errNotInteger   = ArgError("ERR value is not an integer or out of range")
	errKeysTooMany  = ArgError("ERR Number of keys can't be greater than number of args")
	errKeysNegative = ArgError("ERR Number of keys can't be negative")
)

// Error is a refusal. Its message is a Redis error reply without the
// leading '-': "NOPERM tenantguard: <what> (rule <rule>)", one line, with
// no byte of the client's arguments in it.
type Error struct {
	// Rule is one of the Rule... names.
	Rule string
	// Command is the command's upper-case name, "CLIENT KILL" for a
	// subcommand.
	Command string
	msg     string
}

// Error returns the NOPERM message.
func (e *Error) Error() string { return e.msg }

// refuse builds the refusal of cmd under rule; what defaults to
// "<COMMAND> is not allowed".
func refuse(cmd *keyspec.Command, rule, what string) *Error {
	name := strings.ToUpper(strings.ReplaceAll(cmd.Name, "|", " "))
	if what == "" {
		what = name + " is not allowed"
	}
	return &Error{Rule: rule, Command: name, msg: "NOPERM tenantguard: " + what + " (rule " + rule + ")"}
}
