// The banner script (PREFIX/banner.js) in a real browser: appears within 2 s of an engage,
// goes within 2 s of a release, disables and restores exactly the submit buttons it disabled,
// shares one event stream between tabs, falls back to polling, and is injected when asked.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  cleanup, startWriteguard, adminApi, launchBrowser, shotPath, until, PREFIX,
} from './lib/harness.mjs';
import { startSite } from './lib/site.mjs';

const TEXT = /Deploy in progress: saving is paused for about \d+ s/;
let site, wg, injected, browser;

before(async () => {
  site = await startSite();
  [wg, injected, browser] = await Promise.all([
    startWriteguard(site.url, { publicCfg: 'inject_banner = false' }),
    startWriteguard(site.url, { publicCfg: 'inject_banner = true' }),
    launchBrowser(),
  ]);
});

after(cleanup);

/** A page in a fresh context whose banner has received its first state. */
async function open(base, path, { init, width = 1000, height = 560 } = {}) {
  const context = await browser.newContext({ viewport: { width, height } });
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  // Any uncaught error in the page (the banner script's included) fails the test at close.
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const close = context.close.bind(context);
  context.close = async () => {
    assert.deepEqual(errors, [], 'no script errors in the page');
    await close();
  };
  const res = await page.goto(base + path);
  assert.equal(res.status(), 200);
  await page.locator('#writeguard-banner').waitFor({ state: 'attached', timeout: 5000 });
  return { context, page };
}

/** Engages (or releases) and returns how long the banner took to show (or go). */
async function timed(page, api, engage) {
  const banner = page.locator('#writeguard-banner');
  const t0 = Date.now();
  const r = engage ? await api.engage('browser test', '5m') : await api.release();
  assert.equal(r.status, engage ? 201 : 200, JSON.stringify(r.json));
  await banner.waitFor({ state: engage ? 'visible' : 'hidden', timeout: 2000 });
  return Date.now() - t0;
}

test('banner shows within 2 s of an engage and goes within 2 s of a release', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const { context, page } = await open(wg.proxy, '/tagged');
  const banner = page.locator('#writeguard-banner');
  assert.equal(await banner.isVisible(), false, 'no banner while open');
  assert.equal(await banner.textContent(), '');

  const shown = await timed(page, api, true);
  assert.match(await banner.textContent(), TEXT);
  assert.match(await banner.textContent(), /about 30 s/, 'N is the retry_after of the status');
  // Accessible and non-blocking: a polite status region, a slim bar at the top, page usable.
  assert.equal(await banner.getAttribute('role'), 'status');
  assert.equal(await banner.getAttribute('aria-live'), 'polite');
  const box = await banner.boundingBox();
  assert.ok(box.y === 0 && box.height < 80 && box.width > 900, `a slim top bar: ${JSON.stringify(box)}`);
  assert.equal(await page.evaluate(() => getComputedStyle(document.getElementById('writeguard-banner')).position), 'fixed');
  // The page is pushed down, not covered: its heading starts below the bar.
  const h1 = await page.locator('h1').boundingBox();
  assert.ok(h1.y >= box.y + box.height - 1, `heading at ${h1.y}, bar ends at ${box.y + box.height}`);
  assert.equal(await page.evaluate(() => document.elementFromPoint(100, 150)?.id), '', 'clicks below the bar reach the page');
  await page.locator('#comment').fill('still typing while guarded');
  assert.equal(await page.locator('#comment').inputValue(), 'still typing while guarded');

  await page.screenshot({ path: shotPath('banner.png') });

  const hidden = await timed(page, api, false);
  assert.equal(await banner.textContent(), '');
  assert.equal(await page.evaluate(() => document.documentElement.style.paddingTop), '', 'layout restored');
  assert.equal((await page.locator('h1').boundingBox()).y, 0);
  console.log(`banner shown after ${shown} ms, hidden after ${hidden} ms`);
  await context.close();
});

test('an engagement that expires takes the banner away by itself', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const { context, page } = await open(wg.proxy, '/tagged');
  const banner = page.locator('#writeguard-banner');
  assert.equal((await api.engage('short', '2s')).status, 201);
  await banner.waitFor({ state: 'visible', timeout: 2000 });
  // retry_after is capped by the engagement's end.
  assert.match(await banner.textContent(), /about [0-2] s/);
  // Expiry is swept every second: gone within 2 s of the end.
  await banner.waitFor({ state: 'hidden', timeout: 2000 + 2000 });
  assert.equal((await api.status()).json.guarded, false);
  await context.close();
});

test('the banner keeps working across a writeguard restart (the stream reconnects)', { timeout: 45_000 }, async () => {
  const first = await startWriteguard(site.url, { publicCfg: 'inject_banner = false' });
  let second;
  try {
    const { context, page } = await open(first.proxy, '/tagged');
    const seen = { events: 0, status: 0 };
    page.on('request', (r) => {
      for (const k of Object.keys(seen)) if (r.url().endsWith(`${PREFIX}/${k}`)) seen[k]++;
    });
    const banner = page.locator('#writeguard-banner');
    assert.equal((await adminApi(first.admin).engage('before restart', '5m')).status, 201);
    await banner.waitFor({ state: 'visible', timeout: 2000 });
    await first.close(true);
    // Same ports, same state file: the engagement survives, the page keeps its banner.
    second = await startWriteguard(site.url, { publicCfg: 'inject_banner = false', again: first });
    assert.equal((await adminApi(second.admin).status()).json.guarded, true);
    // EventSource retries every 2 s (the retry: hint), or the script falls back to polling.
    await page.waitForTimeout(2500);
    assert.equal(await banner.isVisible(), true);
    assert.equal((await adminApi(second.admin).release()).status, 200);
    await banner.waitFor({ state: 'hidden', timeout: 4000 });
    assert.ok(seen.events >= 1, `reconnected: ${JSON.stringify(seen)}`);
    console.log(`after the restart: ${JSON.stringify(seen)}`);
    await context.close();
  } finally {
    await (second || first).close();
  }
});

test('data-disable-forms disables submit buttons while guarded and restores exactly those', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const { context, page } = await open(wg.proxy, '/tagged');
  const disabled = () =>
    page.evaluate(() =>
      ['save', 'preview', 'publish', 'cancel'].map((id) => `${id}:${document.getElementById(id).disabled}`).join(' '));
  assert.equal(await disabled(), 'save:false preview:true publish:false cancel:false');
  await timed(page, api, true);
  assert.equal(await disabled(), 'save:true preview:true publish:true cancel:false');
  await timed(page, api, false);
  // The button the page itself had disabled stays disabled.
  assert.equal(await disabled(), 'save:false preview:true publish:false cancel:false');
  await context.close();
});

test('without data-disable-forms the buttons are left alone', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const { context, page } = await open(wg.proxy, '/tagged', {
    init: () => {
      // Same page, snippet without the opt-in attribute.
      new MutationObserver(() => {
        const s = document.querySelector('script[src$="/banner.js"]');
        if (s) s.removeAttribute('data-disable-forms');
      }).observe(document, { childList: true, subtree: true });
    },
  });
  await timed(page, api, true);
  assert.equal(await page.locator('#save').isDisabled(), false);
  await timed(page, api, false);
  await context.close();
});

test('tabs of one site share a single event stream, and another tab takes over when it closes', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const context = await browser.newContext();
  const streams = new Map();
  const pages = [];
  for (let i = 0; i < 3; i++) {
    const page = await context.newPage();
    streams.set(page, 0);
    page.on('request', (r) => r.url().endsWith(`${PREFIX}/events`) && streams.set(page, streams.get(page) + 1));
    await page.goto(wg.proxy + '/tagged');
    await page.locator('#writeguard-banner').waitFor({ state: 'attached', timeout: 5000 });
    pages.push(page);
  }
  const total = () => [...streams.values()].reduce((a, b) => a + b, 0);
  assert.equal(total(), 1, 'one /events stream for three tabs');

  await api.engage('three tabs', '5m');
  for (const p of pages) await p.locator('#writeguard-banner').waitFor({ state: 'visible', timeout: 2000 });

  const leader = pages.find((p) => streams.get(p) === 1);
  await leader.close();
  await until(() => total() === 2, 5000, 'another tab to open the stream');
  await api.release();
  for (const p of pages.filter((p) => p !== leader)) {
    await p.locator('#writeguard-banner').waitFor({ state: 'hidden', timeout: 2000 });
  }
  await context.close();
});

test('falls back to polling status when EventSource is missing', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const { context, page } = await open(wg.proxy, '/tagged', { init: () => delete window.EventSource });
  let polls = 0;
  page.on('request', (r) => r.url().endsWith(`${PREFIX}/status`) && polls++);
  await api.engage('polling', '5m');
  // One poll every 2 s: visible within one period plus the request.
  await page.locator('#writeguard-banner').waitFor({ state: 'visible', timeout: 3000 });
  assert.match(await page.locator('#writeguard-banner').textContent(), TEXT);
  await api.release();
  await page.locator('#writeguard-banner').waitFor({ state: 'hidden', timeout: 3000 });
  assert.ok(polls >= 1, `polled ${polls} times`);
  await context.close();
});

test('falls back to polling status when the event stream fails', { timeout: 30_000 }, async () => {
  const api = adminApi(wg.admin);
  const context = await browser.newContext();
  await context.route(`**${PREFIX}/events`, (route) => route.fulfill({ status: 503, body: 'no' }));
  const page = await context.newPage();
  await page.goto(wg.proxy + '/tagged');
  await page.locator('#writeguard-banner').waitFor({ state: 'attached', timeout: 5000 });
  await api.engage('stream refused', '5m');
  await page.locator('#writeguard-banner').waitFor({ state: 'visible', timeout: 3000 });
  await api.release();
  await page.locator('#writeguard-banner').waitFor({ state: 'hidden', timeout: 3000 });
  await context.close();
});

test('with inject_banner = true a page without the script tag gets the banner', { timeout: 30_000 }, async () => {
  const api = adminApi(injected.admin);
  const { context, page } = await open(injected.proxy, '/plain');
  assert.equal(await page.locator(`head script[src="${PREFIX}/banner.js"]`).count(), 1, 'injected in <head>');
  await timed(page, api, true);
  assert.match(await page.locator('#writeguard-banner').textContent(), TEXT);
  await timed(page, api, false);
  await context.close();
});

test('injection into a page that already has the tag still makes one banner', { timeout: 30_000 }, async () => {
  const api = adminApi(injected.admin);
  const { context, page } = await open(injected.proxy, '/tagged');
  await timed(page, api, true);
  assert.equal(await page.locator('#writeguard-banner').count(), 1);
  await timed(page, api, false);
  await context.close();
});

test('inject_banner = false leaves pages byte-for-byte untouched', { timeout: 30_000 }, async () => {
  const direct = await (await fetch(site.url + '/plain')).text();
  const proxied = await (await fetch(wg.proxy + '/plain')).text();
  assert.equal(proxied, direct);
  const json = await (await fetch(injected.proxy + '/data.json')).text();
  assert.equal(json, '{"html": false}', 'only HTML is rewritten');
});
