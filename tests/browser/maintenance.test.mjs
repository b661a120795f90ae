// A browser form POST while guarded ([guard] hold = "0s"): the built-in maintenance page, which
// says the change was NOT saved; the write never reaches the app; after release it goes through.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, startWriteguard, adminApi, launchBrowser, shotPath } from './lib/harness.mjs';
import { startSite } from './lib/site.mjs';

let site, wg, browser;

before(async () => {
  site = await startSite();
  [wg, browser] = await Promise.all([startWriteguard(site.url), launchBrowser()]);
});

after(cleanup);

const posts = () => site.seen.filter((r) => r.method === 'POST').length;

test('a blocked form post shows the maintenance page, and nothing reaches the app', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  await page.goto(wg.proxy + '/form');
  assert.equal((await api.engage('deploy of v42', '5m')).status, 201);

  await page.locator('#name').fill('Ada Lovelace');
  const [res] = await Promise.all([page.waitForNavigation(), page.locator('#save').click()]);
  assert.equal(res.status(), 503);
  assert.match(res.headers()['content-type'], /^text\/html/);
  assert.ok(Number(res.headers()['retry-after']) > 0, 'Retry-After on the 503');
  const text = await page.locator('body').innerText();
  assert.match(text, /not\s+(been\s+)?saved/i, `says the change was not saved:\n${text}`);
  // Accessible: a language, a title, a main heading; no auto-refresh that would re-POST.
  assert.ok(await page.evaluate(() => document.documentElement.lang), 'html lang');
  assert.ok((await page.title()).length > 0, 'a title');
  assert.ok((await page.locator('h1').count()) >= 1, 'a heading');
  assert.equal(await page.locator('meta[http-equiv="refresh" i]').count(), 0);
  assert.equal(posts(), 0, 'the blocked write never reached the app');
  await page.screenshot({ path: shotPath('maintenance-page.png') });

  // After the release, the same form goes through.
  assert.equal((await api.release()).status, 200);
  await page.goto(wg.proxy + '/form');
  await page.locator('#name').fill('Ada Lovelace');
  const [ok] = await Promise.all([page.waitForNavigation(), page.locator('#save').click()]);
  assert.equal(ok.status(), 200);
  assert.match(await page.locator('#echo').innerText(), /name=Ada\+Lovelace/);
  assert.equal(posts(), 1);
  await context.close();
});

test('the maintenance page has a way back that works', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(wg.proxy + '/form');
  await api.engage('deploy', '5m');
  const [res] = await Promise.all([page.waitForNavigation(), page.locator('#save').click()]);
  assert.equal(res.status(), 503);
  const back = page.getByRole('link', { name: /back/i });
  assert.equal(await back.count(), 1, 'one "go back" link');
  await Promise.all([page.waitForURL(`${wg.proxy}/form`, { timeout: 5000 }), back.click()]);
  assert.equal(await page.locator('#name').count(), 1, 'back on the form');
  await api.release();
  await context.close();
});
