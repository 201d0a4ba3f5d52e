// AEGIS console: live inbox over Server-Sent Events, and time left that counts down.
// Everything works without this script (forms post and pages reload); it only keeps the inbox current.
// Items are patched by id, so a Note being typed is never replaced: new requests are inserted, decided
// or expired ones removed, and the change is announced in the polite live region.
(function () {
  "use strict";

  var container = document.getElementById("inbox");
  var announcer = document.getElementById("inbox-announcer");
  var offsetMs = 0; // server clock minus this browser's clock

  function readServerNow(list) {
    var now = list && list.getAttribute("data-now");
    var parsed = now ? Date.parse(now) : NaN;
    if (!isNaN(parsed)) {
      offsetMs = parsed - Date.now();
    }
  }

  function span(seconds) {
    seconds = Math.floor(seconds);
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) {
      var hours = Math.floor(seconds / 3600);
      var minutes = Math.floor((seconds % 3600) / 60);
      return minutes ? hours + " h " + minutes + " min" : hours + " h";
    }
    var days = Math.floor(seconds / 86400);
    var restHours = Math.floor((seconds % 86400) / 3600);
    return restHours ? days + " d " + restHours + " h" : days + " d";
  }

  function tick() {
    var times = document.querySelectorAll(".deadline time[datetime]");
    var now = Date.now() + offsetMs;
    for (var i = 0; i < times.length; i++) {
      var deadline = Date.parse(times[i].getAttribute("datetime"));
      if (isNaN(deadline)) continue;
      var left = (deadline - now) / 1000;
      var text = left >= 1 ? span(left) + " left" : "expired";
      if (times[i].textContent !== text) times[i].textContent = text;
    }
  }

  function announce(text) {
    if (!announcer || !text) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function itemsById(list) {
    var found = {};
    var items = list.querySelectorAll("ol.inbox-list > li");
    for (var i = 0; i < items.length; i++) {
      var article = items[i].querySelector("article[data-decision-id]");
      if (article) found[article.getAttribute("data-decision-id")] = items[i];
    }
    return found;
  }

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  function applyList(html) {
    var current = document.getElementById("inbox-list");
    if (!current) return;
    var template = document.createElement("template");
    template.innerHTML = html;
    var incoming = template.content.getElementById("inbox-list");
    if (!incoming) return;
    readServerNow(incoming);
    var currentOl = current.querySelector("ol.inbox-list");
    var incomingOl = incoming.querySelector("ol.inbox-list");
    var have = itemsById(current);
    var want = itemsById(incoming);
    var order = [];
    var items = incomingOl.querySelectorAll(":scope > li");
    for (var i = 0; i < items.length; i++) {
      var article = items[i].querySelector("article[data-decision-id]");
      if (article) order.push(article.getAttribute("data-decision-id"));
    }
    var removed = 0;
    var added = 0;
    Object.keys(have).forEach(function (id) {
      if (!want[id]) {
        have[id].remove();
        delete have[id];
        removed += 1;
      }
    });
    var cursor = currentOl.firstElementChild;
    order.forEach(function (id) {
      var node = have[id];
      if (node) {
        if (node === cursor) {
          cursor = cursor.nextElementSibling;
        } else {
          currentOl.insertBefore(node, cursor);
        }
      } else {
        currentOl.insertBefore(document.importNode(want[id], true), cursor);
        added += 1;
      }
    });
    var summary = current.querySelector("#inbox-summary");
    var newSummary = incoming.querySelector("#inbox-summary");
    if (summary && newSummary) summary.textContent = newSummary.textContent;
    current.setAttribute("data-total", incoming.getAttribute("data-total") || "0");
    current.setAttribute("data-now", incoming.getAttribute("data-now") || "");
    tick();
    var parts = [];
    if (added) parts.push(plural(added, "new request") + " waiting for review");
    if (removed) parts.push(plural(removed, "request") + " left the inbox (decided or expired)");
    if (parts.length) announce(parts.join("; ") + ".");
  }

  function setLiveState(text, show) {
    var state = document.getElementById("live-state");
    if (!state) return;
    state.textContent = text;
    state.hidden = !show;
  }

  function connect(url) {
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      setLiveState("This list updates live.", true);
    });
    source.addEventListener("inbox", function (event) {
      applyList(event.data);
    });
    source.addEventListener("signed-out", function () {
      source.close();
      setLiveState("Live updates stopped: your session ended.", true);
      var next = encodeURIComponent(window.location.pathname);
      window.location.assign("/console/sign-in?reason=expired&next=" + next);
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        setLiveState("Live updates stopped. Reload the page to see new requests.", true);
      } else {
        setLiveState("Reconnecting live updates…", true);
      }
    });
  }

  readServerNow(document.getElementById("inbox-list"));
  tick();
  window.setInterval(tick, 15000);
  if (container && container.getAttribute("data-stream") && "EventSource" in window) {
    connect(container.getAttribute("data-stream"));
  }
})();
