// The operator dashboard (admin port, GET /) driven by clicks: state, deploys seen, engage and
// release with the token asked once and kept in the page's memory only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, startWriteguard, adminApi, launchBrowser, shotPath, sample, TOKEN } from './lib/harness.mjs';
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
  await page.screenshot({ path: shotPath('dashboard.png'), fullPage: true });

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
