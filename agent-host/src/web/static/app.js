// agent-pipeline web UI: local times and live regions.
//
// No framework and no inline code (the Content-Security-Policy forbids it). The server renders
// every page; this script only (1) shows times in the reader's time zone and (2) re-reads the
// page's live regions when the server says a report event happened.
(function () {
  'use strict';

  // How long to wait after an event before re-reading the page, so that a burst of events
  // costs one request.
  var REFRESH_DELAY_MS = 200;

  // Every <time datetime> shows the reader's local time; the UTC text stays in the tooltip.
  function showLocalTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (element) {
      var at = new Date(element.getAttribute('datetime'));
      if (isNaN(at.getTime())) {
        return;
      }
      if (!element.dataset.utc) {
        element.dataset.utc = element.textContent;
      }
      element.title = element.dataset.utc;
      element.textContent = at.toLocaleString();
    });
  }

  var timer = null;
  var inFlight = false;
  var wanted = false;

  function scheduleRefresh() {
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  // A region holding the focused element (a select being opened, a button being pressed) is
  // left alone, and re-read once the focus leaves it.
  function holdsFocus(region) {
    var active = document.activeElement;
    return active && active !== document.body && region.contains(active);
  }

  // Which <details> of a region the reader opened or closed, so that a swap keeps them so.
  // Only those the reader toggled are kept (the others take what the server sends, which may
  // differ as the page grows), each known by its id, else by its summary's text and how many
  // before it have the same text: new attempts add <details> before older ones, so a position
  // would name another one after a swap.
  function markServed(region) {
    region.querySelectorAll('details').forEach(function (element) {
      element.dataset.servedOpen = element.open ? '1' : '0';
    });
  }

  function detailsKeys(region) {
    var seen = {};
    var keys = [];
    region.querySelectorAll('details').forEach(function (element) {
      var key = element.id;
      if (!key) {
        var summary = element.querySelector('summary');
        var text = summary ? summary.textContent.trim() : '';
        seen[text] = (seen[text] || 0) + 1;
        key = 'summary:' + text + ':' + seen[text];
      }
      keys.push([key, element]);
    });
    return keys;
  }

  function openDetails(region) {
    var state = {};
    detailsKeys(region).forEach(function (pair) {
      var element = pair[1];
      if (element.open !== (element.dataset.servedOpen === '1')) {
        state[pair[0]] = element.open;
      }
    });
    return state;
  }

  function reopenDetails(region, state) {
    detailsKeys(region).forEach(function (pair) {
      if (Object.prototype.hasOwnProperty.call(state, pair[0])) {
        pair[1].open = state[pair[0]];
      }
    });
  }

  function swapRegions(fresh) {
    document.querySelectorAll('[data-live][id]').forEach(function (region) {
      var replacement = fresh.getElementById(region.id);
      if (!replacement) {
        return;
      }
      if (holdsFocus(region)) {
        region.addEventListener('focusout', scheduleRefresh, { once: true });
        return;
      }
      var opened = openDetails(region);
      region.innerHTML = replacement.innerHTML;
      markServed(region);
      reopenDetails(region, opened);
    });
    showLocalTimes(document);
    var count = Number(document.body.dataset.liveRefreshes || 0) + 1;
    document.body.dataset.liveRefreshes = String(count);
  }

  function refresh() {
    // One request at a time; events that arrive meanwhile ask for one more afterwards.
    if (inFlight) {
      wanted = true;
      return;
    }
    inFlight = true;
    fetch(location.href, { headers: { Accept: 'text/html' }, credentials: 'same-origin' })
      .then(function (response) {
        if (!response.ok) {
          throw new Error('status ' + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        swapRegions(new DOMParser().parseFromString(text, 'text/html'));
      })
      .catch(function (error) {
        // The page stays as it is; the next event tries again.
        console.warn('live refresh failed:', error);
      })
      .finally(function () {
        inFlight = false;
        if (wanted) {
          wanted = false;
          scheduleRefresh();
        }
      });
  }

  function followEvents(url) {
    if (!window.EventSource) {
      return;
    }
    var indicator = document.getElementById('live-indicator');
    var connected = function (yes) {
      if (indicator) {
        indicator.classList.toggle('connected', yes);
        indicator.title = yes ? 'Live updates: connected' : 'Live updates: reconnecting…';
      }
    };
    var source = null;
    var open = function () {
      source = new EventSource(url);
      source.addEventListener('open', function () { connected(true); });
      source.addEventListener('error', function () { connected(false); });
      // `ready` comes once the stream is subscribed (also after a reconnect): re-reading then
      // catches whatever happened while the page loaded or the stream was down.
      ['ready', 'report', 'lagged'].forEach(function (name) {
        source.addEventListener(name, scheduleRefresh);
      });
    };
    open();
    // A page left for another stays in the browser's back/forward cache with its stream open;
    // over HTTP/1.1 a browser holds at most six connections to a host, so a few pages later
    // every new page would wait for a free one. Close the stream when leaving, and open it
    // again when the page is shown from that cache.
    window.addEventListener('pagehide', function () {
      if (source) {
        source.close();
        source = null;
      }
    });
    window.addEventListener('pageshow', function (event) {
      if (event.persisted && !source) {
        open();
      }
    });
  }

  function start() {
    document.querySelectorAll('[data-live]').forEach(markServed);
    showLocalTimes(document);
    var url = document.body.dataset.events;
    if (url) {
      followEvents(url);
    }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
