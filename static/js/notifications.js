// The live notification badge on every page of a signed-in user: the header's
// #notification-stream holds a second WebSocket (htmx ws extension) to /ws/notifications/,
// next to the feed page's own. It resumes after the newest seq the page knows on every
// (re)connect, drops items already shown, keeps the notifications page in step, and announces
// a changed count politely. No inline script anywhere: this file is all.
(function () {
  "use strict";

  // Close codes after which the ws extension reconnects by itself (htmx-ext-ws 2.0.4).
  var EXTENSION_RETRIES = [1006, 1011, 1012, 1013];
  // The session (or token) that opened the stream ended: reconnecting would be refused.
  var CLOSE_SESSION_ENDED = 4401;
  var REFRESH_AFTER_MS = 500;
  var ANNOUNCE_EVERY_MS = 1000;
  var WS_EVENTS = [
    "htmx:wsConnecting", "htmx:wsOpen", "htmx:wsClose", "htmx:wsError",
    "htmx:wsBeforeMessage", "htmx:wsAfterMessage", "htmx:wsBeforeSend", "htmx:wsAfterSend",
  ];

  var ownRetries = 0;
  var openedAt = 0;
  var everOpened = false;
  var framesSeen = 0;
  var announced = null;

  function stream() {
    return document.getElementById("notification-stream");
  }

  function lastSeq() {
    var el = stream();
    var seq = el ? parseInt(el.getAttribute("data-last-seq"), 10) : 0;
    return seq > 0 ? seq : 0;
  }

  function setLastSeq(seq) {
    var el = stream();
    if (el && seq > lastSeq()) el.setAttribute("data-last-seq", String(seq));
  }

  // The same jittered backoff as the feed page (static/js/feed.js sets it for the extension).
  function reconnectDelay(attempt) {
    var configured = window.htmx && window.htmx.config.wsReconnectDelay;
    if (typeof configured === "function") return configured(attempt);
    return 250 + Math.random() * Math.min(10000, 500 * Math.pow(2, Math.min(attempt, 5)));
  }

  function unread() {
    var badge = document.getElementById("notification-badge");
    var count = badge ? parseInt(badge.getAttribute("data-unread"), 10) : 0;
    return count > 0 ? count : 0;
  }

  // Politely, through the site's announcer (static/js/announce.js) when the page has it: a
  // burst of changes (a resume's replay) is spoken once a second at most, the latest count.
  function announce(text) {
    if (window.LiveFeed && window.LiveFeed.announce) {
      window.LiveFeed.announce(text, { key: "notification-count", every: ANNOUNCE_EVERY_MS });
      return;
    }
    var status = document.getElementById("notification-status");
    if (status) status.textContent = text;
  }

  // After the badge changed: announce it, and keep the notifications page in step.
  function badgeChanged() {
    var count = unread();
    if (announced !== null && count !== announced) announce(count === 1 ? "1 unread notification" : count + " unread notifications");
    announced = count;
    var summary = document.querySelector(".notifications-count");
    if (summary) summary.textContent = count + " unread";
    var form = document.querySelector("form.mark-read");
    if (form) {
      form.hidden = count === 0;
      var upTo = form.querySelector("input[name='up_to']");
      var shown = highestListed();
      if (upTo && shown > (parseInt(upTo.value, 10) || 0)) upTo.value = String(shown);
    }
    if (count === 0) {
      document.querySelectorAll("#notification-list li.unread").forEach(function (item) {
        item.classList.remove("unread");
        var marker = item.querySelector(".unread-marker");
        if (marker) marker.remove();
      });
    }
  }

  function highestListed() {
    var highest = 0;
    document.querySelectorAll("#notification-list li[data-seq]").forEach(function (item) {
      var seq = parseInt(item.getAttribute("data-seq"), 10);
      if (seq > highest) highest = seq;
    });
    return highest;
  }

  // The frame parsed inertly (a <template> runs no script and loads nothing).
  function parse(message) {
    if (typeof message !== "string" || message.indexOf("<") === -1) return null;
    var template = document.createElement("template");
    template.innerHTML = message;
    return template.content;
  }

  function setState(state) {
    var el = stream();
    if (el) el.setAttribute("data-state", state);
  }

  function onOpen(evt) {
    openedAt = Date.now();
    setState("live");
    evt.detail.socketWrapper.send(JSON.stringify({ type: "resume", after: lastSeq() }));
    // A read while disconnected sent its notifications.read to the sockets open then:
    // after a reconnect ask for the count once, after the resume's replay (whose frames may
    // carry counts from before that read) has had time to land.
    if (everOpened) window.setTimeout(refreshCount, REFRESH_AFTER_MS);
    everOpened = true;
  }

  // Take the summary's count unless a frame came in meanwhile (its own count is as fresh) or
  // the summary is behind the newest notification the page has.
  function refreshCount() {
    if (!window.fetch) return;
    var before = framesSeen;
    window.fetch("/api/notifications/summary/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (summary) {
        var badge = document.getElementById("notification-badge");
        if (!summary || !badge || framesSeen !== before || summary.last_seq !== lastSeq()) return;
        badge.setAttribute("data-unread", String(summary.unread));
        if (badge.firstChild && badge.firstChild.nodeType === 3) badge.firstChild.nodeValue = String(summary.unread);
        badgeChanged();
      })
      .catch(function () { /* the next reconnect asks again */ });
  }

  function onClose(evt) {
    var code = evt.detail.event ? evt.detail.event.code : 0;
    if (code === 1005) return; // closed by ourselves while being replaced
    var socket = evt.detail.socketWrapper;
    var elt = evt.target;
    setState(code === CLOSE_SESSION_ENDED ? "offline" : "reconnecting");
    if (code === CLOSE_SESSION_ENDED || EXTENSION_RETRIES.indexOf(code) !== -1 || !socket) return;
    // Any other close (policy 4xxx, a clean close): the extension gives up; come back
    // ourselves, slowly if it keeps happening (as the feed page does).
    if (Date.now() - openedAt > 30000) ownRetries = 0;
    var delay = reconnectDelay(ownRetries);
    ownRetries += 1;
    window.setTimeout(function () {
      if (document.body.contains(elt)) socket.reconnect();
    }, delay);
  }

  // Drop an item already shown (a resume overlapping the page); on a page without the list
  // swap the badge alone, so htmx does not report the list as a missing target.
  function onBeforeMessage(evt) {
    framesSeen += 1;
    var content = parse(evt.detail.message);
    if (!content) return;
    var item = content.querySelector("li[data-seq]");
    if (item) {
      var seq = parseInt(item.getAttribute("data-seq"), 10);
      var known = !(seq > lastSeq()) || (item.id && document.getElementById(item.id));
      setLastSeq(seq);
      if (known) {
        evt.preventDefault();
        return;
      }
    }
    if (item && document.getElementById("notification-list")) return; // htmx swaps both
    evt.preventDefault();
    var badge = content.querySelector("#notification-badge");
    var current = document.getElementById("notification-badge");
    if (badge && current) {
      badge.removeAttribute("hx-swap-oob");
      current.replaceWith(badge);
      badgeChanged();
    }
  }

  function onAfterMessage() {
    var empty = document.querySelector(".notifications p.empty");
    if (empty && highestListed() > 0) empty.remove();
    badgeChanged();
  }

  var handlers = {
    "htmx:wsOpen": onOpen,
    "htmx:wsClose": onClose,
    "htmx:wsBeforeMessage": onBeforeMessage,
    "htmx:wsAfterMessage": onAfterMessage,
  };

  // Deferred scripts run once the document is parsed and before htmx opens the socket
  // (on DOMContentLoaded), so no event of this socket is missed.
  var el = stream();
  if (!el) return;
  announced = unread();
  // The feed page's handlers (static/js/feed.js) listen on the document for its own
  // socket: this socket's events stop here, so they never reach them.
  WS_EVENTS.forEach(function (name) {
    el.addEventListener(name, function (evt) {
      if (handlers[name]) handlers[name](evt);
      evt.stopPropagation();
    });
  });
})();
