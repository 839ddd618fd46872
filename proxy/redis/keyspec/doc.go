// Package keyspec locates the key arguments of Redis commands the way
// redis-server itself does: from each command's key specifications.
//
// The command table (table_gen.go) is generated from a real redis-server's
// COMMAND INFO and COMMAND DOCS replies and checked in; argument positions
// are never guessed by hand. Regenerate it with
//
//	go generate ./proxy/redis/keyspec
//
// which starts a throwaway redis-server (or uses -addr) and rewrites
// table_gen.go; a test fails when the committed table differs from what the
// local redis-server reports.
//
// A proxy that confines every client to a tenant's key namespace uses it as
//
//	cmd, err := keyspec.Lookup(args)         // "CLIENT KILL" -> "client|kill"
//	if err != nil { reply(err.Error()) }     // a Redis "ERR ..." message
//	idx, err = cmd.AppendKeyIndexes(idx[:0], args)
//	if err != nil { refuse(err) }            // arity, incomplete spec, ...
//	for _, i := range idx { args[i] = prefix(args[i]) }
//
// Locating keys is necessary but not sufficient for isolation: commands
// without keys that act on the whole server (KEYS, SCAN, FLUSHALL, ...),
// scripts that may touch undeclared keys, Pub/Sub channels and admin commands
// are for the caller's policy to refuse or emulate; Command's flags, ACL
// categories, tips and group describe them.
package keyspec

//go:generate go run ./gen -out table_gen.go
