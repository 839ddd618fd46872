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
	// RuleInfo: INFO other than INFO server.
	RuleInfo = "info"
	// RuleScripting: scripts and functions while AllowScripting is off.
	RuleScripting = "scripting"
	// RuleSharedScripts: SCRIPT FLUSH/KILL/DEBUG and FUNCTION, which act on
	// what all tenants share.
	RuleSharedScripts = "shared-scripts"
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
