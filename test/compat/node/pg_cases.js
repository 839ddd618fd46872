// node-postgres (npm pg, with pg-copy-streams for COPY) through the
// tenantguard sidecar.
'use strict';

const { Readable } = require('stream');
const { pipeline } = require('stream/promises');
const pg = require('pg');
const { from: copyFrom } = require('pg-copy-streams');
const { Failed, check, run, until } = require('./compat');

const ACME = process.env.TG_PG_URL_ACME;
const GLOBEX = process.env.TG_PG_URL_GLOBEX;
const TAG = 'compat-node-postgres';

// Runs fn with a connected client, and ends it.
async function withClient(url, fn, config = {}) {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10000, query_timeout: 30000, ...config });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const first = async (c, text, values) => (await c.query({ text, values, rowMode: 'array' })).rows[0];

// Runs a statement that must fail; returns the error.
async function failing(c, text) {
  try {
    await c.query(text);
  } catch (e) {
    return e;
  }
  throw new Failed(`${text} succeeded`);
}

async function copyIn(c, sql, rows) {
  const stream = c.query(copyFrom(sql));
  await pipeline(Readable.from([rows]), stream);
  return stream.rowCount;
}

function collect(c) {
  const got = [];
  c.on('notification', (n) => got.push(`${n.channel}:${n.payload}`));
  return got;
}

run('node-postgres', `pg ${require('pg/package.json').version}, pg-copy-streams ${require('pg-copy-streams/package.json').version}`, {
  async connect_read() {
    return withClient(ACME, async (c) => {
      const { rows } = await c.query('SELECT tenant_id, item FROM public.orders ORDER BY id');
      const items = rows.map((r) => r.item);
      check(items.includes('anvil') && items.includes('rocket skates'), `acme's rows: ${items}`);
      check(rows.every((r) => r.tenant_id === 'acme'), `tenants seen: ${rows.map((r) => r.tenant_id)}`);
      return `${rows.length} rows, all acme's`;
    });
  },
  async parameterized() {
    return withClient(ACME, async (c) => {
      // A named query: parsed once on the connection, then bound and executed.
      for (let i = 0; i < 3; i++) {
        const r = await c.query({ name: 'by-item', text: 'SELECT amount::text AS amount FROM public.orders WHERE item = $1', values: ['anvil'] });
        check(r.rows[0].amount === '120.00', `anvil costs ${r.rows[0].amount}`);
      }
      return 'named prepared statement executed 3 times';
    });
  },
  async transaction() {
    return withClient(ACME, async (c) => {
      const insert = "INSERT INTO public.orders (tenant_id, item, amount) VALUES ('acme', $1, 1)";
      await c.query('BEGIN');
      await c.query(insert, [`${TAG}-tx-rolled-back`]);
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query(insert, [`${TAG}-tx-committed`]);
      await c.query('COMMIT');
      const found = await first(c, 'SELECT count(*) FILTER (WHERE item = $1)::int, count(*) FILTER (WHERE item = $2)::int FROM public.orders',
        [`${TAG}-tx-rolled-back`, `${TAG}-tx-committed`]);
      await c.query('DELETE FROM public.orders WHERE item = $1', [`${TAG}-tx-committed`]);
      check(found[0] === 0 && found[1] === 1, `rolled back / committed rows found: ${found}`);
      return 'rollback discarded, commit kept';
    });
  },
  async error_recovery() {
    return withClient(ACME, async (c) => {
      const codes = [];
      for (const sql of ['SELEC 1', "SELECT set_config('tenantguard.binding', 'globex', false)"]) {
        codes.push((await failing(c, sql)).code);
        check((await first(c, 'SELECT 1'))[0] === 1, `session unusable after ${sql}`);
      }
      check(codes.join() === '42601,42501', `SQLSTATEs ${codes}`);
      return '42601 and 42501, the session still usable after each';
    });
  },
  async isolation_rows() {
    return withClient(ACME, async (c) => {
      const got = await first(c, "SELECT count(*) FILTER (WHERE tenant_id <> 'acme')::int, count(*) FILTER (WHERE item = 'hammock')::int FROM public.orders");
      check(got[0] === 0 && got[1] === 0, `acme sees rows of others / hammocks: ${got}`);
      return 'no row of globex visible';
    });
  },
  async isolation_update_delete() {
    return withClient(ACME, async (c) => {
      const u = await c.query('UPDATE public.orders SET amount = 0 WHERE tenant_id = $1', ['globex']);
      const d = await c.query('DELETE FROM public.orders WHERE item = $1', ['doomsday device']);
      check(u.rowCount === 0 && d.rowCount === 0, `UPDATE ${u.rowCount}, DELETE ${d.rowCount}`);
      const e = await failing(c, "UPDATE public.orders SET tenant_id = 'globex' WHERE item = 'anvil'");
      check(e.code === '42501', `moving a row to globex: ${e.code} ${e.message}`);
      return 'UPDATE 0, DELETE 0, moving a row to globex refused (42501)';
    });
  },
  async startup_options() {
    // node-postgres sends statement_timeout as a startup parameter of its
    // own, and options as libpq would.
    return withClient(ACME, async (c) => {
      const show = "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')";
      check((await first(c, show)).join() === '750ms,1500ms', `settings ${await first(c, show)}`);
      const start = Date.now();
      const e = await failing(c, 'SELECT pg_sleep(5)');
      check(e.code === '57014', `pg_sleep(5): ${e.code} ${e.message}`);
      const took = Date.now() - start;
      check((await first(c, show)).join() === '750ms,1500ms', `settings after the timeout ${await first(c, show)}`);
      return `statement_timeout 750ms, lock_timeout 1500ms; pg_sleep(5) canceled after ${took}ms`;
    }, { statement_timeout: 750, options: '-c lock_timeout=1500' });
  },
  async startup_cross_tenant() {
    const refused = [];
    for (const options of ['-c tenantguard.binding=globex', '-c row_security=off', '-c session_authorization=postgres']) {
      try {
        await withClient(ACME, async () => {}, { options });
      } catch (e) {
        check(e.code === '42501', `options ${options}: ${e.code} ${e.message}`);
        refused.push(options);
        continue;
      }
      throw new Failed(`startup with options ${options} was accepted`);
    }
    return `refused (42501): options ${refused.join(', ')}`;
  },
  async copy_from() {
    return withClient(ACME, async (c) => {
      try {
        const copied = await copyIn(c, 'COPY public.orders (item, amount) FROM STDIN',
          [1, 2, 3].map((i) => `${TAG}-copy-${i}\t${i}\n`).join(''));
        const found = await first(c, "SELECT count(*)::int, string_agg(DISTINCT tenant_id, ',') FROM public.orders WHERE item LIKE $1", [`${TAG}-copy-%`]);
        check(copied === 3 && found.join() === '3,acme', `COPY reported ${copied} rows; found ${found}`);
        return 'pg-copy-streams COPY of 3 rows, tenant_id acme filled in';
      } finally {
        await c.query('DELETE FROM public.orders WHERE item LIKE $1', [`${TAG}-copy-%`]);
      }
    });
  },
  async copy_cross_tenant() {
    const refusal = await withClient(ACME, async (c) => {
      let err;
      try {
        await copyIn(c, 'COPY public.orders (tenant_id, item, amount) FROM STDIN',
          `acme\t${TAG}-cross-acme\t1\nglobex\t${TAG}-cross-globex\t2\n`);
      } catch (e) {
        err = e;
      }
      check(err, 'COPY with a row for globex was accepted');
      const seen = await first(c, 'SELECT count(*)::int FROM public.orders WHERE item LIKE $1', [`${TAG}-cross-%`]);
      check(seen[0] === 0, `acme sees ${seen} rows of the refused COPY`);
      return `${err.code} ${err.message}`;
    });
    const seen = await withClient(GLOBEX, (g) => first(g, 'SELECT count(*)::int FROM public.orders WHERE item LIKE $1', [`${TAG}-cross-%`]));
    check(seen[0] === 0, `globex sees ${seen} rows of acme's COPY`);
    return `refused: ${refusal}`;
  },
  async listen_notify() {
    return withClient(ACME, async (c) => {
      const got = collect(c);
      await c.query('LISTEN compat_node_postgres');
      await c.query("NOTIFY compat_node_postgres, 'a1'");
      await c.query("SELECT pg_notify('compat_node_postgres', 'a2')");
      await until(() => got.length >= 2, 5000, `2 notifications (got ${got})`);
      check(got.join() === 'compat_node_postgres:a1,compat_node_postgres:a2', `notifications ${got}`);
      return 'NOTIFY and pg_notify received on the channel as named';
    });
  },
  async listen_cross_tenant() {
    return withClient(ACME, async (c) => {
      const got = collect(c);
      try {
        await c.query('LISTEN compat_node_postgres_cross');
      } catch (e) {
        check(e.code === '42501', `LISTEN: ${e.code} ${e.message}`);
        return `LISTEN refused: ${e.message}`;
      }
      await withClient(GLOBEX, (g) => g.query("NOTIFY compat_node_postgres_cross, 'from globex'").catch(() => {}));
      // In commit order: globex's, had it leaked, comes before acme's own.
      await c.query("NOTIFY compat_node_postgres_cross, 'from acme'");
      await until(() => got.length >= 1, 5000, 'acme\'s own notification');
      check(got[0] === 'compat_node_postgres_cross:from acme', `acme got ${got[0]} first`);
      return 'acme got only its own notification';
    });
  },
  async globex_unaffected() {
    return withClient(GLOBEX, async (g) => {
      const got = await first(g, `SELECT (SELECT amount::text FROM public.orders WHERE item = 'hammock'),
        (SELECT amount::text FROM public.orders WHERE item = 'doomsday device'),
        (SELECT count(*)::int FROM public.orders WHERE tenant_id <> 'globex' OR item LIKE $1)`, [`${TAG}%`]);
      check(got.join() === '40.00,999.99,0', `globex sees ${got}`);
      return "globex's rows intact; none of acme's visible";
    });
  },
});
