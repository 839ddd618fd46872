package keyspec

// Locate returns the positions in args (args[0] is the command name) of
// cmd's key arguments; it is AppendKeyIndexes with a new slice.
func Locate(cmd *Command, args [][]byte) ([]int, error) {
	return cmd.AppendKeyIndexes(nil, args)
}

// CheckArity returns an ErrArity *Error, worded like redis-server's, unless
// argc arguments (the command name, and the subcommand name, included)
// satisfy c.Arity.
func (c *Command) CheckArity(argc int) error {
	if (c.Arity > 0 && argc != c.Arity) || argc < -c.Arity {
		return newError(ErrArity, c.Name, "wrong number of arguments for '%s' command", c.Name)
	}
	return nil
}

// AppendKeyIndexes appends to dst the positions in args (args[0] is the
// command name, args[1] the subcommand name for subcommands) of every key
// argument and returns the extended slice. It follows only c's key specs,
// exactly as redis-server's getKeysUsingKeySpecs does:
//
//   - begin_search index N starts at args[N]; keyword K starts after the
//     first argument equal to K in ASCII case-insensitively, searched from
//     StartFrom up to (not including) the last argument, or for a negative
//     StartFrom from len(args)+StartFrom down to (not including) args[1];
//     a spec whose keyword is absent has no keys;
//   - find_keys range takes keys up to LastKey after the start (negative:
//     len(args)+LastKey, or with a Limit only 1/Limit of the remaining
//     arguments) every KeyStep; keynum reads the key count at KeyNumIdx
//     after the start and takes the arguments from FirstKey after the start
//     through count-1 further, every KeyStep (that is count keys: every
//     built-in keynum spec has KeyStep 1);
//   - specs marked not_key (e.g. SPUBLISH's shard channel) are skipped.
//
// Positions come in spec order. It does not allocate when dst has room.
//
// It fails, leaving dst's contents as they were, with an *Error of kind
// ErrArity when len(args) does not fit c.Arity; ErrIncomplete when c has an
// incomplete or unknown key spec, whatever the arguments (see KeysComplete);
// ErrAmbiguousKeyword when a begin_search keyword occurs twice in the
// searched arguments (Redis would locate the first, a command may use the
// last); ErrInvalidKeys when a key count is not a non-negative integer
// or keys would lie beyond the arguments. Unlike Redis's key spec search,
// which then falls back to the command's own key extraction, a key count of
// 0 simply yields no keys from that spec (EVAL script 0).
func (c *Command) AppendKeyIndexes(dst []int, args [][]byte) ([]int, error) {
	if err := c.CheckArity(len(args)); err != nil {
		return dst, err
	}
	if !c.KeysComplete() {
		return dst, newError(ErrIncomplete, c.Name, "the keys of '%s' cannot be located from its key specs", c.Name)
	}
	n0, argc := len(dst), len(args)
	for i := range c.KeySpecs {
		ks := &c.KeySpecs[i]
		if ks.Flags&KeyNotKey != 0 {
			continue
		}
		first := ks.BeginSearch.Index
		if ks.BeginSearch.Type == BeginKeyword {
			var twice bool
			if first, twice = searchKeyword(args, &ks.BeginSearch); twice {
				return dst[:n0], newError(ErrAmbiguousKeyword, c.Name,
					"keyword '%s' appears more than once in '%s'", ks.BeginSearch.Keyword, c.Name)
			}
			if first == 0 {
				continue
			}
		}
		fk := &ks.FindKeys
		step, last := fk.KeyStep, 0
		if fk.Type == FindRange {
			switch {
			case fk.LastKey >= 0:
				last = first + fk.LastKey
			case fk.Limit == 0:
				last = argc + fk.LastKey
			default:
				last = first + (argc-first)/fk.Limit + fk.LastKey
			}
		} else { // FindKeynum: KeysComplete ruled out the unknown types.
			idx := first + fk.KeyNumIdx
			if idx < 1 || idx >= argc {
				return dst[:n0], c.invalidKeys()
			}
			n, ok := parseCount(args[idx])
			if !ok || n > argc {
				return dst[:n0], c.invalidKeys()
			}
			if n == 0 {
				continue
			}
			first += fk.FirstKey
			last = first + n - 1
		}
		if step < 1 || first < 1 || first >= argc || last >= argc || last < first {
			return dst[:n0], c.invalidKeys()
		}
		for k := first; k <= last; k += step {
			dst = append(dst, k)
		}
	}
	return dst, nil
}

func (c *Command) invalidKeys() *Error {
	return newError(ErrInvalidKeys, c.Name, "Invalid key arguments specified for '%s' command", c.Name)
}

// searchKeyword returns 1 + the position of bs.Keyword, searched the way
// getKeysUsingKeySpecs does, or 0 when it is absent; twice reports a second
// occurrence in the same searched range.
func searchKeyword(args [][]byte, bs *BeginSearch) (first int, twice bool) {
	argc := len(args)
	start, end := argc+bs.StartFrom, 1
	if bs.StartFrom > 0 {
		start, end = bs.StartFrom, argc-1
	}
	step := 1
	if start > end {
		step = -1
	}
	for i := start; i != end && i >= 1 && i < argc; i += step {
		if equalFoldASCII(args[i], bs.Keyword) {
			if first != 0 {
				return first, true
			}
			first = i + 1
		}
	}
	return first, false
}

// equalFoldASCII is strcasecmp(a, b) == 0: ASCII letters only, unlike
// bytes.EqualFold, which also folds e.g. "ſ" to "s".
func equalFoldASCII(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// parseCount parses a key count like redis-server's string2ll, accepting
// only non-negative values: decimal digits without sign, leading zeros or
// spaces. It refuses more than 18 digits, a count no argument list reaches,
// so that it cannot overflow.
func parseCount(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
