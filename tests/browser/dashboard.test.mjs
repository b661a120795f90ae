// The operator dashboard (admin port, GET /) driven by clicks: state, deploys seen, engage and
// release with the token asked once and kept in the page's memory only; the chart of the last
// 15 minutes (requests per second by outcome, held writes, guarded periods shaded).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, startWriteguard, adminApi, launchBrowser, shotPath, sample, until, sleep, TOKEN, PREFIX } from './lib/harness.mjs';
import { startSite } from './lib/site.mjs';

let site, wg, browser;

before(async () => {
  site = await startSite();
  [wg, browser] = await Promise.all([
    // Unsigned webhooks, only to feed it a deploy to show.
    startWriteguard(site.url, { extra: '[upsun]\nallow_unsigned = true\n' }),
    launchBrowser(),
  ]);
});

after(cleanup);

/** Feeds the Upsun fixtures of a push that ran and completed. */
async function feedDeploy() {
  const start = sample('environment.push_in_progress');
  const done = sample('environment.push_complete_success');
  if (!start || !done) return false;
  for (const body of [start, done]) {
    const r = await fetch(`${wg.admin}/webhooks/upsun`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    assert.equal(r.status, 200, await r.text());
  }
  return true;
}

test('the dashboard engages and releases when driven by clicks', { timeout: 60_000 }, async () => {
  const api = adminApi(wg.admin);
  const fed = await feedDeploy();
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const res = await page.goto(wg.admin + '/');
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  const badge = page.locator('#state-badge');
  await page.waitForFunction(() => document.getElementById('state-badge').textContent === 'Open', null, { timeout: 5000 });
  if (fed) {
    const deploys = page.locator('#deploys');
    await deploys.getByText('environment.push').first().waitFor({ timeout: 5000 });
  }

  // A wrong token is refused and asked for again.
  await page.getByLabel('Admin token').fill('not-the-token');
  await page.getByRole('button', { name: 'Engage' }).click();
  await page.locator('#message').getByText(/refused/).waitFor({ timeout: 5000 });
  assert.equal(await page.getByLabel('Admin token').isVisible(), true);
  assert.equal((await api.status()).json.guarded, false);

  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByLabel('Reason').fill('dashboard test: migrating orders');
  await page.getByLabel('TTL').fill('5m');
  await page.getByRole('button', { name: 'Engage' }).click();
  await page.waitForFunction(() => document.getElementById('state-badge').textContent === 'Guarded', null, { timeout: 3000 });
  assert.equal((await api.status()).json.guarded, true);
  await page.locator('#engagements').getByText('dashboard test: migrating orders').waitFor({ timeout: 3000 });
  assert.equal(await page.getByLabel('Admin token').isVisible(), false, 'token asked once');
  // Kept in the page's memory only.
  assert.deepEqual(
    await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie]),
    [0, 0, ''],
  );

  await page.getByRole('button', { name: 'Release' }).click();
  await page.waitForFunction(() => document.getElementById('state-badge').textContent === 'Open', null, { timeout: 3000 });
  assert.equal((await api.status()).json.guarded, false);
  assert.match(await badge.textContent(), /Open/);
  assert.deepEqual(errors, [], 'no script errors in the dashboard');
  await context.close();
});

test('the dashboard follows engagements made elsewhere within its 2 s refresh', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(wg.admin + '/');
  await page.waitForFunction(() => document.getElementById('state-badge').textContent === 'Open', null, { timeout: 5000 });
  await api.engage('engaged from the API', '5m');
  await page.locator('#engagements').getByText('engaged from the API').waitFor({ timeout: 3000 });
  assert.equal(await page.locator('#state-badge').textContent(), 'Guarded');
  await api.release();
  await page.waitForFunction(() => document.getElementById('state-badge').textContent === 'Open', null, { timeout: 3000 });
  await context.close();
});

const OUTCOMES = ['forwarded', 'refused', 'held_forwarded', 'held_refused', 'public', 'invalid', 'upstream_error'];

/** `GET /metrics/recent` (open: no admin.metrics_token here), with each outcome's total. */
async function recent(admin) {
  const r = await fetch(`${admin}/metrics/recent`);
  assert.equal(r.status, 200);
  const v = await r.json();
  v.totals = Object.fromEntries(v.outcomes.map((o, i) => [o, v.samples.reduce((n, s) => n + s.requests[i], 0)]));
  return v;
}

/**
 * Traffic for the screenshot: `seconds` of pages read through the proxy, the status route
 * now and then, and while engaged (from `from` to `to` seconds) writes held and refused.
 */
async function background(w, api, seconds, from, to) {
  const started = Date.now();
  const pending = [];
  let engaged = false;
  for (let tick = 0; Date.now() - started < seconds * 1000; tick++) {
    const at = (Date.now() - started) / 1000;
    if (!engaged && at >= from && at < to) {
      await api.engage('Upsun environment.push in progress', '10m');
      engaged = true;
    } else if (engaged && at >= to) {
      await api.release();
      engaged = false;
    }
    const reads = 2 + (tick % 7 === 0 ? 4 : tick % 3);
    for (let i = 0; i < reads; i++) pending.push(fetch(`${w.proxy}/plain`).then((r) => r.text()));
    if (tick % 8 === 0) pending.push(fetch(`${w.proxy}${PREFIX}/status`).then((r) => r.text()));
    if (tick % 3 === 0) {
      pending.push(fetch(`${w.proxy}/submit`, { method: 'POST', body: 'comment=hi' }).then((r) => r.text()));
    }
    await sleep(250);
  }
  if (engaged) await api.release();
  await Promise.allSettled(pending);
}

test('the dashboard charts the last 15 minutes: requests by outcome, held writes, guarded periods', { timeout: 600_000 }, async () => {
  // One write held at a time: the next ones are refused at once.
  const w = await startWriteguard(site.url, { hold: '3s', guardCfg: 'hold_max_requests = 1' });
  const api = adminApi(w.admin);
  if (process.env.UPDATE_SCREENSHOTS) await background(w, api, 200, 70, 130);
  // Counted from a sample taken after the harness's own start-up requests (banner.js).
  const t0 = Math.floor(Date.now() / 1000);
  const { totals: before } = await until(async () => {
    const v = await recent(w.admin);
    return v.samples.at(-1)?.t >= t0 + 2 && v;
  }, 5000, 'a sample after the start');

  const post = () => fetch(`${w.proxy}/submit`, { method: 'POST', body: 'comment=hi' }).then(async (r) => (await r.text(), r.status));
  for (let i = 0; i < 10; i++) assert.equal((await fetch(`${w.proxy}/plain`)).status, 200);
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${w.proxy}${PREFIX}/status`)).status, 200);
  assert.equal((await api.engage('chart test', '5m')).status, 201);
  const held = post();
  await until(async () => (await api.status()).json.held === 1, 5000, 'a held write');
  assert.equal(await post(), 503);
  assert.equal(await post(), 503);
  await until(async () => (await recent(w.admin)).samples.some((s) => s.guarded && s.held === 1), 5000, 'a sample with the held write');
  await api.release();
  assert.equal(await held, 200);
  const v = await until(async () => {
    const v = await recent(w.admin);
    return v.totals.held_forwarded > before.held_forwarded && !v.samples.at(-1).guarded && v;
  }, 5000, 'a sample after the release');
  const grew = Object.fromEntries(OUTCOMES.map((o) => [o, v.totals[o] - before[o]]));
  assert.deepEqual(
    [grew.forwarded, grew.refused, grew.held_forwarded, grew.public],
    [10, 2, 1, 2],
  );

  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(w.admin + '/');
  await page.locator('#chart rect.guarded').first().waitFor({ timeout: 5000 });
  const chart = await page.evaluate(() => {
    const svg = document.getElementById('chart');
    const bottom = 240 - 22; // the zero line: viewBox height minus the bottom margin
    const series = {};
    for (const p of svg.querySelectorAll('polyline.series')) {
      const ys = p.getAttribute('points').trim().split(' ').map((xy) => Number(xy.split(',')[1]));
      series[p.dataset.series] = { points: ys.length, above: ys.some((y) => y < bottom - 0.5) };
    }
    return {
      series,
      bands: [...svg.querySelectorAll('rect.guarded')].map((r) => Number(r.getAttribute('width'))),
      legend: Object.fromEntries([...document.querySelectorAll('#chart-legend li')].map((li) => [li.dataset.series, li.textContent])),
      summary: document.getElementById('chart-summary').textContent,
      label: svg.getAttribute('aria-labelledby'),
    };
  });
  assert.deepEqual(Object.keys(chart.series).sort(), [...OUTCOMES, 'held'].sort());
  for (const s of ['forwarded', 'refused', 'held_forwarded', 'public', 'held']) {
    assert.ok(chart.series[s].above, `${s} rises above zero: ${JSON.stringify(chart)}`);
  }
  for (const s of ['invalid', 'upstream_error']) assert.equal(chart.series[s].above, false, s);
  assert.ok(chart.bands.length >= 1 && chart.bands.every((w) => w > 0), JSON.stringify(chart.bands));
  // The legend's totals are the route's.
  for (const o of OUTCOMES) assert.equal(chart.legend[o], `${o} ${v.totals[o]}`);
  assert.equal(chart.legend.guarded, 'guarded');
  assert.match(chart.summary, new RegExp(`${v.totals.forwarded} forwarded`));
  assert.match(chart.summary, /guarded \d+ s/);
  assert.equal(chart.label, 'chart-summary');

  // For docs/dashboard.png: engaged again, as during a deploy.
  await api.engage('Upsun environment.push in progress', '10m');
  await page.waitForFunction(() => document.getElementById('state-badge').textContent === 'Guarded', null, { timeout: 5000 });
  await page.locator('#engagements').getByText('Upsun environment.push in progress').waitFor({ timeout: 3000 });
  await sleep(2500); // one more refresh: the chart's new band
  await page.screenshot({ path: shotPath('dashboard.png'), fullPage: true });
  assert.deepEqual(errors, [], 'no script errors in the dashboard');
  await api.release();
  await context.close();
  await w.close();
});
