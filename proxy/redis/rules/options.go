package rules

import "github.com/tenantguard/tenantguard/proxy/redis/keyspec"

var (
	argMatch = []byte("MATCH")
	argAll   = []byte("*")
)

// keysPattern rewrites KEYS pattern.
func (r *Rewriter) keysPattern(cmd *keyspec.Command, args [][]byte) ([][]byte, Plan, error) {
	p, err := r.pattern(cmd, args[1])
	if err != nil {
		return nil, 0, err
	}
	out := r.copyArgs(args)
	out[1] = p
	return out, ReplyStripKeys, nil
}

// scan rewrites SCAN cursor [MATCH p] [COUNT n] [TYPE t] (first == 2,
// scoped) and HSCAN/SSCAN/ZSCAN key cursor [MATCH p] [COUNT n] (first ==
// 3), parsing the options as redis-server's scanGenericCommand does: every
// MATCH pattern is bounded (and for SCAN prefixed, with MATCH <prefix>*
// added when there is none), every COUNT above the cap is lowered to it,
// and anything else is Redis's syntax error.
func (r *Rewriter) scan(cmd *keyspec.Command, args [][]byte, first int, scoped bool) ([][]byte, Plan, error) {
	out := append(r.out[:0], args[:first]...)
	if !scoped {
		out[1] = r.key(args[1])
	}
	matched := false
	for i := first; i < len(args); i += 2 {
		if i+1 == len(args) {
			return nil, 0, ErrSyntax
		}
		opt, val := args[i], args[i+1]
		switch {
		case equalFold(opt, "match"):
			matched = true
			if scoped {
				var err error
				if val, err = r.pattern(cmd, val); err != nil {
					return nil, 0, err
				}
			} else if err := r.checkPattern(cmd, val); err != nil {
				return nil, 0, err
			}
		case equalFold(opt, "count"):
			if n, ok := parseInt(val); ok && r.maxCount > 0 && n > int64(r.maxCount) {
				val = r.count
			}
		case scoped && equalFold(opt, "type"):
		default:
			return nil, 0, ErrSyntax
		}
		out = append(out, opt, val)
	}
	if scoped && !matched {
		start := len(r.scratch)
		r.scratch = r.ns.AppendPattern(r.scratch, argAll)
		out = append(out, argMatch, r.scratch[start:len(r.scratch):len(r.scratch)])
	}
	r.out = out
	if scoped {
		return out, ReplyStripScan, nil
	}
	return out, ReplyPlain, nil
}

// sort rewrites SORT/SORT_RO key [BY pattern] [LIMIT offset count]
// [GET pattern ...] [ASC|DESC] [ALPHA] [STORE destination], walking the
// options as redis-server's sortCommandGeneric does. BY and GET patterns
// are key names with '*' standing for an element (and "->field" for a hash
// field): prefixing them keeps every key they form in the namespace, and a
// pattern without '*' stays without, so BY nosort still skips sorting.
// GET # (the element itself; Redis also takes "#\0...") is kept.
func (r *Rewriter) sort(cmd *keyspec.Command, args [][]byte) ([][]byte, Plan, error) {
	readonly := cmd.Name == "sort_ro"
	out := r.copyArgs(args)
	out[1] = r.key(args[1])
	for j := 2; j < len(args); j++ {
		left := len(args) - j - 1
		a := args[j]
		switch {
		case equalFold(a, "asc"), equalFold(a, "desc"), equalFold(a, "alpha"):
		case equalFold(a, "limit") && left >= 2:
			j += 2
		case !readonly && equalFold(a, "store") && left >= 1,
			equalFold(a, "by") && left >= 1:
			j++
			out[j] = r.key(args[j])
		case equalFold(a, "get") && left >= 1:
			j++
			if p := args[j]; len(p) == 0 || p[0] != '#' || len(p) > 1 && p[1] != 0 {
				out[j] = r.key(p)
			}
		default:
			return nil, 0, ErrSyntax
		}
	}
	return out, ReplyPlain, nil
}

// copy refuses COPY ... DB n for n other than 0 (Redis's parser takes
// exactly "0" as database 0) and prefixes the two keys.
func (r *Rewriter) copy(cmd *keyspec.Command, args [][]byte) ([][]byte, Plan, error) {
	for j := 3; j < len(args); j++ {
		if equalFold(args[j], "db") && j+1 < len(args) {
			j++
			if string(args[j]) != "0" {
				return nil, 0, refuse(cmd, RuleCrossDB, "COPY to another database is not allowed")
			}
		}
	}
	return r.keys(cmd, args, ReplyPlain)
}

// pubsub scopes the channels and patterns of the Pub/Sub commands.
func (r *Rewriter) pubsub(cmd *keyspec.Command, e *entry, args [][]byte) ([][]byte, Plan, error) {
	out := r.copyArgs(args)
	first, last, patterns := 1, len(args), false
	switch e.kind {
	case kPatterns:
		patterns = true
	case kPublish:
		last = 2
	case kPubsubChannels:
		// PUBSUB CHANNELS [pattern]: Redis ignores arguments after the
		// pattern; they are dropped.
		patterns, first, last = true, 2, min(len(args), 3)
		out = out[:last]
		if len(args) == 2 {
			start := len(r.scratch)
			r.scratch, _ = r.ns.AppendChannel(r.scratch, argAll)
			out = append(out, r.scratch[start:len(r.scratch):len(r.scratch)])
		}
	case kPubsubNumsub:
		first = 2
	}
	for i := first; i < last; i++ {
		if patterns {
			if err := r.checkPattern(cmd, args[i]); err != nil {
				return nil, 0, err
			}
		}
		var err error
		if out[i], err = r.channel(cmd, args[i]); err != nil {
			return nil, 0, err
		}
	}
	r.out = out
	return out, e.plan, nil
}

// equalFold reports whether b equals the lower-case ASCII word s, ignoring
// ASCII case as strcasecmp does.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// parseInt parses b as redis-server's string2ll does: an optional '-',
// no leading zeros, spaces or '+', no overflow.
func parseInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	d := b
	if neg {
		d = b[1:]
	}
	if len(d) == 0 || len(d) > 19 || d[0] == '0' && (len(d) > 1 || neg) {
		return 0, false
	}
	var n uint64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	switch {
	case !neg && n <= 1<<63-1:
		return int64(n), true
	case neg && n <= 1<<63:
		return -int64(n-1) - 1, true
	}
	return 0, false
}
