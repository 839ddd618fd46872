package rules

import (
	"errors"
	"strconv"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// Rewriter applies a Policy to the commands of one client connection of one
// tenant. It reuses its buffers from call to call, so Rewrite does not
// allocate once they have grown to the connection's command sizes. It is
// not safe for concurrent use.
type Rewriter struct {
	ns       *namespace.Namespace
	pol      Policy
	maxCount int
	count    []byte // maxCount in decimal
	out      [][]byte
	scratch  []byte
	idx      []int
}

// NewRewriter returns a Rewriter for the tenant ns under pol (nil: the zero
// Policy). The Rewriter keeps pol's values, not pol; pol.Emulate is shared
// and must not change afterwards.
func NewRewriter(ns *namespace.Namespace, pol *Policy) *Rewriter {
	r := &Rewriter{ns: ns}
	if pol != nil {
		r.pol = *pol
	}
	r.pol.MaxPatternLen = limit(r.pol.MaxPatternLen, DefaultMaxPatternLen)
	r.pol.MaxPatternWildcards = limit(r.pol.MaxPatternWildcards, DefaultMaxPatternWildcards)
	r.maxCount = limit(r.pol.MaxScanCount, DefaultMaxScanCount)
	r.count = strconv.AppendInt(nil, int64(r.maxCount), 10)
	return r
}

// Namespace returns the tenant's namespace.
func (r *Rewriter) Namespace() *namespace.Namespace { return r.ns }

// Rewrite checks one command (args[0] is its name, in any case) against
// the policy and returns the arguments to forward and the reply plan.
//
// out aliases args and the Rewriter's buffers: it is valid until the next
// call, and neither it nor its elements may be modified. args is never
// modified. When plan.Forward() is false out is args and the session
// answers itself. err is a *keyspec.Error for an unknown command or a
// wrong number of arguments ("ERR ..."), ErrSyntax for an option list
// Redis would refuse, or an *Error ("NOPERM ...") for a refusal.
func (r *Rewriter) Rewrite(args [][]byte) (out [][]byte, plan Plan, err error) {
	cmd, err := keyspec.Lookup(args)
	if err != nil {
		return nil, 0, err
	}
	return r.RewriteCommand(cmd, args)
}

// RewriteCommand is Rewrite for a caller that has looked the command up
// already: cmd must be what keyspec.Lookup(args) returned.
func (r *Rewriter) RewriteCommand(cmd *keyspec.Command, args [][]byte) (out [][]byte, plan Plan, err error) {
	if err := cmd.CheckArity(len(args)); err != nil {
		return nil, 0, err
	}
	r.scratch = r.scratch[:0]
	e, ok := table[cmd.Name]
	if !ok {
		if e, ok = table[cmd.Container()]; !ok {
			return r.byDefault(cmd, args)
		}
	}
	return r.apply(cmd, &e, args)
}

// byDefault treats a command the table does not name: deny by default.
func (r *Rewriter) byDefault(cmd *keyspec.Command, args [][]byte) ([][]byte, Plan, error) {
	switch {
	case cmd.Flags.Has(keyspec.FlagAdmin):
		return nil, 0, refuse(cmd, RuleAdmin, "")
	case cmd.ACLCategories.Has(keyspec.CatDangerous):
		return nil, 0, refuse(cmd, RuleDangerous, "")
	case !cmd.HasKeys():
		return nil, 0, refuse(cmd, RuleUnclassified, "")
	}
	return r.keys(cmd, args, ReplyPlain)
}

// apply treats a command by its table entry.
func (r *Rewriter) apply(cmd *keyspec.Command, e *entry, args [][]byte) ([][]byte, Plan, error) {
	switch e.kind {
	case kGeneric:
		return r.keys(cmd, args, e.plan)
	case kRefuse:
		return nil, 0, refuse(cmd, e.rule, "")
	case kPlain, kSession:
		return args, e.plan, nil
	case kSelect:
		if string(args[1]) != "0" {
			return nil, 0, refuse(cmd, RuleCrossDB, "SELECT of a database other than 0 is not allowed")
		}
		return args, ReplyLocalOK, nil
	case kKeys:
		return r.keysPattern(cmd, args)
	case kScan:
		return r.scan(cmd, args, 2, true)
	case kFieldScan:
		return r.scan(cmd, args, 3, false)
	case kSort:
		return r.sort(cmd, args)
	case kCopy:
		return r.copy(cmd, args)
	case kEval, kEvalSha, kScriptLoad, kScriptLocal, kScriptPlain, kScriptShared, kFunction:
		if !r.pol.AllowScripting {
			return nil, 0, refuse(cmd, RuleScripting, "")
		}
		return r.script(cmd, e, args)
	case kRestore:
		if !r.pol.AllowRestore {
			return nil, 0, refuse(cmd, RuleRestore, "")
		}
		return r.keys(cmd, args, ReplyPlain)
	case kFlush, kDBSize:
		if !r.pol.Emulate[e.emul] {
			return nil, 0, refuse(cmd, RuleWholeKeyspace, "")
		}
		return args, e.plan, nil
	case kSetName, kGetName:
		if !r.pol.Emulate[e.emul] {
			return args, ReplyPlain, nil
		}
		if e.kind == kSetName {
			return args, ReplyEmulateSetName, nil
		}
		return args, ReplyEmulateGetName, nil
	case kKeyslot:
		out := r.copyArgs(args)
		out[2] = r.key(args[2])
		return out, ReplyPlain, nil
	case kChannels, kPatterns, kPublish, kPubsubChannels, kPubsubNumsub:
		return r.pubsub(cmd, e, args)
	}
	return nil, 0, refuse(cmd, RuleUnclassified, "")
}

// keys prefixes every key keyspec locates.
func (r *Rewriter) keys(cmd *keyspec.Command, args [][]byte, plan Plan) ([][]byte, Plan, error) {
	idx, err := cmd.AppendKeyIndexes(r.idx[:0], args)
	r.idx = idx
	if err != nil {
		if errors.Is(err, keyspec.ErrIncomplete) || errors.Is(err, keyspec.ErrAmbiguousKeyword) {
			return nil, 0, refuse(cmd, RuleKeySpecs, "")
		}
		return nil, 0, err
	}
	out := r.copyArgs(args)
	for _, i := range idx {
		out[i] = r.key(args[i])
	}
	return out, plan, nil
}

// copyArgs returns the output buffer holding args.
func (r *Rewriter) copyArgs(args [][]byte) [][]byte {
	r.out = append(r.out[:0], args...)
	return r.out
}

// key appends the tenant's name for k to the scratch buffer and returns it.
// Earlier results stay valid when the buffer grows: they keep the old one.
func (r *Rewriter) key(k []byte) []byte {
	start := len(r.scratch)
	r.scratch = r.ns.AppendKey(r.scratch, k)
	return r.scratch[start:len(r.scratch):len(r.scratch)]
}

// pattern bounds a client's key pattern and returns the tenant's form.
func (r *Rewriter) pattern(cmd *keyspec.Command, p []byte) ([]byte, error) {
	if err := r.checkPattern(cmd, p); err != nil {
		return nil, err
	}
	start := len(r.scratch)
	r.scratch = r.ns.AppendPattern(r.scratch, p)
	return r.scratch[start:len(r.scratch):len(r.scratch)], nil
}

// channel returns the tenant's form of a channel name or pattern.
func (r *Rewriter) channel(cmd *keyspec.Command, ch []byte) ([]byte, error) {
	start := len(r.scratch)
	var ok bool
	if r.scratch, ok = r.ns.AppendChannel(r.scratch, ch); !ok {
		return nil, refuse(cmd, RuleKeyevent, "keyevent and malformed keyspace notification channels are not allowed")
	}
	return r.scratch[start:len(r.scratch):len(r.scratch)], nil
}

func (r *Rewriter) checkPattern(cmd *keyspec.Command, p []byte) error {
	err := namespace.CheckPattern(p, r.pol.MaxPatternLen, r.pol.MaxPatternWildcards)
	if err == nil {
		return nil
	}
	what := "pattern with more than " + strconv.Itoa(r.pol.MaxPatternWildcards) + " wildcards is not allowed"
	if errors.Is(err, namespace.ErrPatternTooLong) {
		what = "pattern longer than " + strconv.Itoa(r.pol.MaxPatternLen) + " bytes is not allowed"
	}
	return refuse(cmd, RulePatternBounds, what)
}
