// Sentinel console: live updates by short polling. Every few seconds, while the tab is visible,
// the page fetches itself and replaces each element marked data-live with its new version, so
// a key that changes state shows without a reload. Forms are never inside a data-live element,
// so nothing an operator is typing is replaced. Without JavaScript the pages work the same,
// only without the updates.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;
  var status = document.getElementById("live-status");
  var live = document.querySelectorAll("[data-live][id]");
  if (!live.length || !window.fetch || !window.DOMParser) {
    return;
  }
  var busy = false;
  function say(text) {
    if (status && status.textContent !== text) {
      status.textContent = text;
    }
  }
  function refresh() {
    if (busy || document.visibilityState !== "visible") {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      credentials: "same-origin",
      headers: { "X-Sentinel-Live": "1" },
      cache: "no-store",
    })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var changed = 0;
        live.forEach(function (el) {
          var next = fresh.getElementById(el.id);
          if (next && next.innerHTML !== el.innerHTML) {
            el.innerHTML = next.innerHTML;
            changed += 1;
          }
        });
        document.body.dataset.liveUpdates = String(
          Number(document.body.dataset.liveUpdates || "0") + changed
        );
        say("Live: updated " + new Date().toLocaleTimeString());
      })
      .catch(function (err) {
        say("Live updates paused: " + err.message);
      })
      .then(function () {
        busy = false;
      });
  }
  say("Live");
  window.setInterval(refresh, INTERVAL_MS);
  document.addEventListener("visibilitychange", refresh);
})();
