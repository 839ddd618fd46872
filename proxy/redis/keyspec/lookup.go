package keyspec

import (
	"bytes"
	"strings"
)

// maxName bounds the command and subcommand names Lookup accepts; longer
// names are unknown. The longest in the table is well below it.
const maxName = 64

// Lookup finds the command args names, as redis-server does: args[0] is the
// command name in any ASCII case, and for a container command (CLIENT,
// OBJECT, XINFO...) args[1] names the subcommand, so "CLIENT KILL ..." gives
// the "client|kill" command. A container given alone is returned itself;
// its arity then rejects it. Lookup does not allocate unless it fails.
func Lookup(args [][]byte) (*Command, error) {
	if len(args) == 0 {
		return nil, unknownCommand(args)
	}
	var buf [2*maxName + 1]byte
	n, ok := lower(buf[:0:maxName], args[0])
	if !ok {
		return nil, unknownCommand(args)
	}
	cmd := table[string(buf[:n])]
	if cmd == nil {
		return nil, unknownCommand(args)
	}
	if len(cmd.Subcommands) == 0 || len(args) == 1 {
		return cmd, nil
	}
	buf[n] = '|'
	m, ok := lower(buf[n+1:n+1:n+1+maxName], args[1])
	if ok {
		if sub := table[string(buf[:n+1+m])]; sub != nil {
			return sub, nil
		}
	}
	return nil, newError(ErrUnknownCommand, cmd.Name, "unknown subcommand '%s'. Try %s HELP.",
		clip(args[1], 128), strings.ToUpper(string(args[0])))
}

// lower appends name in ASCII lower case to dst, which must have room for
// it, and returns its length; ok is false when it does not fit or contains
// '|', which only the table's subcommand keys use.
func lower(dst, name []byte) (n int, ok bool) {
	if len(name) > cap(dst) || bytes.IndexByte(name, '|') >= 0 {
		return 0, false
	}
	dst = dst[:len(name)]
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst[i] = c
	}
	return len(name), true
}
