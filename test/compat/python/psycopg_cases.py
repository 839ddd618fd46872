"""psycopg 3 (Debian python3-psycopg) through the tenantguard sidecar."""
import contextlib
import os
import select
import time

import psycopg

from compat import Failed, check, env, run

ACME, GLOBEX = env("TG_PG_URL_ACME"), env("TG_PG_URL_GLOBEX")
TAG = "compat-psycopg3"


def connect(url=ACME, **kw):
    return psycopg.connect(url, autocommit=True, connect_timeout=10, **kw)


def one(conn, sql, args=None, **kw):
    return conn.execute(sql, args, **kw).fetchone()


def connect_read():
    with connect() as conn:
        rows = conn.execute("SELECT tenant_id, item FROM public.orders ORDER BY id").fetchall()
    check(("acme", "anvil") in rows and ("acme", "rocket skates") in rows, "acme's rows: %r" % rows)
    check({t for t, _ in rows} == {"acme"}, "tenants seen: %r" % rows)
    return "%d rows, all acme's" % len(rows)


def parameterized():
    with connect() as conn:
        # Server-side binding; prepare=True makes it a named prepared statement.
        amounts = [one(conn, "SELECT amount::text FROM public.orders WHERE item = %s", ("anvil",), prepare=True)[0]
                   for _ in range(3)]
    check(amounts == ["120.00"] * 3, "anvil costs %r" % amounts)
    return "bound parameter, prepared statement executed 3 times"


def transaction():
    insert = "INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', %s, 1)"
    with connect() as conn:
        with contextlib.suppress(RuntimeError):
            with conn.transaction():
                conn.execute(insert, (TAG + "-tx-rolled-back",))
                raise RuntimeError("roll back")
        with conn.transaction():
            conn.execute(insert, (TAG + "-tx-committed",))
        found = one(conn, "SELECT count(*) FILTER (WHERE item = %s), count(*) FILTER (WHERE item = %s) FROM public.orders",
                    (TAG + "-tx-rolled-back", TAG + "-tx-committed"))
        conn.execute("DELETE FROM public.orders WHERE item = %s", (TAG + "-tx-committed",))
    check(found == (0, 1), "rolled back / committed rows found: %r" % (found,))
    return "rollback discarded, commit kept"


def error_recovery():
    codes = []
    with connect() as conn:
        for sql in ("SELEC 1", "SELECT set_config('tenantguard.binding', 'globex', false)"):
            try:
                conn.execute(sql)
                raise Failed("%s succeeded" % sql)
            except psycopg.Error as e:
                codes.append(e.sqlstate)
            check(one(conn, "SELECT 1") == (1,), "session unusable after %s" % sql)
    check(codes == ["42601", "42501"], "SQLSTATEs %r" % codes)
    return "42601 and 42501, the session still usable after each"


def isolation_rows():
    with connect() as conn:
        got = one(conn, "SELECT count(*) FILTER (WHERE tenant_id <> 'acme'), "
                        "count(*) FILTER (WHERE item = 'hammock') FROM public.orders")
    check(got == (0, 0), "acme sees rows of others / hammocks: %r" % (got,))
    return "no row of globex visible"


def isolation_update_delete():
    with connect() as conn:
        updated = conn.execute("UPDATE public.orders SET amount = 0 WHERE tenant_id = %s", ("globex",)).rowcount
        deleted = conn.execute("DELETE FROM public.orders WHERE item = %s", ("doomsday device",)).rowcount
        check(updated == 0 and deleted == 0, "UPDATE %d, DELETE %d" % (updated, deleted))
        try:
            conn.execute("UPDATE public.orders SET tenant_id = 'globex' WHERE item = 'anvil'")
            raise Failed("moving a row to globex succeeded")
        except psycopg.Error as e:
            check(e.sqlstate == "42501", "moving a row to globex: %s %s" % (e.sqlstate, e))
    return "UPDATE 0, DELETE 0, moving a row to globex refused (42501)"


@contextlib.contextmanager
def pgoptions(value):
    """Sets PGOPTIONS, as a user would in the shell, for libpq to send."""
    os.environ["PGOPTIONS"] = value
    try:
        yield
    finally:
        del os.environ["PGOPTIONS"]


def startup_options():
    show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
    with pgoptions("-c statement_timeout=750 -c lock_timeout=1500"), connect() as conn:
        check(one(conn, show) == ("750ms", "1500ms"), "settings %r" % (one(conn, show),))
        start = time.monotonic()
        try:
            conn.execute("SELECT pg_sleep(5)")
            raise Failed("pg_sleep(5) was not canceled")
        except psycopg.errors.QueryCanceled:
            took = time.monotonic() - start
        check(one(conn, show) == ("750ms", "1500ms"), "settings after the timeout %r" % (one(conn, show),))
    return "PGOPTIONS statement_timeout 750ms, lock_timeout 1500ms; pg_sleep(5) canceled after %.2fs" % took


def startup_cross_tenant():
    refused = []
    for opts in ("-c tenantguard.binding=globex", "-c row_security=off", "-c session_authorization=postgres"):
        try:
            with pgoptions(opts), connect():
                raise Failed("startup with PGOPTIONS %r was accepted" % opts)
        except psycopg.OperationalError as e:
            check("FATAL" in str(e), "PGOPTIONS %r: %s" % (opts, e))
            refused.append(opts)
    return "FATAL for PGOPTIONS " + ", ".join(refused)


def copy_from():
    with connect() as conn:
        try:
            cur = conn.cursor()
            with cur.copy("COPY public.orders (item, amount) FROM STDIN") as copy:
                for i in (1, 2, 3):
                    copy.write_row(("%s-copy-%d" % (TAG, i), i))
            copied = cur.rowcount
            found = one(conn, "SELECT count(*), array_agg(DISTINCT tenant_id) FROM public.orders WHERE item LIKE %s",
                        (TAG + "-copy-%",))
        finally:
            conn.execute("DELETE FROM public.orders WHERE item LIKE %s", (TAG + "-copy-%",))
    check(copied == 3 and found == (3, ["acme"]), "COPY reported %d rows; found %r" % (copied, found))
    return "copy of 3 rows, tenant_id acme filled in"


def copy_cross_tenant():
    with connect() as conn:
        try:
            with conn.cursor().copy("COPY public.orders (tenant_id, item, amount) FROM STDIN") as copy:
                copy.write_row(("acme", TAG + "-cross-acme", 1))
                copy.write_row(("globex", TAG + "-cross-globex", 2))
            raise Failed("COPY with a row for globex was accepted")
        except psycopg.Error as e:
            refusal = "%s %s" % (e.sqlstate, str(e).strip())
        seen = one(conn, "SELECT count(*) FROM public.orders WHERE item LIKE %s", (TAG + "-cross-%",))[0]
    with connect(GLOBEX) as conn:
        globex_seen = one(conn, "SELECT count(*) FROM public.orders WHERE item LIKE %s", (TAG + "-cross-%",))[0]
    check(seen == 0 and globex_seen == 0, "rows of the refused COPY: acme sees %d, globex %d" % (seen, globex_seen))
    return "refused: " + refusal


def collect(conn):
    """Registers a handler and returns the list it fills with (channel, payload)."""
    got = []
    conn.add_notify_handler(lambda n: got.append((n.channel, n.payload)))
    return got


def wait_for(conn, got, until, timeout=5.0):
    # psycopg 3.1's notifies() cannot time out: wait for the socket, then
    # run a statement, during which arrived notifications reach handlers.
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        check(left > 0, "notifications so far %r" % got)
        select.select([conn.fileno()], [], [], left)
        conn.execute("SELECT 1")
    return got


def listen_notify():
    with connect() as conn:
        got = collect(conn)
        conn.execute("LISTEN compat_psycopg3")
        conn.execute("NOTIFY compat_psycopg3, 'a1'")
        conn.execute("SELECT pg_notify('compat_psycopg3', 'a2')")
        wait_for(conn, got, lambda g: len(g) >= 2)
    check(got == [("compat_psycopg3", "a1"), ("compat_psycopg3", "a2")], "notifications %r" % got)
    return "NOTIFY and pg_notify received on the channel as named"


def listen_cross_tenant():
    with connect() as conn:
        got = collect(conn)
        try:
            conn.execute("LISTEN compat_psycopg3_cross")
        except psycopg.Error as e:
            check(e.sqlstate == "42501", "LISTEN: %s %s" % (e.sqlstate, e))
            return "LISTEN refused: " + str(e).strip()
        with connect(GLOBEX) as g:
            g.execute("NOTIFY compat_psycopg3_cross, 'from globex'")
        # In commit order: globex's, had it leaked, comes before acme's own.
        conn.execute("NOTIFY compat_psycopg3_cross, 'from acme'")
        wait_for(conn, got, lambda g: len(g) >= 1)
    check(got[0][1] == "from acme", "acme got %r first" % (got[0],))
    return "acme got only its own notification"


def globex_unaffected():
    with connect(GLOBEX) as conn:
        got = one(conn, """SELECT (SELECT amount::text FROM public.orders WHERE item = 'hammock'),
                                  (SELECT amount::text FROM public.orders WHERE item = 'doomsday device'),
                                  (SELECT count(*) FROM public.orders WHERE tenant_id <> 'globex' OR item LIKE %s)""",
                  (TAG + "%",))
    check(got == ("40.00", "999.99", 0), "globex sees %r" % (got,))
    return "globex's rows intact; none of acme's visible"


run("psycopg", "%s (libpq %s, %s)" % (psycopg.__version__, psycopg.pq.version(), psycopg.pq.__impl__), [
    connect_read, parameterized, transaction, error_recovery, isolation_rows, isolation_update_delete,
    startup_options, startup_cross_tenant, copy_from, copy_cross_tenant, listen_notify, listen_cross_tenant,
    globex_unaffected,
])
