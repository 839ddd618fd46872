package rules

import (
	"slices"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// Scripts.
//
// A script's declared keys (EVAL script numkeys key... arg...) are
// prefixed like any key. What the script builds itself cannot be rewritten
// here; it is confined by redis-server instead: the session runs scripts
// on a connection authenticated as the tenant's own ACL user, whose key
// and channel patterns are the tenant's namespace and whose commands are
// ScriptCommands (see the session's scripts.go).
//
// The server's script cache is shared by every tenant and keyed by the
// SHA1 of the script's text. So that one tenant's EVALSHA cannot run, or
// SCRIPT EXISTS detect, a script another tenant loaded, each tenant's
// scripts are stored under a text of their own: AppendScriptBody marks the
// script with the tenant's namespace in a Lua comment, and the session
// maps the client's SHA1 to the SHA1 of the marked text.

// script treats EVAL, EVALSHA (and _RO), SCRIPT and FUNCTION, scripting
// being allowed.
func (r *Rewriter) script(cmd *keyspec.Command, e *entry, args [][]byte) ([][]byte, Plan, error) {
	switch e.kind {
	case kEval, kEvalSha:
		if err := checkNumKeys(args); err != nil {
			return nil, 0, err
		}
		out, plan, err := r.keys(cmd, args, e.plan)
		if err != nil || e.kind == kEvalSha {
			return out, plan, err
		}
		out[1] = r.scriptBody(args[1])
		return out, plan, nil
	case kScriptLoad:
		out := r.copyArgs(args)
		out[2] = r.scriptBody(args[2])
		return out, e.plan, nil
	case kScriptLocal:
		if cmd.Name == "script|flush" && len(args) > 2 &&
			(len(args) > 3 || !equalFold(args[2], "async") && !equalFold(args[2], "sync")) {
			return nil, 0, ArgError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
		}
		return args, e.plan, nil
	case kScriptPlain:
		return args, ReplyPlain, nil
	case kFunction:
		return nil, 0, refuse(cmd, RuleFunctions, "")
	}
	return nil, 0, refuse(cmd, RuleSharedScripts, "")
}

// checkNumKeys checks a script's key count as redis-server's
// evalGenericCommand does, with its replies.
func checkNumKeys(args [][]byte) error {
	n, ok := parseInt(args[2])
	switch {
	case !ok:
		return errNotInteger
	case n > int64(len(args)-3):
		return errKeysTooMany
	case n < 0:
		return errKeysNegative
	}
	return nil
}

// scriptBody appends the tenant's form of a script to the scratch buffer
// and returns it.
func (r *Rewriter) scriptBody(body []byte) []byte {
	start := len(r.scratch)
	r.scratch = AppendScriptBody(r.scratch, r.ns, body)
	return r.scratch[start:len(r.scratch):len(r.scratch)]
}

// scriptMarkOpen and scriptMarkClose enclose the tenant's key prefix in a
// Lua long comment. The prefix holds neither ']' nor a line break.
const (
	scriptMarkOpen  = "--[[tenantguard "
	scriptMarkClose = "]]"
)

// AppendScriptBody appends to dst the tenant's form of a Lua script: the
// same script with a comment naming the tenant's namespace in front of its
// code, on the code's first line, so error messages keep their line
// numbers. A script that begins with a shebang line ("#!lua flags=...",
// which redis-server reads before the code) keeps it first; the comment
// then opens the second line.
func AppendScriptBody(dst []byte, ns *namespace.Namespace, body []byte) []byte {
	at := 0
	if len(body) >= 2 && body[0] == '#' && body[1] == '!' {
		at = len(body)
		for i, c := range body {
			if c == '\n' {
				at = i + 1
				break
			}
		}
		dst = append(dst, body[:at]...)
		if at == len(body) && body[at-1] != '\n' {
			dst = append(dst, '\n') // a shebang alone: the code starts after it
		}
	}
	dst = append(dst, scriptMarkOpen...)
	dst = append(dst, ns.KeyPrefix()...)
	dst = append(dst, scriptMarkClose...)
	return append(dst, body[at:]...)
}

// ScriptCommands returns the commands a tenant's scripts may call, as
// redis-server's ACL names them ("get", "object|encoding"), sorted: the
// commands this package forwards with every key located and prefixed
// (redis-server then checks each key a script names against the tenant's
// key pattern) and PUBLISH and SPUBLISH (checked against its channel
// pattern). Left out are commands redis-server refuses in scripts anyway,
// and everything that reads or changes what is not a key or channel of
// the tenant without naming it: KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHALL,
// INFO, CLIENT, CONFIG, PUBSUB, SELECT, SWAPDB, MOVE, COPY (its DB option
// writes another database), RESTORE, MIGRATE, CLUSTER... SORT and SORT_RO
// are in: redis-server refuses their BY and GET options to a user limited
// to some keys.
func ScriptCommands() []string {
	var out []string
	for _, cmd := range keyspec.Commands() {
		if len(cmd.Subcommands) > 0 || cmd.Flags.Has(keyspec.FlagNoScript) {
			continue
		}
		if scriptMayCall(cmd) {
			out = append(out, cmd.Name)
		}
	}
	slices.Sort(out)
	return out
}

// scriptMayCall reports whether a script may call cmd (see ScriptCommands).
func scriptMayCall(cmd *keyspec.Command) bool {
	e, ok := table[cmd.Name]
	if !ok {
		e, ok = table[cmd.Container()]
	}
	if !ok {
		return !cmd.Flags.Has(keyspec.FlagAdmin) && !cmd.ACLCategories.Has(keyspec.CatDangerous) &&
			cmd.HasKeys() && cmd.KeysComplete()
	}
	switch e.kind {
	case kGeneric, kFieldScan, kSort, kPublish:
		return true
	}
	return false
}
