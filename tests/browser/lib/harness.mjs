// Harness for the browser tests: the REAL writeguard binary on free loopback ports with its own
// temp dir, tiny Node upstreams serving HTML, and Debian's headless Chromium driven by
// playwright-core (never a downloaded browser). Every wait is bounded; everything started here
// is stopped by the returned `close()` functions.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../../..');
export const DOCS = path.join(ROOT, 'docs');
export const TOKEN = 'browser-test-token-0123';
export const PREFIX = '/.well-known/writeguard';
const BIN = process.env.WRITEGUARD_BIN || path.join(ROOT, 'target/debug/writeguard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Everything started here, so that cleanup() stops it even when a before() hook failed halfway.
const live = new Set();
const starting = new Set();
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Stops every server, writeguard and browser started by this process (call from after()). */
export async function cleanup() {
  // A start still under way when a sibling failed: let it finish, then stop it too.
  await Promise.allSettled([...starting]);
  const all = [...live].reverse();
  live.clear();
  await Promise.allSettled(all.map((close) => close()));
}

/** Runs `start` so that cleanup() waits for it. */
function starts(start) {
  const p = start();
  starting.add(p);
  const done = () => starting.delete(p);
  p.then(done, done);
  return p;
}

function tracked(close) {
  let done;
  const once = () => (done ??= (live.delete(once), close()));
  live.add(once);
  return once;
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A loopback port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** An HTTP server on a free loopback port answering with `routes[path](req, body)`. */
export function serve(routes) {
  return starts(() => listen(routes));
}

async function listen(routes) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const url = new URL(req.url, 'http://x');
      seen.push({ method: req.method, path: url.pathname, body });
      const route = routes[url.pathname];
      if (!route) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        return res.end('not found\n');
      }
      const out = route(req, body);
      const type = out.type || 'text/html; charset=utf-8';
      res.writeHead(out.status || 200, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(out.body);
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    close: tracked(
      () =>
        new Promise((r) => {
          server.closeAllConnections?.();
          server.close(() => r());
        }),
    ),
  };
}

/** An HTML page; `head` goes inside <head>, `body` inside <body>. */
export function page(title, { head = '', body = '' } = {}) {
  return {
    body: `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${title}</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0; padding: 0 2rem 2rem; color: #1f2937; }
  header { border-bottom: 1px solid #e5e7eb; margin-bottom: 1rem; }
  h1 { margin: 0; padding: .5rem 0; }
  form { display: flex; flex-direction: column; align-items: flex-start; gap: .5rem; max-width: 24rem; }
  textarea { width: 100%; }
  textarea { min-height: 5rem; font: inherit; }
  button, input[type=submit] { font: inherit; padding: .4rem 1rem; }
</style>
${head}
</head>
<body>
${body}
</body>
</html>
`,
  };
}

/**
 * Starts writeguard with a temp TOML config in front of `upstream` (a URL). `publicCfg` and
 * `extra` are appended as-is; `hold` is `guard.hold` (0s by default), `guardCfg` more lines
 * of `[guard]`. `again` (an earlier instance, closed with keep = true) reuses its
 * ports and state dir: a restart. Returns { proxy, admin, dir, ports, log(), close(keep) }.
 */
export function startWriteguard(upstream, options = {}) {
  return starts(() => start(upstream, options));
}

async function start(upstream, { publicCfg = '', extra = '', again, hold = '0s', guardCfg = '' } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`cargo build\` first`);
  const dir = again ? again.dir : mkdtempSync(path.join(os.tmpdir(), 'writeguard-browser-'));
  const [proxyPort, adminPort] = again ? again.ports : [await freePort(), await freePort()];
  const config = `[proxy]
listen = "127.0.0.1:${proxyPort}"
upstream = "${upstream}"
upstream_retry = "1s"

[admin]
listen = "127.0.0.1:${adminPort}"
token = "${TOKEN}"

[guard]
hold = "${hold}"
retry_after = "30s"
${guardCfg}

[state]
path = "${dir}/writeguard.state"

[server]
upgrade_sock = "${dir}/upgrade.sock"
pid_file = "${dir}/writeguard.pid"
shutdown_grace = "1s"

[public]
prefix = "${PREFIX}"
${publicCfg}
${extra}
`;
  const file = path.join(dir, 'writeguard.toml');
  writeFileSync(file, config);
  const env = { ...process.env, WRITEGUARD_LOG: process.env.WRITEGUARD_LOG || 'info' };
  for (const k of Object.keys(env)) if (k.startsWith('WRITEGUARD_') && k !== 'WRITEGUARD_LOG') delete env[k];
  let output = '';
  const child = spawn(BIN, ['run', '-c', file], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    children.delete(child);
  });
  let keepDir = false;
  const close = tracked(async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const t = Date.now() + 5000;
      while (!exited && Date.now() < t) await sleep(20);
      if (!exited) child.kill('SIGKILL');
    }
    if (!keepDir) rmSync(dir, { recursive: true, force: true });
  });

  const admin = `http://127.0.0.1:${adminPort}`;
  const proxy = `http://127.0.0.1:${proxyPort}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) {
      await close();
      throw new Error(`writeguard exited at start (${JSON.stringify(exited)}):\n${output}`);
    }
    try {
      const r = await fetch(`${admin}/readyz`);
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) {
      await close();
      throw new Error(`writeguard not ready within 10 s:\n${output}`);
    }
    await sleep(50);
  }
  // banner.js and the dashboard are compiled into the binary: a stale build tests old files.
  for (const [url, file] of [
    [`${proxy}${PREFIX}/banner.js`, 'src/public/banner.js'],
    [`${admin}/`, 'src/admin/dashboard.html'],
  ]) {
    const served = await (await fetch(url)).text();
    if (served !== readFileSync(path.join(ROOT, file), 'utf8')) {
      await close();
      throw new Error(`${BIN} serves an older ${file} than the work tree (${url}): run \`cargo build\``);
    }
  }
  return {
    proxy,
    admin,
    dir,
    ports: [proxyPort, adminPort],
    config,
    log: () => output,
    close(keep = false) {
      keepDir = keep;
      return close();
    },
  };
}

/** Admin API calls with the bearer token. */
export function adminApi(admin) {
  const call = async (method, p, body) => {
    const r = await fetch(admin + p, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: r.status, json };
  };
  return {
    call,
    engage: (reason = 'browser test', ttl) => call('POST', '/guard', ttl ? { reason, ttl } : { reason }),
    release: () => call('DELETE', '/guard?all=true'),
    status: () => call('GET', '/status'),
  };
}

/** Debian's Chromium, headless, isolated: no download, no network beyond loopback. */
export function launchBrowser() {
  return starts(launch);
}

async function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  // playwright-core's launch() gives the browser a fresh temporary --user-data-dir of its own
  // (and refuses one in `args`), removed on close.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  tracked(() => browser.close());
  return browser;
}

/** Polls `fn` until it returns a truthy value, or throws after `ms`. */
export async function until(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(25);
  }
}

/**
 * Where a screenshot goes: docs/ at the repository root with UPDATE_SCREENSHOTS=1 (`npm run
 * screenshots`), else a temp dir, so a plain test run leaves the tracked PNGs alone.
 */
export function shotPath(name) {
  const dir = process.env.UPDATE_SCREENSHOTS ? DOCS : path.join(os.tmpdir(), 'writeguard-screenshots');
  mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

/** One of the project's Upsun activity fixtures (tests/fixtures/upsun/NAME.json). */
export function sample(name) {
  return readFileSync(path.join(ROOT, 'tests', 'fixtures', 'upsun', `${name}.json`), 'utf8');
}
