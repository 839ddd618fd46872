// ioredis (npm) through the tenantguard sidecar.
'use strict';

const Redis = require('ioredis');
const { Failed, check, run, until } = require('./compat');

const P = 'compat:ioredis:';

// ioredis reports a failed ready check (its INFO at connect) with
// console.warn; keep what it says for ready_check.
const warnings = [];
console.warn = (...args) => warnings.push(args.join(' '));

// Connects and resolves once ioredis says it is ready.
async function connect(urlKey) {
  const r = new Redis(process.env[urlKey], { maxRetriesPerRequest: 1, commandTimeout: 10000, connectTimeout: 10000 });
  await new Promise((resolve, reject) => {
    r.once('ready', resolve);
    r.once('error', reject);
  });
  return r;
}

// Runs fn with acme's client (and globex's when fn takes two), and quits them.
async function withClients(fn) {
  const clients = [await connect('TG_REDIS_URL_ACME')];
  if (fn.length > 1) clients.push(await connect('TG_REDIS_URL_GLOBEX'));
  try {
    return await fn(...clients);
  } finally {
    clients.forEach((c) => c.disconnect());
  }
}

async function rejected(promise) {
  try {
    const v = await promise;
    return new Failed(`returned ${JSON.stringify(v)}`);
  } catch (e) {
    return e;
  }
}

// Subscribes sub to ch, has globex publish foreign first (unless null),
// then acme; returns the first message sub gets.
async function firstMessage(acme, globex, ch, foreign) {
  const sub = acme.duplicate();
  try {
    const got = [];
    sub.on('message', (channel, message) => got.push([channel, message]));
    await sub.subscribe(ch);
    if (foreign !== null) {
      const reached = await globex.publish(ch, foreign);
      check(reached === 0, `globex's PUBLISH reached ${reached} subscribers`);
    }
    check((await acme.publish(ch, 'from acme')) === 1, 'PUBLISH reached no subscriber');
    await until(() => got.length > 0, 5000, 'a message');
    return got[0];
  } finally {
    sub.disconnect();
  }
}

run('ioredis', require('ioredis/package.json').version, {
  async ready_check() {
    const before = warnings.length;
    const r = await connect('TG_REDIS_URL_ACME');
    r.disconnect();
    const said = warnings.slice(before);
    check(said.length === 0, `ioredis warned at connect: ${said.join(' | ')}`);
    return 'ready without a warning (its ready check sends INFO)';
  },
  async get_set() {
    return withClients(async (r) => {
      await r.set(`${P}k`, 'v1', 'EX', 60);
      const got = await r.mget(`${P}k`, 'greeting');
      check(got.join() === 'v1,hello from acme', `MGET ${got}`);
      return 'SET, MGET of its own key and the seeded greeting';
    });
  },
  async pipeline() {
    return withClients(async (r) => {
      const got = await r.pipeline().set(`${P}p`, 1, 'EX', 60).incrby(`${P}p`, 41).get(`${P}p`).exec();
      check(JSON.stringify(got) === '[[null,"OK"],[null,42],[null,"42"]]', `pipeline replies ${JSON.stringify(got)}`);
      return '3 commands in one pipeline';
    });
  },
  async multi_exec() {
    return withClients(async (r) => {
      const k = `${P}tx`;
      await r.set(k, 10, 'EX', 60);
      await r.watch(k);
      const n = Number(await r.get(k));
      const got = await r.multi().set(k, n * 2, 'EX', 60).get(k).exec();
      check(JSON.stringify(got) === '[[null,"OK"],[null,"20"]]', `EXEC replies ${JSON.stringify(got)}`);
      return 'WATCH, MULTI, EXEC';
    });
  },
  async pubsub() {
    return withClients(async (r) => {
      const [channel, message] = await firstMessage(r, null, `${P}ch`, null);
      check(channel === `${P}ch` && message === 'from acme', `got ${message} on ${channel}`);
      return 'SUBSCRIBE, PUBLISH, message on the channel as named';
    });
  },
  async error_recovery() {
    return withClients(async (r) => {
      await r.set(`${P}e`, 'text', 'EX', 60);
      const wrongType = await rejected(r.incr(`${P}e`));
      const refused = await rejected(r.config('GET', 'maxmemory'));
      check(wrongType.name === 'ReplyError' && refused.message.startsWith('NOPERM'), `INCR: ${wrongType}; CONFIG GET: ${refused}`);
      check((await r.get(`${P}e`)) === 'text', 'GET after the errors');
      return `${wrongType.message} and ${refused.message}, the connection still usable`;
    });
  },
  async isolation_keys() {
    return withClients(async (r, g) => {
      await g.set(`${P}secret`, 'globex-secret', 'EX', 60);
      check((await r.get(`${P}secret`)) === null, "acme reads globex's key");
      check((await r.exists(`${P}secret`)) === 0, "EXISTS of globex's key");
      const keys = [];
      for await (const batch of r.scanStream({ match: '*', count: 100 })) keys.push(...batch);
      const leaked = keys.filter((k) => k === `${P}secret` || k.startsWith('t:'));
      check(leaked.length === 0, `SCAN shows acme ${leaked}`);
      check(keys.includes('greeting'), `SCAN misses acme's greeting: ${keys}`);
      return `GET null, EXISTS 0, SCAN lists ${keys.length} keys, none of globex`;
    });
  },
  async isolation_pubsub() {
    return withClients(async (r, g) => {
      const [, message] = await firstMessage(r, g, `${P}shared-ch`, 'from globex');
      check(message === 'from acme', `acme got ${message} first`);
      return "only acme's own message arrived; globex's PUBLISH reached 0 subscribers";
    });
  },
  async define_command() {
    return withClients(async (r) => {
      // A custom command: EVALSHA, falling back to EVAL on NOSCRIPT.
      r.defineCommand('compatSetIncr', {
        numberOfKeys: 1,
        lua: "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[1], 1)",
      });
      const got = [await r.compatSetIncr(`${P}script`, 7), await r.compatSetIncr(`${P}script`, 8)];
      check(got.join() === '8,9', `script returned ${got}`);
      check((await r.get(`${P}script`)) === '9', "GET of the script's key");
      return "defineCommand on acme's key, twice";
    });
  },
  async script_cross_tenant() {
    return withClients(async (r, g) => {
      const refusals = [];
      for (const body of ["return redis.call('GET', 't:globex:greeting')",
        `return redis.call('SET', 't:globex:${P}pwned', 'acme was here')`]) {
        const e = await rejected(r.eval(body, 0));
        check(e.name === 'ReplyError', `${body}: ${e.message}`);
        refusals.push(e.message);
      }
      check((await g.exists(`${P}pwned`)) === 0, "globex has the key acme's script tried to set");
      return `refused: ${refusals.join('; ')}`;
    });
  },
  async globex_unaffected() {
    const g = await connect('TG_REDIS_URL_GLOBEX');
    try {
      const got = await g.mget('greeting', `${P}secret`, `${P}pwned`);
      check(JSON.stringify(got) === '["hello from globex","globex-secret",null]', `globex reads ${JSON.stringify(got)}`);
      return "globex's keys intact";
    } finally {
      g.disconnect();
    }
  },
});
