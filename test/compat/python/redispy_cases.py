"""redis-py (Debian python3-redis) through the tenantguard sidecar."""
import time

import redis

from compat import Failed, check, env, run

P = "compat:redis-py:"


def acme(single_connection=False):
    pool = redis.ConnectionPool.from_url(env("TG_REDIS_URL_ACME"), socket_timeout=10, decode_responses=True)
    return redis.Redis(connection_pool=pool, single_connection_client=single_connection)


def globex():
    return redis.Redis.from_url(env("TG_REDIS_URL_GLOBEX"), socket_timeout=10, decode_responses=True)


def get_set():
    r = acme()
    check(r.set(P + "k", "v1", ex=60), "SET failed")
    got = r.mget(P + "k", "greeting")
    check(got == ["v1", "hello from acme"], "MGET %r" % got)
    return "SET, MGET of its own key and the seeded greeting"


def pipeline():
    p = acme().pipeline(transaction=False)
    p.set(P + "p", 1, ex=60).incrby(P + "p", 41).get(P + "p")
    got = p.execute()
    check(got == [True, 42, "42"], "pipeline replies %r" % got)
    return "3 commands in one pipeline"


def multi_exec():
    r, k = acme(), P + "tx"
    r.set(k, 10, ex=60)

    def double(p):  # WATCH, then MULTI/EXEC, retried on a conflict
        n = int(p.get(k))
        p.multi()
        p.set(k, n * 2, ex=60)

    r.transaction(double, k)
    check(r.get(k) == "20", "after WATCH/MULTI/EXEC: %r" % r.get(k))
    return "WATCH, MULTI, EXEC"


def next_message(ps, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = ps.get_message(ignore_subscribe_messages=True, timeout=deadline - time.monotonic())
        if m is not None:
            return m
    raise Failed("no message within %.0fs" % timeout)


def pubsub():
    r = acme()
    ps = r.pubsub()
    ps.subscribe(P + "ch")
    check(ps.get_message(timeout=5)["type"] == "subscribe", "no subscribe confirmation")
    check(r.publish(P + "ch", "from acme") == 1, "PUBLISH reached no subscriber")
    m = next_message(ps)
    check((m["channel"], m["data"]) == (P + "ch", "from acme"), "message %r" % m)
    ps.close()
    return "SUBSCRIBE, PUBLISH, message on the channel as named"


def error_recovery():
    r = acme(single_connection=True)  # "still usable" means this connection
    r.set(P + "e", "text", ex=60)
    errors = []
    for cmd in (("INCR", P + "e"), ("CONFIG", "GET", "maxmemory")):
        try:
            r.execute_command(*cmd)
            raise Failed("%s succeeded" % (cmd,))
        except redis.ResponseError as e:
            errors.append(e)
    check(isinstance(errors[1], redis.exceptions.NoPermissionError), "CONFIG GET: %r" % errors[1])
    errors = [str(e) for e in errors]
    check(r.get(P + "e") == "text", "GET after the errors")
    return "%r, the connection still usable" % errors


def isolation_keys():
    globex().set(P + "secret", "globex-secret", ex=60)
    r = acme()
    check(r.get(P + "secret") is None, "acme reads globex's key: %r" % r.get(P + "secret"))
    check(r.exists(P + "secret") == 0, "EXISTS of globex's key")
    keys = list(r.scan_iter("*", count=100))
    leaked = [k for k in keys if k == P + "secret" or k.startswith("t:")]
    check(not leaked, "SCAN shows acme %r" % leaked)
    check("greeting" in keys, "SCAN misses acme's greeting: %r" % keys)
    return "GET None, EXISTS 0, SCAN lists %d keys, none of globex" % len(keys)


def isolation_pubsub():
    r, ch = acme(), P + "shared-ch"
    ps = r.pubsub()
    ps.subscribe(ch)
    check(ps.get_message(timeout=5)["type"] == "subscribe", "no subscribe confirmation")
    reached = globex().publish(ch, "from globex")
    check(reached == 0, "globex's PUBLISH reached %d subscribers" % reached)
    r.publish(ch, "from acme")
    m = next_message(ps)  # globex's, sent first, would come first
    check(m["data"] == "from acme", "acme got %r" % m)
    ps.close()
    return "only acme's own message arrived; globex's PUBLISH reached 0 subscribers"


def lock():
    r = acme()
    name = P + "lock"
    first = r.lock(name, timeout=5)
    second = r.lock(name, timeout=5)
    check(first.acquire(blocking=False), "acquire")
    check(not second.acquire(blocking=False), "a second holder acquired a held lock")
    check(first.extend(5), "extend")  # a Lua script (EVALSHA, else SCRIPT LOAD)
    ttl = r.pttl(name)
    check(5000 < ttl <= 10000, "PTTL after extend %d" % ttl)
    first.release()  # a Lua script that deletes only its own token
    check(second.acquire(blocking=False), "acquire after release")
    second.release()
    return "acquire, held against a second holder, extend (PTTL %d), release" % ttl


def script():
    r = acme()
    incr = r.register_script("redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[1], 1)")
    got = [incr(keys=[P + "script"], args=[n]) for n in (7, 8)]  # EVALSHA, SCRIPT LOAD on NOSCRIPT
    check(got == [8, 9], "script returned %r" % got)
    check(r.get(P + "script") == "9", "GET of the script's key %r" % r.get(P + "script"))
    return "registered script on acme's key"


def script_cross_tenant():
    r, refusals = acme(), []
    for body in ("return redis.call('GET', 't:globex:greeting')",
                 "return redis.call('SET', 't:globex:%spwned', 'acme was here')" % P):
        try:
            got = r.eval(body, 0)
            raise Failed("%s returned %r" % (body, got))
        except redis.ResponseError as e:
            refusals.append(str(e))
    check(globex().exists(P + "pwned") == 0, "globex has the key acme's script tried to set")
    return "refused: " + "; ".join(refusals)


def script_cache_cross_tenant():
    r, g = acme(), globex()
    body = "-- %d\nreturn redis.call('INCR', KEYS[1])" % time.time_ns()
    sha = r.script_load(body)
    check(r.evalsha(sha, 1, P + "cache") == 1, "acme's EVALSHA of its own script")
    check(g.script_exists(sha) == [False], "globex's SCRIPT EXISTS sees acme's script")
    try:
        got = g.evalsha(sha, 1, P + "cache")
        raise Failed("globex's EVALSHA of acme's script returned %r" % got)
    except redis.exceptions.NoScriptError as e:
        refusal = str(e)
    check(g.eval(body, 1, P + "cache") == 1, "globex's EVAL of the same text ran on acme's key")
    return "globex: SCRIPT EXISTS [False], EVALSHA %s" % refusal


def info_isolation():
    r = acme()
    # Other clients of acme write meanwhile, and INFO's count may be a
    # second old: it must be acme's (some keys), never the server's.
    total = redis.Redis.from_url(env("TG_REDIS_ADMIN_URL")).dbsize()
    info = r.info()
    check(info.get("redis_version"), "no redis_version in INFO")
    check(info.get("loading") == 0, "loading %r" % info.get("loading"))
    keys = info.get("db0", {}).get("keys")
    check(keys and keys < total, "INFO says %r keys, the server holds %d of every tenant" % (keys, total))
    text = r.execute_command("INFO", "everything")
    for never in ("globex", "tcp_port", "process_id", "executable", "config_file", "used_memory:"):
        check(never not in text, "INFO shows %r" % never)
    return "INFO: redis_version %s, db0 keys=%d (acme's own, of %d), nothing of globex or the server's host" % (info["redis_version"], keys, total)


def globex_unaffected():
    got = globex().mget("greeting", P + "secret", P + "pwned")
    check(got == ["hello from globex", "globex-secret", None], "globex reads %r" % got)
    return "globex's keys intact"


run("redis-py", redis.__version__, [
    get_set, pipeline, multi_exec, pubsub, error_recovery, isolation_keys, isolation_pubsub,
    lock, script, script_cross_tenant, script_cache_cross_tenant, info_isolation, globex_unaffected,
])
