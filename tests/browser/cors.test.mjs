// Upsun's status-holder contract (its website-banner.js sample), cross-origin in a real browser: a page on
// another origin polls PREFIX/api/{project}/{environment} with Content-Type: application/json
// (so Chromium sends a CORS preflight) and reads `available` across engage and release.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, startWriteguard, adminApi, launchBrowser, serve, page as html, PREFIX } from './lib/harness.mjs';
import { startSite } from './lib/site.mjs';

let site, other, stranger, open, listed, browser;

// A stand-in for Upsun's website-banner.js sample: polls every 2 s, ignores the
// status code, reads only `available`, covers the page while it is falsy.
const upsunBanner = (endpoint) => `
<div id="overlay" style="position:fixed;inset:0;background:rgba(0,0,0,.8);color:#fff;display:none;place-items:center">
  Deployment in progress, please wait</div>
<script>
  window.check = async function (project, env) {
    const r = await fetch(${JSON.stringify(endpoint)} + '/api/' + project + '/' + env,
      { headers: { 'Content-Type': 'application/json' } });
    return { status: r.status, body: await r.json() };
  };
  setInterval(async () => {
    try {
      const s = await window.check('proj', 'main');
      document.getElementById('overlay').style.display = s.body.available ? 'none' : 'grid';
    } catch (e) { document.title = 'error: ' + e; }
  }, 2000);
</script>`;

before(async () => {
  site = await startSite();
  // Other origins (other ports): they serve the Upsun-style page, pointed at ?endpoint=.
  const upsunPage = (req) =>
    html('Another origin', { body: upsunBanner(new URL(req.url, 'http://x').searchParams.get('endpoint')) });
  other = await serve({ '/upsun.html': upsunPage });
  stranger = await serve({ '/upsun.html': upsunPage });
  [open, listed, browser] = await Promise.all([
    // Default cors_origins ("*").
    startWriteguard(site.url, { publicCfg: '' }),
    // An explicit list, and a project/environment scope (anything else is "unknown").
    startWriteguard(site.url, {
      publicCfg: `cors_origins = ["${other.url}"]`,
      extra: '[upsun]\nproject = "proj"\nenvironments = ["main"]\n',
    }),
    launchBrowser(),
  ]);
});

after(cleanup);

/** A page served from `origin` (a serve() handle, another port) that talks to `endpoint`. */
async function crossPage(origin, endpoint) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const res = await page.goto(`${origin.url}/upsun.html?endpoint=${encodeURIComponent(endpoint)}`);
  assert.equal(res.status(), 200);
  return { context, page };
}

test('preflight: OPTIONS answers 204 with the CORS headers, and the GET carries them too', { timeout: 15_000 }, async () => {
  for (const [wg, origin, allowed] of [[open, 'http://elsewhere.test', '*'], [listed, other.url, other.url]]) {
    const r = await fetch(`${wg.proxy}${PREFIX}/api/proj/main`, {
      method: 'OPTIONS',
      headers: {
        origin,
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'content-type',
      },
    });
    assert.equal(r.status, 204);
    assert.equal(r.headers.get('access-control-allow-origin'), allowed);
    assert.match(r.headers.get('access-control-allow-methods') || '', /GET/);
    assert.match(r.headers.get('access-control-allow-headers') || '', /content-type/i);
    const g = await fetch(`${wg.proxy}${PREFIX}/api/proj/main`, { headers: { origin, 'content-type': 'application/json' } });
    assert.equal(g.status, 200);
    assert.equal(g.headers.get('access-control-allow-origin'), allowed);
    assert.match(g.headers.get('cache-control') || '', /no-store/);
    assert.equal(typeof (await g.json()).available, 'boolean');
  }
});

test('cross-origin fetch with Content-Type: application/json reads available across engage/release (cors_origins = *)', { timeout: 30_000 }, async () => {
  const api = adminApi(open.admin);
  const { context, page } = await crossPage(other, open.proxy + PREFIX);
  let s = await page.evaluate(() => window.check('proj', 'main'));
  assert.deepEqual(s.body, { project: 'proj', environment: 'main', available: true });
  assert.equal(s.status, 200);

  assert.equal((await api.engage('cors', '5m')).status, 201);
  s = await page.evaluate(() => window.check('proj', 'main'));
  assert.equal(s.body.available, false);
  // The Upsun-style overlay follows within one 2 s poll.
  await page.locator('#overlay').waitFor({ state: 'visible', timeout: 3000 });

  assert.equal((await api.release()).status, 200);
  s = await page.evaluate(() => window.check('proj', 'main'));
  assert.equal(s.body.available, true);
  await page.locator('#overlay').waitFor({ state: 'hidden', timeout: 3000 });
  await context.close();
});

test('an explicit cors_origins list lets its origin in, fails open for unknown projects, and keeps others out', { timeout: 30_000 }, async () => {
  const api = adminApi(listed.admin);
  const endpoint = listed.proxy + PREFIX;
  const { context, page } = await crossPage(other, endpoint);
  assert.equal((await api.engage('cors list', '5m')).status, 201);
  let s = await page.evaluate(() => window.check('proj', 'main'));
  assert.equal(s.body.available, false);
  // Unknown project or environment: fail open.
  s = await page.evaluate(() => window.check('someone-else', 'main'));
  assert.deepEqual(s.body, { project: 'someone-else', environment: 'main', available: true });
  s = await page.evaluate(() => window.check('proj', 'staging'));
  assert.equal(s.body.available, true);

  // A page from an origin not in the list cannot read the answer.
  const foreign = await crossPage(stranger, endpoint);
  const err = await foreign.page.evaluate(() => window.check('proj', 'main').then(() => 'read it', (e) => e.name));
  assert.equal(err, 'TypeError', 'the browser blocks the cross-origin read');
  await foreign.context.close();

  assert.equal((await api.release()).status, 200);
  s = await page.evaluate(() => window.check('proj', 'main'));
  assert.equal(s.body.available, true);
  await context.close();
});

test('status is public, no-store and CORS-readable cross-origin', { timeout: 15_000 }, async () => {
  const { context, page } = await crossPage(other, open.proxy + PREFIX);
  const s = await page.evaluate(async (url) => {
    const r = await fetch(url);
    return { cc: r.headers.get('cache-control'), body: await r.json() };
  }, `${open.proxy}${PREFIX}/status`);
  assert.equal(s.body.guarded, false);
  assert.ok('since' in s.body && 'retry_after' in s.body);
  assert.equal(s.body.engagements, undefined, 'no engagements (reasons) on the public port');
  assert.match(s.cc, /no-store/);
  await context.close();
});
