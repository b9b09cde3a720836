// A stall is a bypass: Dovecot allows a login when cidlock does not answer within 2 s. With a
// registry of a million devices, no registry change of any size (another process's import, the
// compaction after it, a CLI removal, the daemon's own learn registrations queued behind an
// import's lock) and no Postfix client flooding its socket during a tarpit may hold up other
// requests by more than 100 ms. A probe asks both ports every ~10 ms and records every latency.
// Each phase also reports the daemon's own longest event-loop stall, how much of it was spent
// waiting for a CPU, and its longest GC pause: on a shared 2-core machine a slow probe can be
// another process's doing, and the numbers say whose. The registry is generated once and cached
// (test/helpers/big-registry.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { BIG_DEVICES_PER_USER, BIG_USERS, bigCid, bigRegistry, bigUser } from '../helpers/big-registry.js';
import { CIDLOCK } from '../helpers/cli.js';
import { startServe, httpGet, type ServeProcess } from '../helpers/daemon.js';
import { TEST_DOVECOT_KEY } from '../helpers/http.js';
import { tempDir } from '../helpers/tmp.js';

const BOUND_MS = 100;
const PROBE_EVERY_MS = 10;
const IMPORT_DEVICES = 400_000;
const TARPIT_SECONDS = 3;
const registryModule = fileURLToPath(new URL('../../src/core/registry/registry.js', import.meta.url));
const storeModule = fileURLToPath(new URL('../../src/core/registry/file-store.js', import.meta.url));
const loopMonitor = fileURLToPath(new URL('../helpers/loop-monitor.js', import.meta.url));

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until(pred: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** Runs the real CLI (or a node script) as another process, without blocking this one's probe. */
function run(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; exitedAt: number }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CIDLOCK_CONFIG: '' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (status) => resolve({ status, stdout, stderr, exitedAt: Date.now() }));
  });
}

const dovecotBody = (user: string, cid: { type: string; token: string }, session: string, remote: string) =>
  JSON.stringify({ login: user, protocol: 'imap', remote, session_id: session, device_id: `"clientid" "${cid.type} ${cid.token}"`, tls: true, attrs: { secured: 'TLS' } });

function dovecot(port: number, agent: Agent | false, command: 'allow' | 'report', body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port, path: `/?command=${command}`, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-api-key': TEST_DOVECOT_KEY },
    }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve(data));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const policyBlock = (user: string, address: string) =>
  `request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=${address}\nsasl_method=PLAIN\nsasl_username=${user}\nencryption_protocol=TLSv1.3\nrecipient=x@example.net\n\n`;

/** One persistent Postfix-style connection: requests strictly one after another. */
function policyConnection(port: number): Promise<{ ask(block: string): Promise<string>; sock: Socket }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1', () => resolve({ ask, sock }));
    sock.setNoDelay(true);
    let buf = '';
    let waiter: { resolve: (s: string) => void; reject: (e: Error) => void } | null = null;
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\n\n');
      if (i >= 0 && waiter !== null) {
        const w = waiter;
        waiter = null;
        const reply = buf.slice(0, i);
        buf = buf.slice(i + 2);
        w.resolve(reply);
      }
    });
    sock.on('error', (e) => { waiter?.reject(e); reject(e); });
    sock.on('close', () => waiter?.reject(new Error('policy connection closed')));
    const ask = (block: string) => new Promise<string>((res, rej) => {
      waiter = { resolve: res, reject: rej };
      sock.write(block);
    });
  });
}

/** One probe round: when it was sent, and each port's latency. */
interface Sample { at: number; dovecot: number; postfix: number }

/** Asks both ports every ~10 ms, one request each at a time, and keeps every latency. */
async function startProbe(dovecotPort: number, postfixPort: number) {
  const samples: Sample[] = [];
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const policy = await policyConnection(postfixPort);
  let stopped = false;
  let failure: Error | null = null;
  const cid = bigCid(1, 0);
  const loop = (async () => {
    for (let i = 0; !stopped; i++) {
      const t0 = performance.now();
      const started = Date.now();
      try {
        const timed = async (f: () => Promise<string>, expect: string) => {
          const t = performance.now();
          const r = await f();
          if (r !== expect) throw new Error(`probe got ${JSON.stringify(r)}, expected ${JSON.stringify(expect)}`);
          return performance.now() - t;
        };
        const [dv, pf] = await Promise.all([
          timed(() => dovecot(dovecotPort, agent, 'allow', dovecotBody(bigUser(1), cid, `probe-${i}`, '203.0.113.10')), '{"status":0}'),
          timed(() => policy.ask(policyBlock(bigUser(2), '203.0.113.11')), 'action=DUNNO'),
        ]);
        samples.push({ at: started, dovecot: dv, postfix: pf });
      } catch (err) {
        failure = err as Error;
        return;
      }
      const wait = PROBE_EVERY_MS - (performance.now() - t0);
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    samples,
    failure: () => failure,
    async stop() {
      stopped = true;
      await loop;
      policy.sock.destroy();
      agent.destroy();
    },
  };
}

type Probe = Awaited<ReturnType<typeof startProbe>>;

function stats(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  return { max: +(s[s.length - 1] ?? NaN).toFixed(1), p99: +(s[Math.min(s.length - 1, Math.floor(s.length * 0.99))] ?? NaN).toFixed(1) };
}

let dir = '';
let cfg = '';
let state = '';
let daemon: ServeProcess;
let probe: Probe;
let ports = { dovecot: 0, postfix: 0, admin: '' };
let importA = '';
let importD = '';
const results: Record<string, { probes: number; dovecot: { max: number; p99: number }; postfix: { max: number; p99: number }; loop: number; seconds: number }> = {};

/**
 * What the daemon logged in the monitor's report window that held its longest stall (and the
 * window before): events by count, so a failure says what the daemon was doing then.
 */
function around(ts: number): string {
  if (!Number.isFinite(ts)) return 'nothing';
  const counts = new Map<string, number>();
  for (const l of daemon.lines) {
    const at = Date.parse(String(l.ts));
    if (l.event === 'test_loop_delay' || at < ts - 400 || at > ts) continue;
    const name = `${String(l.event)}${l.rebuilt ? ' (rebuilt)' : ''}`;
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts.size === 0 ? 'nothing' : [...counts].map(([e, n]) => `${e} x${n}`).join(', ');
}

/** Runs one phase under the probe and asserts that no probe waited longer than the bound. */
async function phase(name: string, work: () => Promise<void>): Promise<void> {
  const t = Date.now();
  // The probe runs in this process: a stall here would show as a slow daemon.
  let selfStall = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    selfStall = Math.max(selfStall, now - last - 5);
    last = now;
  }, 5);
  try {
    await work();
  } finally {
    clearInterval(ticker);
  }
  await sleep(500); // whatever trails the work (a catch-up, a swap) is part of the phase
  assert.is(probe.failure(), null, `the probe failed: ${probe.failure()?.message}`);
  // A round belongs to the phase in which it was sent.
  const got = probe.samples.filter((x) => x.at >= t);
  // The daemon's own longest event-loop stall in the phase, as its monitor reported it.
  const worst = daemon.lines.filter((l) => l.event === 'test_loop_delay' && Date.parse(String(l.ts)) >= t).reduce((a, l) => (Number(l.max_ms) > Number(a.max_ms) ? l : a), { max_ms: 0, ran_ms: 0, waited_ms: 0 } as Record<string, unknown>);
  const loop = Number(worst.max_ms);
  const gc = daemon.lines.filter((l) => l.event === 'test_loop_delay' && Date.parse(String(l.ts)) >= t).reduce((a, l) => (Number(l.gc_ms) > Number(a.gc_ms) ? l : a), { gc_ms: 0, gc_kind: '' } as Record<string, unknown>);
  const loopText = `${loop} ms at most (of which it ran ${worst.ran_ms} ms and waited ${worst.waited_ms} ms for a CPU; longest GC pause ${Number(gc.gc_ms).toFixed(1)} ms${gc.gc_kind ? `, ${gc.gc_kind}` : ''}); this process stalled ${selfStall.toFixed(1)} ms at most`;
  const r = { probes: got.length, dovecot: stats(got.map((s) => s.dovecot)), postfix: stats(got.map((s) => s.postfix)), loop, seconds: +((Date.now() - t) / 1000).toFixed(1) };
  results[name] = r;
  process.stdout.write(`\n  ${name}: ${r.probes} probes in ${r.seconds} s; dovecot max ${r.dovecot.max} ms p99 ${r.dovecot.p99} ms; postfix max ${r.postfix.max} ms p99 ${r.postfix.p99} ms; daemon event loop stalled ${loopText}\n`);
  assert.ok(got.length >= 20, `only ${got.length} probes answered during ${name}`);
  const why = `the daemon's event loop stalled ${loopText}; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')} on ${cpus().length} cores; around its longest stall it logged ${around(Date.parse(String(worst.ts)))}`;
  assert.ok(r.dovecot.max < BOUND_MS, `${name}: a Dovecot request waited ${r.dovecot.max} ms (bound ${BOUND_MS} ms; ${why})`);
  assert.ok(r.postfix.max < BOUND_MS, `${name}: a Postfix request waited ${r.postfix.max} ms (bound ${BOUND_MS} ms; ${why})`);
}

/**
 * A phase whose work can run again as it ran (no state it depends on changed): one over the bound
 * is measured once more, and fails only if that run is over it too. A shared 2-core CI machine
 * can take the CPU from the daemon once (seen once in CI: a phase at 269 ms, never reproduced in
 * dozens of runs here; and (b) once at 124 ms while the test process itself stalled 94 ms, where
 * it measures 32 to 73 ms otherwise); a real stall shows in both runs. Both results are printed.
 */
async function repeatablePhase(name: string, work: () => Promise<void>): Promise<void> {
  try {
    await phase(name, work);
  } catch (err) {
    process.stdout.write(`\n  ${name}: over the bound once (${(err as Error).message.split(';')[0]}); measuring it again\n`);
    await phase(`${name}, again`, work);
  }
}

const reloadsAfter = (t: number, pred: (l: Record<string, unknown>) => boolean = () => true) =>
  daemon.lines.filter((l) => l.event === 'registry_reloaded' && Date.parse(String(l.ts)) >= t && pred(l)).length;

/** The verdict the running daemon gives a device right now. */
const verdict = async (user: string, cid: { type: string; token: string }) =>
  dovecot(ports.dovecot, false, 'allow', dovecotBody(user, cid, `check-${Math.random()}`, '203.0.113.12'));

const deviceId = (cid: { type: string; token: string }) =>
  createHmac('sha256', Buffer.from(readFileSync(join(state, 'secret'), 'utf8').trim(), 'hex')).update(`${cid.type} ${cid.token}`).digest('hex').slice(0, 12);

/** Written before the probe starts: generating it would stall this process, and the probe with it. */
function importFile(name: string, user: (i: number) => string, token: (i: number) => string): string {
  const file = join(dir, name);
  const lines: string[] = [];
  for (let i = 0; i < IMPORT_DEVICES; i++) lines.push(`${user(i)} UUID ${token(i)} imported`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

test.before(async () => {
  dir = tempDir('cidlock-stall-');
  chmodSync(dir, 0o755);
  state = join(dir, 'state');
  const built = bigRegistry(state);
  process.stdout.write(`\n  registry of ${BIG_USERS * BIG_DEVICES_PER_USER} devices ${built.generated ? 'generated' : 'copied from the cache'} in ${built.ms} ms\n`);
  importA = importFile('import-a.txt', (i) => `i${Math.floor(i / 5)}@big.example`, (i) => `imp-a-${i}`);
  importD = importFile('import-d.txt', (i) => `j${Math.floor(i / 5)}@big.example`, (i) => `imp-d-${i}`);
  cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, [
    `state_dir: ${state}`,
    'listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: 127.0.0.1:0, socketmap: off }',
    `dovecot: { api_key: ${TEST_DOVECOT_KEY} }`,
    'log: { decisions: none }',
    'policy: { mode: enforce }',
    'domains:',
    '  big.example: { protocols: { smtp: allow } }',
    '  learn.example: { mode: learn, learn: { max_devices: 5 } }',
    `limits: [{ key: address, failures: 1, window: 10m, then: delay ${TARPIT_SECONDS}s }]`,
    '',
  ].join('\n'));
  const t = Date.now();
  // The daemon reports its own event-loop stalls (test/helpers/loop-monitor.ts) next to its log.
  const options = process.env.NODE_OPTIONS;
  process.env.NODE_OPTIONS = `${options ?? ''} --import=${loopMonitor}`.trim();
  try {
    daemon = startServe(cfg);
  } finally {
    if (options === undefined) delete process.env.NODE_OPTIONS;
    else process.env.NODE_OPTIONS = options;
  }
  const started = await daemon.waitFor((l) => l.event === 'started', 'the daemon to load the registry', 60_000);
  assert.is(started.devices, BIG_USERS * BIG_DEVICES_PER_USER);
  process.stdout.write(`  daemon started with ${started.devices} devices in ${Date.now() - t} ms\n`);
  ports = {
    dovecot: Number((await daemon.address('dovecot')).split(':')[1]),
    postfix: Number((await daemon.address('postfix')).split(':')[1]),
    admin: await daemon.address('admin'),
  };
  probe = await startProbe(ports.dovecot, ports.postfix);
  await sleep(1000);
});

test.after(async () => {
  await probe?.stop();
  await daemon?.stop();
  if (probe !== undefined && probe.samples.length > 0) {
    const all = probe.samples;
    results['whole run, between phases too'] = { probes: all.length, dovecot: stats(all.map((x) => x.dovecot)), postfix: stats(all.map((x) => x.postfix)), loop: Math.max(...Object.values(results).map((r) => r.loop)), seconds: Math.round((all[all.length - 1]!.at - all[0]!.at) / 100) / 10 };
  }
  process.stdout.write(`\n  stall maxima and p99 per phase (ms):\n${Object.entries(results).map(([k, r]) => `    ${k.padEnd(34)} dovecot ${String(r.dovecot.max).padStart(6)} / ${String(r.dovecot.p99).padStart(5)}   postfix ${String(r.postfix.max).padStart(6)} / ${String(r.postfix.p99).padStart(5)}   daemon loop ${String(r.loop).padStart(5)}   (${r.probes} probes, ${r.seconds} s)`).join('\n')}\n`);
});

test('idle: the probe itself stays well under the bound', async () => {
  await phase('idle', () => sleep(1500));
});

test('(a) another process imports 400,000 devices on top of 1,000,000', async () => {
  const file = importA;
  assert.is(await verdict('i0@big.example', { type: 'UUID', token: 'imp-a-0' }), '{"status":-1,"msg":""}');
  await phase('(a) import 400k', async () => {
    const t = Date.now();
    const r = await run([CIDLOCK, 'devices', 'import', file, '--config', cfg]);
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, /400000 added/);
    await until(() => reloadsAfter(t, (l) => l.devices === 1_400_000) > 0, 'the daemon to catch up with the import');
  });
  assert.is(await verdict('i0@big.example', { type: 'UUID', token: 'imp-a-0' }), '{"status":0}');
});

test('(b) the compaction that follows, by another process, and the daemon re-reading 1.4M devices', async () => {
  const script = `
    import { openRegistry } from ${JSON.stringify(registryModule)};
    import { fileStore } from ${JSON.stringify(storeModule)};
    import { setPriority } from 'node:os';
    setPriority(10); // as the CLI does: registry work in another process is batch work
    // A threshold of one byte: the next write folds the 400k-device journal into a new snapshot.
    const reg = await openRegistry(fileStore(${JSON.stringify(state)}, { compactBytes: 1 }), { create: true });
    await reg.setMode('compaction@big.example', 'monitor');`;
  const journal = join(state, 'registry.journal');
  // Runs again as it ran: the same one-byte threshold compacts all 1.4M devices again, and the
  // daemon re-reads them again.
  await repeatablePhase('(b) compaction + full re-read', async () => {
    const t = Date.now();
    const r = await run(['--input-type=module', '-e', script]);
    assert.is(r.status, 0, r.stderr);
    assert.ok(!existsSync(journal) || readFileSync(journal).length < 1000, 'no compaction happened');
    await until(() => reloadsAfter(t, (l) => l.rebuilt === true) > 0, 'the daemon to re-read the compacted registry');
  });
  assert.is(await verdict('i0@big.example', { type: 'UUID', token: 'imp-a-0' }), '{"status":0}');
});

test('(c) a device removed with the CLI', async () => {
  const cid = bigCid(7, 0);
  assert.is(await verdict(bigUser(7), cid), '{"status":0}');
  await phase('(c) CLI remove', async () => {
    const t = Date.now();
    const r = await run([CIDLOCK, 'devices', 'remove', bigUser(7), deviceId(cid), '--config', cfg]);
    assert.is(r.status, 0, r.stderr);
    await until(() => reloadsAfter(t) > 0, 'the daemon to see the removal');
    for (const deadline = Date.now() + 5000; (await verdict(bigUser(7), cid)) !== '{"status":-1,"msg":""}';) {
      if (Date.now() > deadline) throw new Error('the removed device is still accepted');
      await sleep(50);
    }
  });
});

test('(d) learn-mode registrations while an import holds the lock', async () => {
  const file = importD;
  const lock = join(state, 'registry.lock');
  let learned = 0;
  let duringLock = 0;
  await phase('(d) learning during an import', async () => {
    const t = Date.now();
    let importing = true;
    const learner = (async () => {
      for (let k = 0; importing; k++) {
        const locked = existsSync(lock);
        const user = `l${k}@learn.example`;
        const body = dovecotBody(user, { type: 'UUID', token: `learn-${k}` }, `learn-${k}`, '198.51.100.20');
        assert.is(await dovecot(ports.dovecot, false, 'allow', body), '{"status":0}');
        await dovecot(ports.dovecot, false, 'report', JSON.stringify({ ...JSON.parse(body), success: true }));
        learned++;
        if (locked) duringLock++;
        await sleep(20);
      }
    })();
    const r = await run([CIDLOCK, 'devices', 'import', file, '--config', cfg]);
    importing = false;
    await learner;
    assert.is(r.status, 0, r.stderr);
    // The daemon may read the import while registering a learned device rather than on a poll.
    const devices = async () => Number(JSON.parse((await httpGet(ports.admin, '/readyz')).body).devices);
    for (const deadline = Date.now() + 60_000; (await devices()) < 1_799_999 + learned;) {
      if (Date.now() > deadline) throw new Error(`the daemon has ${await devices()} devices after the second import`);
      await sleep(100);
    }
    const added = async () => Number(/cidlock_devices_learned_total\{status="added"\} (\d+)/.exec((await httpGet(ports.admin, '/metrics')).body)?.[1] ?? 0);
    const deadline = Date.now() + 30_000;
    while ((await added()) < learned && Date.now() < deadline) await sleep(100);
    assert.is(await added(), learned, 'every learned device was registered');
  });
  process.stdout.write(`  ${learned} devices learned, ${duringLock} of them requested while the import held the lock\n`);
  assert.ok(duringLock > 0, 'no learn registration met the import\'s lock');
});

test('(e) four tarpitted Postfix connections flooding their sockets', async () => {
  // One failed login makes the address a guesser: its next request is delayed (the tarpit).
  await dovecot(ports.dovecot, false, 'report', JSON.stringify({ ...JSON.parse(dovecotBody('t@big.example', { type: 'UUID', token: 'x' }, 'tarpit-0', '192.0.2.66')), success: false }));
  let outcomes: Array<{ reply: string; closed: boolean; written: number; ms: number }> = [];
  await repeatablePhase('(e) tarpit + 4 flooding clients', async () => {
    outcomes = [];
    await Promise.all([0, 1, 2, 3].map(async (k) => {
      const c = await policyConnection(ports.postfix);
      const t = Date.now();
      const out = { reply: '', closed: false, written: 0, ms: 0 };
      outcomes.push(out);
      const closed = new Promise<void>((r) => c.sock.on('close', () => { out.closed = true; r(); }));
      const replied = c.ask(policyBlock(`t${k}@big.example`, '192.0.2.66')).then((r) => { out.reply = r; out.ms = Date.now() - t; }, () => {});
      // Megabytes of a request that never ends, written while the tarpit reply is pending.
      const junk = Buffer.alloc(256 * 1024, 'x');
      while (!out.closed && out.written < 16 * 1024 * 1024) {
        if (!c.sock.write(junk)) await Promise.race([new Promise((r) => c.sock.once('drain', r)), closed, sleep(TARPIT_SECONDS * 1000 + 2000)]);
        out.written += junk.length;
        if (out.reply !== '') break;
      }
      await replied;
      await Promise.race([closed, sleep(15_000)]);
      c.sock.destroy();
    }));
  });
  for (const o of outcomes) {
    assert.is(o.reply, 'action=DUNNO', 'the tarpitted request got its reply');
    assert.ok(o.ms >= TARPIT_SECONDS * 1000 - 100, `the reply came after ${o.ms} ms: not delayed`);
    assert.ok(o.closed, 'the flooding connection was closed');
  }
  process.stdout.write(`  tarpit: ${outcomes.map((o) => `${Math.round(o.written / 1048576)} MB written, reply after ${o.ms} ms`).join('; ')}\n`);
});

test.run();
