// What the Node.js client scripts share: the one-JSON-line-per-case report.
// A script prints a plan line naming its client, version and cases, then
// {"case": ..., "ok": true/false, "detail": ...} per case. A case is an
// async function that returns a detail string or throws.
'use strict';

class Failed extends Error {}

function check(cond, message) {
  if (!cond) throw new Failed(message);
}

async function run(client, version, cases) {
  const line = (o) => process.stdout.write(JSON.stringify(o) + '\n');
  line({ client, version, cases: Object.keys(cases) });
  for (const [name, fn] of Object.entries(cases)) {
    try {
      line({ case: name, ok: true, detail: await fn() });
    } catch (e) {
      line({ case: name, ok: false, detail: `${e.name}: ${e.message}` });
    }
  }
}

// Resolves when cond() holds, polling every 10ms; rejects after ms.
async function until(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Failed(`${what} within ${ms}ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

module.exports = { Failed, check, run, until };
