// Package pg holds PostgreSQL v3 wire-protocol handling with no policy in it:
// bounded message framing for the proxy's hot loop, startup-packet decoding,
// and ErrorResponse encoding (SCRAM is in wire/scram). Message bodies are
// decoded with github.com/jackc/pgx/v5/pgproto3's types.
package pg
