"""psycopg2 (Debian python3-psycopg2) through the tenantguard sidecar."""
import contextlib
import io
import select
import time

import psycopg2
import psycopg2.errors

from compat import Failed, check, env, run

ACME, GLOBEX = env("TG_PG_URL_ACME"), env("TG_PG_URL_GLOBEX")
TAG = "compat-psycopg2"


@contextlib.contextmanager
def connect(url=ACME, autocommit=True, **kw):
    conn = psycopg2.connect(url, connect_timeout=10, **kw)
    conn.autocommit = autocommit
    try:
        yield conn, conn.cursor()
    finally:
        conn.close()


def one(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()


def connect_read():
    with connect() as (_, cur):
        cur.execute("SELECT tenant_id, item FROM public.orders ORDER BY id")
        rows = cur.fetchall()
    check(("acme", "anvil") in rows and ("acme", "rocket skates") in rows, "acme's rows: %r" % rows)
    check({t for t, _ in rows} == {"acme"}, "tenants seen: %r" % rows)
    return "%d rows, all acme's" % len(rows)


def parameterized():
    with connect() as (_, cur):
        amount = one(cur, "SELECT amount::text FROM public.orders WHERE item = %s", ("anvil",))[0]
    check(amount == "120.00", "anvil costs %s" % amount)
    return "parameter bound by psycopg2"


def transaction():
    with connect(autocommit=False) as (conn, cur):
        insert = "INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', %s, 1)"
        cur.execute(insert, (TAG + "-tx-rolled-back",))
        conn.rollback()
        cur.execute(insert, (TAG + "-tx-committed",))
        conn.commit()
        found = one(cur, "SELECT count(*) FILTER (WHERE item = %s), count(*) FILTER (WHERE item = %s) FROM public.orders",
                    (TAG + "-tx-rolled-back", TAG + "-tx-committed"))
        cur.execute("DELETE FROM public.orders WHERE item = %s", (TAG + "-tx-committed",))
        conn.commit()
    check(found == (0, 1), "rolled back / committed rows found: %r" % (found,))
    return "rollback discarded, commit kept"


def error_recovery():
    codes = []
    with connect() as (_, cur):
        for sql in ("SELEC 1", "SELECT set_config('tenantguard.binding', 'globex', false)"):
            try:
                cur.execute(sql)
                raise Failed("%s succeeded" % sql)
            except psycopg2.Error as e:
                codes.append(e.pgcode)
            check(one(cur, "SELECT 1") == (1,), "session unusable after %s" % sql)
    check(codes == ["42601", "42501"], "SQLSTATEs %r" % codes)
    return "42601 and 42501, the session still usable after each"


def isolation_rows():
    with connect() as (_, cur):
        others, hammocks = one(cur, "SELECT count(*) FILTER (WHERE tenant_id <> 'acme'), "
                                    "count(*) FILTER (WHERE item = 'hammock') FROM public.orders")
    check(others == 0 and hammocks == 0, "acme sees %d rows of others, %d hammocks" % (others, hammocks))
    return "no row of globex visible"


def isolation_update_delete():
    with connect() as (_, cur):
        cur.execute("UPDATE public.orders SET amount = 0 WHERE tenant_id = 'globex'")
        updated = cur.rowcount
        cur.execute("DELETE FROM public.orders WHERE item = 'doomsday device'")
        deleted = cur.rowcount
        check(updated == 0 and deleted == 0, "UPDATE %d, DELETE %d" % (updated, deleted))
        try:
            cur.execute("UPDATE public.orders SET tenant_id = 'globex' WHERE item = 'anvil'")
            raise Failed("moving a row to globex succeeded")
        except psycopg2.Error as e:
            check(e.pgcode == "42501", "moving a row to globex: %s %s" % (e.pgcode, e))
    return "UPDATE 0, DELETE 0, moving a row to globex refused (42501)"


def startup_options():
    # libpq's options keyword: what PGOPTIONS sets.
    with connect(options="-c statement_timeout=750 -c lock_timeout=1500") as (_, cur):
        return check_timeouts(cur)


def check_timeouts(cur):
    show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
    check(one(cur, show) == ("750ms", "1500ms"), "settings %r" % (one(cur, show),))
    start = time.monotonic()
    try:
        cur.execute("SELECT pg_sleep(5)")
        raise Failed("pg_sleep(5) was not canceled")
    except psycopg2.errors.QueryCanceled:
        took = time.monotonic() - start
    check(one(cur, show) == ("750ms", "1500ms"), "settings after the timeout %r" % (one(cur, show),))
    return "statement_timeout 750ms, lock_timeout 1500ms; pg_sleep(5) canceled after %.2fs" % took


def startup_cross_tenant():
    refused = []
    for opts in ("-c tenantguard.binding=globex", "-c row_security=off", "-c session_authorization=postgres"):
        try:
            with connect(options=opts):
                raise Failed("startup with options %r was accepted" % opts)
        except psycopg2.OperationalError as e:
            check("FATAL" in str(e), "options %r: %s" % (opts, e))
            refused.append(opts)
    return "FATAL for options " + ", ".join(refused)


def copy_from():
    rows = "".join("%s-copy-%d\t%d\n" % (TAG, i, i) for i in (1, 2, 3))
    with connect() as (_, cur):
        try:
            cur.copy_expert("COPY public.orders (item, amount) FROM STDIN", io.StringIO(rows))
            copied = cur.rowcount
            found = one(cur, "SELECT count(*), array_agg(DISTINCT tenant_id) FROM public.orders WHERE item LIKE %s",
                        (TAG + "-copy-%",))
        finally:
            cur.execute("DELETE FROM public.orders WHERE item LIKE %s", (TAG + "-copy-%",))
    check(copied == 3 and found == (3, ["acme"]), "COPY reported %d rows; found %r" % (copied, found))
    return "copy_expert of 3 rows, tenant_id acme filled in"


def copy_cross_tenant():
    rows = "acme\t%s-cross-acme\t1\nglobex\t%s-cross-globex\t2\n" % (TAG, TAG)
    with connect() as (_, cur):
        try:
            cur.copy_expert("COPY public.orders (tenant_id, item, amount) FROM STDIN", io.StringIO(rows))
            raise Failed("COPY with a row for globex was accepted")
        except psycopg2.Error as e:
            refusal = "%s %s" % (e.pgcode, str(e).strip())
        seen = one(cur, "SELECT count(*) FROM public.orders WHERE item LIKE %s", (TAG + "-cross-%",))[0]
    with connect(GLOBEX) as (_, cur):
        globex_seen = one(cur, "SELECT count(*) FROM public.orders WHERE item LIKE %s", (TAG + "-cross-%",))[0]
    check(seen == 0 and globex_seen == 0, "rows of the refused COPY: acme sees %d, globex %d" % (seen, globex_seen))
    return "refused: " + refusal


def notifications(conn, until, timeout=5.0):
    """Collects (channel, payload) until until(list) holds, or fails."""
    got, deadline = [], time.monotonic() + timeout
    while True:
        conn.poll()
        while conn.notifies:
            n = conn.notifies.pop(0)
            got.append((n.channel, n.payload))
        if until(got):
            return got
        left = deadline - time.monotonic()
        check(left > 0, "notifications so far %r" % got)
        select.select([conn], [], [], left)


def listen_notify():
    with connect() as (conn, cur):
        cur.execute("LISTEN compat_psycopg2")
        cur.execute("NOTIFY compat_psycopg2, 'a1'")
        cur.execute("SELECT pg_notify('compat_psycopg2', 'a2')")
        got = notifications(conn, lambda g: len(g) >= 2)
    check(got == [("compat_psycopg2", "a1"), ("compat_psycopg2", "a2")], "notifications %r" % got)
    return "NOTIFY and pg_notify received on the channel as named"


def listen_cross_tenant():
    with connect() as (conn, cur):
        try:
            cur.execute("LISTEN compat_psycopg2_cross")
        except psycopg2.Error as e:
            check(e.pgcode == "42501", "LISTEN: %s %s" % (e.pgcode, e))
            return "LISTEN refused: " + str(e).strip()
        with connect(GLOBEX) as (_, gcur):
            gcur.execute("NOTIFY compat_psycopg2_cross, 'from globex'")
        # In commit order: globex's, had it leaked, comes before acme's own.
        cur.execute("NOTIFY compat_psycopg2_cross, 'from acme'")
        got = notifications(conn, lambda g: len(g) >= 1)
    check(got[0][1] == "from acme", "acme got %r first" % (got[0],))
    return "acme got only its own notification"


def globex_unaffected():
    with connect(GLOBEX) as (_, cur):
        got = one(cur, """SELECT (SELECT amount::text FROM public.orders WHERE item = 'hammock'),
                                 (SELECT amount::text FROM public.orders WHERE item = 'doomsday device'),
                                 (SELECT count(*) FROM public.orders WHERE tenant_id <> 'globex' OR item LIKE %s)""",
                  (TAG + "%",))
    check(got == ("40.00", "999.99", 0), "globex sees %r" % (got,))
    return "globex's rows intact; none of acme's visible"


run("psycopg2", psycopg2.__version__.split()[0], [
    connect_read, parameterized, transaction, error_recovery, isolation_rows, isolation_update_delete,
    startup_options, startup_cross_tenant, copy_from, copy_cross_tenant, listen_notify, listen_cross_tenant,
    globex_unaffected,
])
