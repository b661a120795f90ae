// The application behind writeguard in the browser tests: a few HTML pages.

import { page, serve, PREFIX } from './harness.mjs';

const shop = `
<header><h1>Acme shop</h1><p>Welcome back. Your basket has 2 items.</p></header>
<main>
  <p><a id="plain-link" href="/plain">A page without the banner script</a></p>
  <form method="post" action="/submit">
    <label for="comment">Leave a comment</label>
    <textarea id="comment" name="comment">Great product!</textarea>
    <button id="save" type="submit">Save</button>
    <button id="preview" type="submit" disabled>Preview (disabled by the page)</button>
    <input id="publish" type="submit" value="Publish">
    <button id="cancel" type="button">Cancel (not a submit)</button>
  </form>
</main>`;

/** Starts the upstream app; returns the serve() handle. */
export function startSite() {
  return serve({
    // Carries the banner snippet, opting in to disabling submit buttons.
    '/tagged': () =>
      page('Acme shop', {
        head: `<script src="${PREFIX}/banner.js" defer data-disable-forms></script>`,
        body: shop,
      }),
    // No snippet: only gets a banner when writeguard injects it.
    '/plain': () =>
      page('Plain page', {
        body: '<header><h1>Plain page</h1></header><p>This page carries no banner script of its own.</p>',
      }),
    // A form that POSTs, no banner script: what a blocked browser write looks like.
    '/form': () =>
      page('Edit profile', {
        body: `<header><h1>Edit profile</h1></header>
<form method="post" action="/submit">
  <label for="name">Display name</label>
  <input id="name" name="name" value="Ada">
  <button id="save" type="submit">Save</button>
</form>`,
      }),
    '/submit': (req, body) =>
      req.method === 'POST'
        ? page('Saved', { body: `<h1>Saved</h1><p id="echo">${body.replace(/[<&]/g, '')}</p>` })
        : { status: 405, type: 'text/plain', body: 'POST only\n' },
    '/data.json': () => ({ type: 'application/json', body: '{"html": false}' }),
  });
}
