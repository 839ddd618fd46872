package compat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/push"
)

func goredisVersion(*testing.T) string {
	return moduleVersion("github.com/redis/go-redis/v9")
}

// goredisClient connects to the sidecar as a stock go-redis client would:
// from the demo's URL, with the given protocol and nothing disabled.
func goredisClient(env map[string]string, key string, protocol int, tweak ...func(*goredis.Options)) (*goredis.Client, error) {
	opt, err := goredis.ParseURL(env[key])
	if err != nil {
		return nil, err
	}
	opt.Protocol = protocol
	for _, f := range tweak {
		f(opt)
	}
	return goredis.NewClient(opt), nil
}

// goredisCases are the go-redis cases over RESP2 or RESP3.
func goredisCases(protocol int) []goCase {
	name := fmt.Sprintf("go-redis-resp%d", protocol)
	key := func(k string) string { return "compat:" + name + ":" + k }
	acme := func(env map[string]string) (*goredis.Client, error) {
		return goredisClient(env, "TG_REDIS_URL_ACME", protocol)
	}
	globex := func(env map[string]string) (*goredis.Client, error) {
		return goredisClient(env, "TG_REDIS_URL_GLOBEX", protocol)
	}
	cases := []goCase{
		{"get_set", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			if err := r.Set(ctx, key("k"), "v1", time.Minute).Err(); err != nil {
				return "", err
			}
			got, err := r.MGet(ctx, key("k"), "greeting").Result()
			if err != nil {
				return "", err
			}
			if got[0] != "v1" || got[1] != "hello from acme" {
				return "", fmt.Errorf("MGET %v, want [v1, hello from acme]", got)
			}
			return "SET, MGET of its own key and the seeded greeting", nil
		}},
		{"pipeline", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			var incr *goredis.IntCmd
			var get *goredis.StringCmd
			_, err = r.Pipelined(ctx, func(p goredis.Pipeliner) error {
				p.Set(ctx, key("p"), 1, time.Minute)
				incr = p.IncrBy(ctx, key("p"), 41)
				get = p.Get(ctx, key("p"))
				return nil
			})
			if err != nil {
				return "", err
			}
			if incr.Val() != 42 || get.Val() != "42" {
				return "", fmt.Errorf("INCRBY %d, GET %q; want 42", incr.Val(), get.Val())
			}
			return "3 commands in one pipeline", nil
		}},
		{"multi_exec", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			k := key("tx")
			if err := r.Set(ctx, k, 10, time.Minute).Err(); err != nil {
				return "", err
			}
			// WATCH, then MULTI/EXEC, as go-redis' optimistic transaction.
			err = r.Watch(ctx, func(tx *goredis.Tx) error {
				n, err := tx.Get(ctx, k).Int()
				if err != nil {
					return err
				}
				_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
					p.Set(ctx, k, n*2, time.Minute)
					return nil
				})
				return err
			}, k)
			if err != nil {
				return "", err
			}
			if v, err := r.Get(ctx, k).Result(); err != nil || v != "20" {
				return "", fmt.Errorf("after WATCH/MULTI/EXEC: %q %v, want 20", v, err)
			}
			return "WATCH, MULTI, EXEC", nil
		}},
		{"pubsub", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			return pubsubRoundTrip(ctx, r, r, key("ch"), "")
		}},
		{"error_recovery", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			conn := r.Conn() // one connection, so "still usable" means this one
			defer conn.Close()
			if err := conn.Set(ctx, key("e"), "text", time.Minute).Err(); err != nil {
				return "", err
			}
			wrongType := conn.Incr(ctx, key("e")).Err()
			refused := conn.ConfigGet(ctx, "maxmemory").Err()
			if wrongType == nil || refused == nil || !strings.HasPrefix(refused.Error(), "NOPERM") {
				return "", fmt.Errorf("INCR of text: %v; CONFIG GET: %v (want an error, NOPERM)", wrongType, refused)
			}
			if v, err := conn.Get(ctx, key("e")).Result(); err != nil || v != "text" {
				return "", fmt.Errorf("GET after the errors: %q %v", v, err)
			}
			return fmt.Sprintf("%q and %q, the connection still usable", wrongType, refused), nil
		}},
		{"isolation_keys", func(ctx context.Context, env map[string]string) (string, error) {
			g, err := globex(env)
			if err != nil {
				return "", err
			}
			defer g.Close()
			if err := g.Set(ctx, key("secret"), "globex-secret", time.Minute).Err(); err != nil {
				return "", err
			}
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			if v, err := r.Get(ctx, key("secret")).Result(); !errors.Is(err, goredis.Nil) {
				return "", fmt.Errorf("acme reads globex's key: %q %v", v, err)
			}
			if n, err := r.Exists(ctx, key("secret")).Result(); err != nil || n != 0 {
				return "", fmt.Errorf("EXISTS of globex's key: %d %v", n, err)
			}
			var all []string
			iter := r.Scan(ctx, 0, "*", 100).Iterator()
			for iter.Next(ctx) {
				all = append(all, iter.Val())
			}
			if err := iter.Err(); err != nil {
				return "", err
			}
			for _, k := range all {
				if k == key("secret") || strings.HasPrefix(k, "t:") {
					return "", fmt.Errorf("SCAN shows acme %q", k)
				}
			}
			if !slices.Contains(all, "greeting") {
				return "", fmt.Errorf("SCAN misses acme's greeting: %v", all)
			}
			return fmt.Sprintf("GET nil, EXISTS 0, SCAN lists %d keys, none of globex", len(all)), nil
		}},
		{"isolation_pubsub", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			g, err := globex(env)
			if err != nil {
				return "", err
			}
			defer g.Close()
			return pubsubRoundTrip(ctx, r, g, key("shared-ch"), "from globex")
		}},
		{"script", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			// A fresh body each run, so the first Run misses the script
			// cache: EVALSHA gets NOSCRIPT and go-redis falls back to EVAL.
			s := goredis.NewScript(fmt.Sprintf("-- %d\nredis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[1], 1)", time.Now().UnixNano()))
			for want := int64(8); want <= 9; want++ { // EVAL, then EVALSHA
				n, err := s.Run(ctx, r, []string{key("script")}, want-1).Int64()
				if err != nil {
					return "", err
				}
				if n != want {
					return "", fmt.Errorf("script returned %d, want %d", n, want)
				}
			}
			if v, err := r.Get(ctx, key("script")).Result(); err != nil || v != "9" {
				return "", fmt.Errorf("GET of the script's key: %q %v, want 9", v, err)
			}
			return "EVALSHA (NOSCRIPT), EVAL, then EVALSHA on acme's key", nil
		}},
		{"script_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			g, err := globex(env)
			if err != nil {
				return "", err
			}
			defer g.Close()
			return scriptCrossTenant(ctx, r, g, key("pwned"))
		}},
		{"script_cache_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
			r, err := acme(env)
			if err != nil {
				return "", err
			}
			defer r.Close()
			g, err := globex(env)
			if err != nil {
				return "", err
			}
			defer g.Close()
			return scriptCacheCrossTenant(ctx, r, g, key("cache"))
		}},
		{"function_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
			return functionCrossTenant(ctx, env, protocol)
		}},
	}
	globexUnaffected := goCase{"globex_unaffected", func(ctx context.Context, env map[string]string) (string, error) {
		g, err := globex(env)
		if err != nil {
			return "", err
		}
		defer g.Close()
		got, err := g.MGet(ctx, "greeting", key("secret"), key("pwned")).Result()
		if err != nil {
			return "", err
		}
		if got[0] != "hello from globex" || got[1] != "globex-secret" || got[2] != nil {
			return "", fmt.Errorf("globex reads %v, want [hello from globex, globex-secret, nil]", got)
		}
		return "globex's keys intact", nil
	}}
	if protocol == 3 {
		cases = append(cases,
			goCase{"client_side_cache", func(ctx context.Context, env map[string]string) (string, error) {
				return clientSideCache(ctx, env, key)
			}},
			goCase{"tracking_cross_tenant", func(ctx context.Context, env map[string]string) (string, error) {
				return trackingCrossTenant(ctx, env, key)
			}})
	}
	return append(cases, globexUnaffected) // last, after every attempt
}

// clientSideCache reads a key through go-redis' client-side cache (RESP3
// and CLIENT TRACKING): the second read must be a hit, and a change made by
// another client must reach the cache as an invalidation.
func clientSideCache(ctx context.Context, env map[string]string, key func(string) string) (string, error) {
	r, err := goredisClient(env, "TG_REDIS_URL_ACME", 3)
	if err != nil {
		return "", err
	}
	defer r.Close()
	k := key("cached")
	if err := r.Set(ctx, k, "v1", time.Minute).Err(); err != nil {
		return "", err
	}
	cached, err := goredisClient(env, "TG_REDIS_URL_ACME", 3, func(o *goredis.Options) {
		o.ClientSideCacheConfig = &goredis.ClientSideCacheConfig{MaxEntries: 100}
	})
	if err != nil {
		return "", err
	}
	defer cached.Close()
	for i := 0; i < 2; i++ {
		if v, err := cached.Get(ctx, k).Result(); err != nil || v != "v1" {
			return "", fmt.Errorf("cached GET: %q %v", v, err)
		}
	}
	if st := cached.CSCStats(); st.Hits == 0 {
		return "", fmt.Errorf("the second GET was not served from the cache (%+v): CLIENT TRACKING did not take", st)
	}
	if err := r.Set(ctx, k, "v2", time.Minute).Err(); err != nil {
		return "", err
	}
	// The invalidation arrives on the tracking connection; poll the cached
	// client until it serves the new value (MaxStaleness is off, so only an
	// invalidation can make it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := cached.Get(ctx, k).Result()
		if err != nil {
			return "", err
		}
		if v == "v2" {
			return fmt.Sprintf("hit from the cache, invalidated on change (%+v)", cached.CSCStats()), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("still %q 5s after the key changed: no invalidation", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pubsubRoundTrip subscribes sub to ch and publishes on ch: first from
// other with payload foreign (unless ""), then from pub. The subscriber
// must get pub's message first, with ch named as the client named it:
// another tenant's PUBLISH on the same name, sent first, must not arrive.
func pubsubRoundTrip(ctx context.Context, sub, other *goredis.Client, ch, foreign string) (string, error) {
	ps := sub.Subscribe(ctx, ch)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscribe confirmation
		return "", err
	}
	if foreign != "" {
		if n, err := other.Publish(ctx, ch, foreign).Result(); err != nil || n != 0 {
			return "", fmt.Errorf("globex's PUBLISH reached %d subscribers (%v), want 0", n, err)
		}
	}
	if n, err := sub.Publish(ctx, ch, "from acme").Result(); err != nil || n != 1 {
		return "", fmt.Errorf("PUBLISH reached %d subscribers (%v), want 1", n, err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		return "", err
	}
	if msg.Channel != ch || msg.Payload != "from acme" {
		return "", fmt.Errorf("got %q on %q, want %q on %q", msg.Payload, msg.Channel, "from acme", ch)
	}
	if foreign != "" {
		return "only acme's own message arrived; globex's PUBLISH reached 0 subscribers", nil
	}
	return "SUBSCRIBE, PUBLISH, message on the channel as named", nil
}

// scriptCrossTenant runs scripts that name globex's keys by their stored
// names; each must fail, and globex must not see the key one tried to set.
func scriptCrossTenant(ctx context.Context, acme, globex *goredis.Client, pwned string) (string, error) {
	var refusals []string
	for _, body := range []string{
		"return redis.call('GET', 't:globex:greeting')",
		"return redis.call('SET', 't:globex:" + pwned + "', 'acme was here')",
	} {
		v, err := acme.Eval(ctx, body, nil).Result()
		if err == nil || errors.Is(err, goredis.Nil) {
			return "", fmt.Errorf("%s: returned %v (%v), want an error", body, v, err)
		}
		refusals = append(refusals, err.Error())
	}
	if v, err := globex.Get(ctx, pwned).Result(); !errors.Is(err, goredis.Nil) {
		return "", fmt.Errorf("globex has %q = %q (%v)", pwned, v, err)
	}
	return "refused: " + strings.Join(refusals, "; "), nil
}

// scriptCacheCrossTenant loads a script as acme: globex's SCRIPT EXISTS
// does not see it and its EVALSHA answers NOSCRIPT, though globex may run
// the same text itself, on its own keys.
func scriptCacheCrossTenant(ctx context.Context, acme, globex *goredis.Client, k string) (string, error) {
	body := fmt.Sprintf("-- %d\nreturn redis.call('INCR', KEYS[1])", time.Now().UnixNano())
	sha, err := acme.ScriptLoad(ctx, body).Result()
	if err != nil {
		return "", err
	}
	if n, err := acme.EvalSha(ctx, sha, []string{k}).Int64(); err != nil || n != 1 {
		return "", fmt.Errorf("acme's EVALSHA of its own script: %d %v", n, err)
	}
	exists, err := globex.ScriptExists(ctx, sha).Result()
	if err != nil || exists[0] {
		return "", fmt.Errorf("globex's SCRIPT EXISTS of acme's script: %v %v", exists, err)
	}
	v, err := globex.EvalSha(ctx, sha, []string{k}).Result()
	if err == nil || !strings.HasPrefix(err.Error(), "NOSCRIPT") {
		return "", fmt.Errorf("globex's EVALSHA of acme's script: %v %v, want NOSCRIPT", v, err)
	}
	if n, err := globex.Eval(ctx, body, []string{k}).Int64(); err != nil || n != 1 {
		return "", fmt.Errorf("globex's EVAL of the same text: %d %v, want 1 (its own key)", n, err)
	}
	return "globex: SCRIPT EXISTS 0, EVALSHA " + err.Error(), nil
}

// functionCrossTenant loads a function library directly (as an operator
// would), whose function reads globex's key: acme's FCALL of it is
// refused, as is acme's own FUNCTION LOAD, and globex's key is intact.
func functionCrossTenant(ctx context.Context, env map[string]string, protocol int) (string, error) {
	opt, err := goredis.ParseURL(env["TG_REDIS_ADMIN_URL"])
	if err != nil {
		return "", err
	}
	admin := goredis.NewClient(opt)
	defer admin.Close()
	lib := fmt.Sprintf("compat_resp%d", protocol)
	fn := lib + "_read_globex"
	code := fmt.Sprintf("#!lua name=%s\nredis.register_function('%s', function(keys, args) return redis.call('GET', 't:globex:greeting') end)", lib, fn)
	if err := admin.FunctionLoadReplace(ctx, code).Err(); err != nil {
		return "", err
	}
	defer admin.FunctionDelete(context.Background(), lib)
	r, err := goredisClient(env, "TG_REDIS_URL_ACME", protocol)
	if err != nil {
		return "", err
	}
	defer r.Close()
	var refusals []string
	for _, do := range []func() *goredis.Cmd{
		func() *goredis.Cmd { return r.FCall(ctx, fn, nil) },
		func() *goredis.Cmd { return r.FCallRo(ctx, fn, nil) },
		func() *goredis.Cmd { return r.Do(ctx, "FUNCTION", "LOAD", strings.Replace(code, lib, lib+"_acme", 1)) },
		func() *goredis.Cmd { return r.Do(ctx, "FUNCTION", "DELETE", lib) },
	} {
		v, err := do().Result()
		if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			return "", fmt.Errorf("returned %v (%v), want NOPERM", v, err)
		}
		refusals = append(refusals, err.Error())
	}
	if libs, err := admin.FunctionList(ctx, goredis.FunctionListQuery{LibraryNamePattern: lib + "*"}).Result(); err != nil || len(libs) != 1 {
		return "", fmt.Errorf("libraries after acme's attempts: %v %v", libs, err)
	}
	return "refused: " + strings.Join(refusals, "; "), nil
}

// trackingCrossTenant turns on CLIENT TRACKING in broadcasting mode with no
// prefix, which upstream would report every key of every tenant. Refusing
// it is fine; accepting it must still give acme invalidations of its own
// keys only, named as acme names them.
func trackingCrossTenant(ctx context.Context, env map[string]string, key func(string) string) (string, error) {
	r, err := goredisClient(env, "TG_REDIS_URL_ACME", 3)
	if err != nil {
		return "", err
	}
	defer r.Close()
	var mu sync.Mutex
	var seen []string
	if err := r.RegisterPushNotificationHandler("invalidate", invalidations(func(keys []string) {
		mu.Lock()
		seen = append(seen, keys...)
		mu.Unlock()
	}), false); err != nil {
		return "", err
	}
	conn := r.Conn()
	defer conn.Close()
	if err := conn.ClientTrackingOn(ctx, &goredis.ClientTrackingOptions{Bcast: true}).Err(); err != nil {
		if strings.HasPrefix(err.Error(), "NOPERM") {
			return "CLIENT TRACKING BCAST refused: " + err.Error(), nil
		}
		return "", err
	}
	g, err := goredisClient(env, "TG_REDIS_URL_GLOBEX", 3)
	if err != nil {
		return "", err
	}
	defer g.Close()
	if err := g.Set(ctx, key("bcast-globex"), "x", time.Minute).Err(); err != nil {
		return "", err
	}
	if err := r.Set(ctx, key("bcast-acme"), "x", time.Minute).Err(); err != nil {
		return "", err
	}
	// Invalidations come in the order keys change; once acme's own key is
	// reported, globex's would have been.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := conn.Ping(ctx).Err(); err != nil { // reads pending pushes
			return "", err
		}
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		for _, k := range got {
			if k == key("bcast-globex") || strings.HasPrefix(k, "t:") {
				return "", fmt.Errorf("acme was told of %q", k)
			}
		}
		if slices.Contains(got, key("bcast-acme")) {
			return fmt.Sprintf("tracking accepted; %d invalidations, all acme's", len(got)), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no invalidation of acme's own key within 5s (got %v)", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// invalidations adapts a function to go-redis' push handler for RESP3
// "invalidate" messages: ["invalidate", [key, …]] (null for a flush).
type invalidations func(keys []string)

func (f invalidations) HandlePushNotification(_ context.Context, _ push.NotificationHandlerContext, n []any) error {
	var keys []string
	if len(n) > 1 {
		if list, ok := n[1].([]any); ok {
			for _, k := range list {
				keys = append(keys, fmt.Sprint(k))
			}
		}
	}
	f(keys)
	return nil
}
