package lifecycle

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/proxy/redis/namespace"
)

// Redis reaches tenants' keys on the sidecars' upstream redis-server, in
// each tenant's namespace (package namespace: the same prefix the
// sidecar writes). Every command names keys under that prefix only: SCAN
// with MATCH <prefix>*, whose prefix holds no glob character, and keys
// built by prefixing.
type Redis struct {
	c *goredis.Client
}

// NewRedis returns access through c.
func NewRedis(c *goredis.Client) *Redis { return &Redis{c: c} }

// scanCount is SCAN's COUNT hint and the batch size of DUMP and UNLINK.
const scanCount = 500

// namespaceOf is the tenant's namespace under the policy's mode.
func namespaceOf(p *policypb.Policy, tenant string) (*namespace.Namespace, error) {
	mode := namespace.Spread
	if p.GetRedis().GetNamespace() == policypb.NamespaceMode_NAMESPACE_MODE_ONE_SLOT {
		mode = namespace.OneSlot
	}
	return namespace.New(tenant, mode)
}

// scan calls f with every key of ns (full names), a batch at a time. Keys
// written while it runs may or may not be seen, as with SCAN itself.
func (r *Redis) scan(ctx context.Context, ns *namespace.Namespace, f func(keys []string) error) error {
	pattern := ns.KeyPrefix() + "*"
	var cursor uint64
	for {
		keys, next, err := r.c.Scan(ctx, cursor, pattern, scanCount).Result()
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if len(keys) > 0 {
			if err := f(keys); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// count returns how many keys ns holds.
func (r *Redis) count(ctx context.Context, ns *namespace.Namespace) (int64, error) {
	var n int64
	err := r.scan(ctx, ns, func(keys []string) error { n += int64(len(keys)); return nil })
	return n, err
}

// deleteAll unlinks every key of ns, a batch at a time, and returns how
// many it removed.
func (r *Redis) deleteAll(ctx context.Context, ns *namespace.Namespace, pause time.Duration, progress func(n int64) error) (int64, error) {
	var n int64
	err := r.scan(ctx, ns, func(keys []string) error {
		for _, k := range keys { // belt and braces: SCAN MATCH already confines them
			if _, ok := ns.StripKey([]byte(k)); !ok {
				return fmt.Errorf("scan returned key %q outside the namespace", k)
			}
		}
		d, err := r.c.Unlink(ctx, keys...).Result()
		if err != nil {
			return fmt.Errorf("unlink: %w", err)
		}
		n += d
		if progress != nil {
			if err := progress(n); err != nil {
				return err
			}
		}
		if pause > 0 {
			t := time.NewTimer(pause)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		return nil
	})
	return n, err
}

// keyRecord is one line of an archive's keys file: the key as the tenant
// names it, its remaining time to live in milliseconds (0: none), and its
// DUMP payload.
type keyRecord struct {
	Key   []byte `json:"key"`
	PTTL  int64  `json:"pttl"`
	Value []byte `json:"dump"`
}

// writeKeys writes every key of ns to w, one keyRecord a line, and
// returns the count and the SHA-256 of what it wrote. A key that expires
// between SCAN and DUMP is left out.
func (r *Redis) writeKeys(ctx context.Context, ns *namespace.Namespace, w io.Writer) (int64, []byte, error) {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	var n int64
	err := r.scan(ctx, ns, func(keys []string) error {
		pipe := r.c.Pipeline()
		dumps := make([]*goredis.StringCmd, len(keys))
		ttls := make([]*goredis.DurationCmd, len(keys))
		for i, k := range keys {
			dumps[i] = pipe.Dump(ctx, k)
			ttls[i] = pipe.PTTL(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
			return fmt.Errorf("dump: %w", err)
		}
		for i, k := range keys {
			v, err := dumps[i].Result()
			if errors.Is(err, goredis.Nil) {
				continue // gone since SCAN
			}
			if err != nil {
				return fmt.Errorf("dump: %w", err)
			}
			ttl := ttls[i].Val()
			if ttl == -2 { // gone between DUMP and PTTL
				continue
			}
			stripped, ok := ns.StripKey([]byte(k))
			if !ok {
				return fmt.Errorf("scan returned key %q outside the namespace", k)
			}
			rec := keyRecord{Key: stripped, Value: []byte(v)}
			if ttl > 0 {
				rec.PTTL = ttl.Milliseconds()
			}
			line, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			_, _ = bw.Write(line)
			if err := bw.WriteByte('\n'); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return n, nil, err
	}
	if err := bw.Flush(); err != nil {
		return n, nil, err
	}
	return n, h.Sum(nil), nil
}

// restoreKeys RESTOREs keyRecords read from lines into ns (REPLACE: a
// retried load overwrites its own earlier keys; the target namespace was
// checked empty before). A key gets the time to live it had left when it
// was exported.
func (r *Redis) restoreKeys(ctx context.Context, ns *namespace.Namespace, lines *lineReader, progress func(n int64) error) (int64, []byte, error) {
	var n int64
	pipe := r.c.Pipeline()
	queued := 0
	flush := func() error {
		if queued == 0 {
			return nil
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			for _, c := range cmds {
				if c.Err() != nil {
					return fmt.Errorf("restore: %w", c.Err())
				}
			}
			return fmt.Errorf("restore: %w", err)
		}
		n += int64(queued)
		queued = 0
		if progress != nil {
			return progress(n)
		}
		return nil
	}
	for {
		line, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, nil, err
		}
		var rec keyRecord
		if err := json.Unmarshal(line, &rec); err != nil {
			return n, nil, fmt.Errorf("keys file line %d: %w", lines.lines, err)
		}
		if rec.PTTL < 0 {
			return n, nil, fmt.Errorf("keys file line %d: negative pttl", lines.lines)
		}
		key := string(ns.AppendKey(nil, rec.Key))
		pipe.RestoreReplace(ctx, key, time.Duration(rec.PTTL)*time.Millisecond, string(rec.Value))
		if queued++; queued == scanCount {
			if err := flush(); err != nil {
				return n, nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return n, nil, err
	}
	return n, lines.sum(), nil
}

// set stores seed keys as plain strings in ns.
func (r *Redis) set(ctx context.Context, ns *namespace.Namespace, kv map[string]string) error {
	if len(kv) == 0 {
		return nil
	}
	pipe := r.c.Pipeline()
	for k, v := range kv {
		pipe.Set(ctx, string(ns.AppendKey(nil, []byte(k))), v, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("set: %w", err)
	}
	return nil
}
