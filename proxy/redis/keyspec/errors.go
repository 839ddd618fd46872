package keyspec

import (
	"errors"
	"fmt"
	"strings"
)

// The kinds of *Error; test with errors.Is.
var (
	// ErrUnknownCommand: the command, or the container's subcommand, does
	// not exist.
	ErrUnknownCommand = errors.New("keyspec: unknown command")
	// ErrArity: the argument count does not match the command's arity.
	ErrArity = errors.New("keyspec: wrong number of arguments")
	// ErrIncomplete: some key spec is marked incomplete or has an unknown
	// begin_search or find_keys (e.g. SORT's BY/GET/STORE, MIGRATE's KEYS),
	// so the keys cannot all be located. The caller must refuse the command
	// unless its policy emulates it.
	ErrIncomplete = errors.New("keyspec: key specs cannot locate every key")
	// ErrAmbiguousKeyword: a keyword key spec's keyword (e.g. GEORADIUS's
	// STORE) appears more than once in the searched arguments. Redis's key
	// spec search takes the first occurrence while some commands' parsers
	// use the last one, so the located keys could miss the real one.
	ErrAmbiguousKeyword = errors.New("keyspec: key spec keyword appears more than once")
	// ErrInvalidKeys: the key count is not a non-negative integer, or the
	// keys it or a range spec designate lie outside the arguments. Redis's
	// COMMAND GETKEYS answers "Invalid arguments specified for command".
	ErrInvalidKeys = errors.New("keyspec: invalid key arguments")
)

// Error is the error Lookup and AppendKeyIndexes return. Its message is a
// Redis error reply ("ERR ..." without CR or LF), ready to send to a client;
// errors.Is(err, ErrArity) and the like test its kind.
type Error struct {
	// Kind is one of the Err... values of this package.
	Kind error
	// Command is the lower-case command name when known.
	Command string
	msg     string
}

// Error returns the Redis-style message.
func (e *Error) Error() string { return e.msg }

// Unwrap returns e.Kind.
func (e *Error) Unwrap() error { return e.Kind }

// newError builds an *Error whose message is "ERR " plus the formatted text,
// with CR and LF replaced by spaces as redis-server does.
func newError(kind error, command, format string, a ...any) *Error {
	msg := "ERR " + fmt.Sprintf(format, a...)
	msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	return &Error{Kind: kind, Command: command, msg: msg}
}

// unknownCommand mirrors redis-server's reply for an unknown command.
func unknownCommand(args [][]byte) *Error {
	var b strings.Builder
	for i := 1; i < len(args) && b.Len() < 128; i++ {
		fmt.Fprintf(&b, "'%s' ", clip(args[i], 128-b.Len()))
	}
	name := ""
	if len(args) > 0 {
		name = string(clip(args[0], 128))
	}
	return newError(ErrUnknownCommand, "", "unknown command '%s', with args beginning with: %s", name, b.String())
}

func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
