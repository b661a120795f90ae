/* writeguard banner: while a deploy runs, shows "saving is paused" and (opt-in with
   data-disable-forms on this script tag) disables submit buttons. No dependencies.
   Styles: --writeguard-bg, -fg, -font, -size, -padding, -border, -shadow, -z, -top. */
(function () {
  'use strict';
  if (window.__writeguard) return;
  window.__writeguard = 1;
  var d = document;
  var me = d.currentScript || [].slice.call(d.querySelectorAll('script[src*="/banner.js"]')).pop();
  if (!me) return;
  var u = new URL(me.src, location.href);
  var base = u.origin + u.pathname.replace(/\/banner\.js$/, '');
  var forms = me.hasAttribute('data-disable-forms');
  var el, off = [], last = '', bc, cur, pad, top0;

  function css(n, v) { return 'var(--writeguard-' + n + ',' + v + ')'; }

  function bar() {
    if (el) return el;
    el = d.createElement('div');
    el.id = 'writeguard-banner';
    el.setAttribute('role', 'status');
    el.setAttribute('aria-live', 'polite');
    el.setAttribute('aria-atomic', 'true');
    var s = el.style;
    s.position = 'fixed';
    s.left = s.right = '0';
    s.top = css('top', '0');
    s.zIndex = css('z', '2147483000');
    s.margin = '0';
    s.textAlign = 'center';
    s.background = css('bg', '#7c2d12');
    s.color = css('fg', '#fff');
    s.font = css('font', '600 ' + css('size', '15px') + '/1.4 system-ui,sans-serif');
    s.borderBottom = css('border', '0');
    d.body.appendChild(el);
    return el;
  }

  // With an estimate (eta): seconds below two minutes, then minutes, as the 503 page says.
  function about(s) { return s < 120 ? s + ' s' : Math.floor((s + 30) / 60) + ' min'; }

  // Released: the live region stays, empty and zero-sized, so the next change is announced.
  // Shown: the page is pushed down by the bar's height rather than covered.
  function show(st) {
    var b = bar(), s = b.style, r = d.documentElement.style;
    b.textContent = !st ? '' : st.eta
      ? 'Deploy in progress: saving is paused, back in about ' + about(st.retry_after)
      : 'Deploy in progress: saving is paused for about ' + st.retry_after + ' s';
    s.padding = st ? css('padding', '8px 16px') : '0';
    s.boxShadow = st ? css('shadow', '0 2px 6px rgba(0,0,0,.3)') : 'none';
    if (st) {
      if (pad == null) { pad = r.paddingTop; top0 = parseFloat(getComputedStyle(d.documentElement).paddingTop) || 0; }
      r.paddingTop = top0 + b.offsetHeight + 'px';
    } else if (pad != null) {
      r.paddingTop = pad;
      pad = null;
    }
  }

  function lock(on) {
    if (!forms) return;
    if (on) {
      var q = d.querySelectorAll('form button[type=submit],form button:not([type]),form input[type=submit],form input[type=image]');
      for (var i = 0; i < q.length; i++) {
        if (!q[i].disabled) { q[i].disabled = true; off.push(q[i]); }
      }
    } else {
      while (off.length) off.pop().disabled = false;
    }
  }

  function apply(st) {
    if (!st || typeof st.guarded !== 'boolean') return;
    var key = st.guarded ? 'g' + st.retry_after + (st.eta ? 'e' : '') : 'r';
    if (st.guarded) lock(true);
    if (key === last) return;
    last = key;
    if (!d.body) return d.addEventListener('DOMContentLoaded', function () { last = ''; apply(st); });
    show(st.guarded && st);
    if (!st.guarded) lock(false);
  }

  // The tab that listens tells the others (bc), so a site costs one stream, not one per tab.
  function got(st) {
    cur = st;
    apply(st);
    if (bc) bc.postMessage(st);
  }

  function poll() {
    fetch(base + '/status', { cache: 'no-store', credentials: 'omit' })
      .then(function (r) { return r.json(); })
      .then(got, function () {});
    setTimeout(poll, 2000);
  }

  function connect() {
    if (!window.EventSource) return poll();
    var es = new EventSource(base + '/events'), errs = 0;
    es.addEventListener('state', function (e) {
      errs = 0;
      try { got(JSON.parse(e.data)); } catch (x) {}
    });
    es.onopen = function () { errs = 0; };
    es.onerror = function () {
      if (++errs >= 3 || es.readyState === 2) { es.close(); poll(); }
    };
  }

  if (navigator.locks && window.BroadcastChannel) {
    bc = new BroadcastChannel('writeguard ' + base);
    bc.onmessage = function (e) {
      if (e.data !== '?') apply(e.data);
      else if (cur) bc.postMessage(cur);
    };
    bc.postMessage('?');
    navigator.locks.request('writeguard ' + base, function () {
      connect();
      return new Promise(function () {}); // held until this tab goes away
    });
  } else {
    connect();
  }
})();
