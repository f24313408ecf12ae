// Live lists for the hixbus consoles. An element with data-rows="URL" is refreshed from that
// URL (an HTML fragment) whenever its data-live event stream (EventSource) sends an event, or
// every data-poll milliseconds. New rows are marked and announced in the page's live region,
// so sighted and screen-reader users both notice them. No framework: the pages work without
// this script (reload shows the same), it only saves the reload.
(function () {
  "use strict";
  function ids(el) {
    var seen = {};
    el.querySelectorAll("[data-id],[data-report]").forEach(function (row) {
      seen[(row.dataset.id || row.dataset.report) + "|" + (row.dataset.status || "")] = true;
    });
    return seen;
  }
  function announce(text) {
    var region = document.getElementById("announce");
    if (!region || !text) return;
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 50);
  }
  function attach(el) {
    var target = el.tagName === "TABLE" ? el.querySelector("tbody") : el;
    var busy = false, again = false, held = false;
    // Someone is typing in a form inside the list (acknowledging a result): replacing it would
    // throw their input away, so the refresh waits until the focus leaves the list.
    function editing() {
      var a = document.activeElement;
      return a && target.contains(a) && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(a.tagName);
    }
    target.addEventListener("focusout", function () {
      if (held) { held = false; window.setTimeout(refresh, 0); }
    });
    function refresh() {
      if (editing()) { held = true; return; }
      if (busy) { again = true; return; }
      busy = true;
      var before = ids(target);
      fetch(el.dataset.rows, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) {
          // The session ended (idle, signed out elsewhere): go where the server sent us.
          if (r.redirected) { window.location.assign(r.url); return Promise.reject("signed out"); }
          return r.ok ? r.text() : Promise.reject(r.status);
        })
        .then(function (html) {
          target.innerHTML = html;
          var changed = false;
          target.querySelectorAll("[data-id],[data-report]").forEach(function (row) {
            var key = (row.dataset.id || row.dataset.report) + "|" + (row.dataset.status || "");
            if (!before[key]) { row.classList.add("arrived"); changed = true; }
          });
          if (changed) announce(el.dataset.announce);
          el.dataset.refreshed = String(Date.now());
        })
        .catch(function () { el.dataset.state = "error"; })
        .then(function () {
          busy = false;
          if (again) { again = false; refresh(); }
        });
    }
    if (el.dataset.live && window.EventSource) {
      var source = new EventSource(el.dataset.live);
      // What changed between the page being rendered and the stream opening (or while it was
      // reconnecting) sent no event here: read the list once each time the stream opens.
      source.onopen = function () { el.dataset.state = "live"; refresh(); };
      source.onmessage = refresh;
      ["prescription", "claim", "result", "critical", "report", "resync"].forEach(function (name) {
        source.addEventListener(name, refresh);
      });
      source.onerror = function () { el.dataset.state = "reconnecting"; };
    }
    if (el.dataset.poll) {
      window.setInterval(refresh, Math.max(1000, parseInt(el.dataset.poll, 10) || 5000));
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-rows]").forEach(attach);
  });
})();
