// Package namespace encodes a tenant's Redis key, pattern and channel names
// so that many tenants can share one Redis (or Redis Cluster) without
// seeing each other's data.
//
// A client of the tenantguard Redis sidecar uses plain names; the sidecar
// rewrites each name before forwarding and strips the prefix from names in
// replies. A tenant's names are
//
//	keys      Spread:  t:<enc>:<key>     OneSlot: {t:<enc>}:<key>
//	channels  Spread:  c:<enc>:<channel> OneSlot: {c:<enc>}:<channel>
//	keyspace notifications
//	          __keyspace@<db>__:<key prefix><key>
//
// where <enc> is the tenant id with every byte outside [a-z0-9_-] written
// as %XX (upper-case hex). The encoding is injective and <enc> never holds
// ':', '{', '}' or a glob metacharacter ('*', '?', '[', ']', '\'), so no
// tenant's prefix is a prefix of another's and no prefix contains a glob
// metacharacter: a prefix is also a glob pattern matching exactly itself,
// and prepending it to a client's KEYS, SCAN MATCH or PSUBSCRIBE pattern
// confines the pattern to the tenant's names (New checks this invariant;
// the tests assert it).
//
// # Modes
//
// Spread keeps the user's own hash tags working: the prefix holds no '{',
// so Redis Cluster hashes "t:acme:{user1}:a" by "user1", and a tenant's keys
// spread over all slots. OneSlot puts the prefix in a hash tag, so all of a
// tenant's keys live in one slot (multi-key commands always work, a tenant
// is never split across shards), at the price that a user's own "{tag}" is
// then ignored by Cluster: "{t:acme}:{user1}:a" hashes by "t:acme". Channels
// follow the same mode, which matters only for sharded Pub/Sub (SPUBLISH,
// SSUBSCRIBE).
//
// # Channels and notifications
//
// Channels live in their own prefix ("c:" rather than "t:"); Redis keeps
// channels and keys apart anyway, the distinct prefix only makes the
// shared server's MONITOR and PUBSUB output easier to read. Channel names
// of the form __keyspace@<db>__:<key> are keyspace notifications: their key
// part is rewritten to the tenant's key, so a tenant hears about its own
// keys only, for a literal channel as well as for a pattern. __keyevent@
// channels carry the key in the message payload, not in the channel name,
// so they cannot be scoped by renaming and are refused (AppendChannel
// reports false); a client that needs them must use keyspace channels.
// Malformed notification names (say "__keyspace@x") are refused too.
// Keyspace notification payloads are event names ("set", "expired"...),
// so messages need no rewriting beyond their channel (AppendStripChannel).
// A plain channel pattern such as "*" becomes "c:<enc>:*" and so never
// matches notification channels: a tenant wanting notifications must name
// them ("__keyspace@0__:*").
//
// Match is a port of redis-server's glob matcher (stringmatchlen), used by
// the tests to prove that no pattern of one tenant matches another tenant's
// names, and available to callers that filter names locally.
package namespace
