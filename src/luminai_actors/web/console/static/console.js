// Luminai operator console: a little vanilla JavaScript on top of server-rendered pages.
// - Live pages (body[data-poll]) poll a small JSON endpoint every 3 s; when its `version` differs from the
//   one the page was rendered with, the page is fetched again and its [data-live] regions are swapped in.
// - Times are shown in the browser's time zone; Ctrl+Enter sends the reply box; the one-off `?notice=` of
//   the last action is dropped from the address.
(function () {
  "use strict";
  var POLL_MS = 3000;

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.title = el.getAttribute("datetime");
        el.textContent = when.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
      }
    });
  }

  function transcript() {
    return document.querySelector(".transcript");
  }

  function nearBottom(list) {
    return !list || list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function toBottom() {
    var list = transcript();
    if (list) list.scrollTop = list.scrollHeight;
  }

  async function refresh() {
    var stick = nearBottom(transcript());
    var response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return;
    var fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    document.querySelectorAll("[data-live][id]").forEach(function (region) {
      var next = fresh.getElementById(region.id);
      if (next && !region.contains(document.activeElement)) {
        region.replaceWith(next);
        localTimes(next);
      }
    });
    if (stick) toBottom();
    document.body.dispatchEvent(new CustomEvent("console:refreshed"));
  }

  function poll() {
    var url = document.body.getAttribute("data-poll");
    if (!url) return;
    var version = document.body.getAttribute("data-version");
    var busy = false;
    async function tick() {
      if (busy || document.hidden) return;
      busy = true;
      try {
        var response = await fetch(url, {
          credentials: "same-origin",
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
        if (response.status === 401) {
          location.assign("/console/sign-in");
          return;
        }
        if (response.ok) {
          var data = await response.json();
          if (data.version !== version) {
            await refresh();
            version = data.version;
            document.body.setAttribute("data-version", version);
          }
        }
      } catch (err) {
        // offline for a moment: the next tick tries again
      } finally {
        busy = false;
      }
    }
    setInterval(tick, POLL_MS);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) tick();
    });
  }

  function replyShortcut() {
    var box = document.getElementById("reply-text");
    if (!box) return;
    box.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && box.form) {
        event.preventDefault();
        box.form.requestSubmit();
      }
    });
  }

  function dropNotice() {
    // A notice belongs to the action that just happened; reloads and live refreshes should not repeat it.
    var url = new URL(location.href);
    if (url.searchParams.has("notice")) {
      url.searchParams.delete("notice");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    dropNotice();
    localTimes(document);
    toBottom();
    replyShortcut();
    poll();
  });
})();
