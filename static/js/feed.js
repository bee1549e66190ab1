// The live feed page: resume on every (re)connect, drop duplicate frames before htmx swaps
// them in, show the connection state, keep the newest comment in view, and report form
// failures that have no fragment to show. No inline script anywhere: this file is all.
(function () {
  "use strict";

  var LABELS = { live: "live", reconnecting: "reconnecting…", offline: "offline" };
  // Close codes after which the ws extension reconnects by itself (htmx-ext-ws 2.0.4).
  var EXTENSION_RETRIES = [1006, 1011, 1012, 1013];
  // The session that opened a members-only stream ended: reconnecting would be refused.
  var CLOSE_SESSION_ENDED = 4401;

  var everOpened = false;
  var ownRetries = 0;
  var openedAt = 0;
  var socketOpen = false;
  var sessionEnded = false;
  var stickToBottom = true;

  // Full jitter, capped at 10 s: many readers dropped at once come back spread out.
  function reconnectDelay(attempt) {
    return 250 + Math.random() * Math.min(10000, 500 * Math.pow(2, Math.min(attempt, 5)));
  }
  if (window.htmx) {
    window.htmx.config.wsReconnectDelay = reconnectDelay;
  }

  function setState(state) {
    var el = document.getElementById("connection-state");
    if (!el || (sessionEnded && state !== "offline")) return;
    if (state !== "offline" && navigator.onLine === false) state = "offline";
    el.setAttribute("data-state", state);
    el.textContent = state === "reconnecting" && !everOpened ? "connecting…" : LABELS[state];
  }

  function commentsBox() {
    return document.getElementById("comments");
  }

  function highestSeq() {
    var highest = 0;
    var box = commentsBox();
    if (!box) return highest;
    box.querySelectorAll("article[data-seq]").forEach(function (article) {
      var seq = parseInt(article.getAttribute("data-seq"), 10);
      if (seq > highest) highest = seq;
    });
    return highest;
  }

  // The frame's <article>, parsed inertly (a <template> runs no script and loads nothing).
  function frameArticle(message) {
    if (typeof message !== "string" || message.indexOf("<") === -1) return null;
    var template = document.createElement("template");
    template.innerHTML = message;
    return template.content.querySelector("article[data-seq]");
  }

  // The id a removal frame deletes (`<article id="comment-N" data-deleted-seq hx-swap-oob="delete">`), or null.
  function removalTarget(message) {
    if (typeof message !== "string" || message.indexOf("data-deleted-seq") === -1) return null;
    var template = document.createElement("template");
    template.innerHTML = message;
    var article = template.content.querySelector("article[data-deleted-seq]");
    return article ? article.id : null;
  }

  function isAtBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 48;
  }

  function scrollToBottom() {
    var box = commentsBox();
    if (box) box.scrollTop = box.scrollHeight;
  }

  document.addEventListener("htmx:wsConnecting", function () {
    setState("reconnecting");
  });

  document.addEventListener("htmx:wsOpen", function (evt) {
    everOpened = true;
    socketOpen = true;
    openedAt = Date.now();
    setState("live");
    evt.detail.socketWrapper.send(JSON.stringify({ type: "resume", after: highestSeq() }));
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail.event ? evt.detail.event.code : 0;
    // 1005: we closed it ourselves while replacing it; the new socket reports for itself.
    if (code === 1005) return;
    var socket = evt.detail.socketWrapper;
    var elt = evt.target;
    socketOpen = false;
    if (code === CLOSE_SESSION_ENDED) {
      sessionEnded = true;
      setState("offline");
      var label = document.getElementById("connection-state");
      if (label) label.textContent = "offline (signed out: reload the page)";
      return;
    }
    setState("reconnecting");
    if (EXTENSION_RETRIES.indexOf(code) !== -1 || !socket) return;
    // Any other close (the server shutting down, or refusing us by policy with 4xxx):
    // the extension gives up, so come back ourselves, slowly if it keeps happening.
    // Only a connection that lasted a while resets the backoff: a close right after each
    // open must not turn into a tight loop.
    if (Date.now() - openedAt > 30000) ownRetries = 0;
    var delay = reconnectDelay(ownRetries);
    ownRetries += 1;
    window.setTimeout(function () {
      if (document.body.contains(elt)) socket.reconnect();
    }, delay);
  });

  document.addEventListener("htmx:wsError", function () {
    setState("reconnecting");
  });

  window.addEventListener("offline", function () {
    setState("offline");
  });
  window.addEventListener("online", function () {
    // A socket can survive a short outage; if it did, the page is live again at once.
    setState(socketOpen ? "live" : "reconnecting");
  });

  // Drop a frame whose comment is already shown (a replay overlapping the page, a resume
  // after reconnect) before htmx swaps it in.
  document.addEventListener("htmx:wsBeforeMessage", function (evt) {
    var article = frameArticle(evt.detail.message);
    if (!article) {
      // A removal (an out-of-band delete) of a comment this page does not show (not loaded,
      // or already removed by this page's own "Remove"): nothing to do, and htmx would log
      // a missing target as an error.
      var removal = removalTarget(evt.detail.message);
      var shown = removal && document.getElementById(removal);
      if (removal && !shown) evt.preventDefault();
      if (shown && window.LiveFeed && window.LiveFeed.announce) {
        // Said politely and not more than once in a while: a burst of removals is one message.
        var author = shown.querySelector(".comment-author");
        window.LiveFeed.announce(
          author ? "A comment by " + author.textContent + " was removed." : "A comment was removed.",
          { key: "removed", every: 5000 }
        );
      }
      return;
    }
    var seq = parseInt(article.getAttribute("data-seq"), 10);
    if (!(seq > highestSeq()) || (article.id && document.getElementById(article.id))) {
      evt.preventDefault();
      return;
    }
    var box = commentsBox();
    stickToBottom = box ? isAtBottom(box) : false;
  });

  // Live comments are rendered once for every reader, their remove action hidden: show it
  // where this page's viewer may remove (a moderator, or the comment's author). The server
  // checks either way.
  function revealRemoveActions() {
    var box = commentsBox();
    if (!box) return;
    var moderating = box.hasAttribute("data-moderating");
    var viewer = box.getAttribute("data-viewer");
    if (!moderating && !viewer) return;
    box.querySelectorAll("article form.comment-remove[hidden]").forEach(function (form) {
      var article = form.closest("article");
      if (moderating || (viewer && article && article.getAttribute("data-user") === viewer)) form.hidden = false;
    });
  }

  document.addEventListener("htmx:wsAfterMessage", function () {
    revealRemoveActions();
    if (stickToBottom) scrollToBottom();
  });

  function formStatus(form, text) {
    var status = form && form.querySelector("[data-form-status]");
    if (status) status.textContent = text;
  }

  // A 4xx answer is swapped only when it is our form fragment (errors shown inline);
  // anything else (an expired CSRF token's page, a proxy's error) is reported instead.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var form = evt.detail.requestConfig && evt.detail.requestConfig.elt;
    if (!form || form.id !== "comment-form") return;
    var status = evt.detail.xhr.status;
    var response = evt.detail.serverResponse || "";
    if (status >= 400 && response.indexOf('id="comment-form"') === -1) {
      evt.detail.shouldSwap = false;
      formStatus(form, status === 403 ? "Could not post: reload the page and try again." : "Could not post (HTTP " + status + "). Try again.");
    }
  });

  document.addEventListener("htmx:responseError", function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.id === "comment-form") formStatus(elt, "Could not post (HTTP " + evt.detail.xhr.status + "). Try again.");
    if (elt && elt.classList && elt.classList.contains("comment-remove")) {
      var note = elt.querySelector("[role=alert]") || elt.appendChild(document.createElement("span"));
      note.setAttribute("role", "alert");
      note.textContent = " Could not remove (HTTP " + evt.detail.xhr.status + ").";
    }
  });

  document.addEventListener("htmx:sendError", function (evt) {
    var elt = evt.detail.elt;
    if (elt && elt.id === "comment-form") formStatus(elt, "Could not reach the server. Try again.");
  });

  // After the form fragment comes back, put the cursor where the user will type next.
  document.addEventListener("htmx:afterSwap", function (evt) {
    var config = evt.detail.requestConfig;
    var form = document.getElementById("comment-form");
    if (!form || !config || config.verb !== "post") return;
    var invalid = form.querySelector(".invalid textarea, .invalid input");
    var target = invalid || form.querySelector("textarea");
    if (target) target.focus();
  });

  // Ctrl+Enter (or Cmd+Enter) posts.
  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Enter" || !(evt.ctrlKey || evt.metaKey)) return;
    var form = evt.target && evt.target.closest && evt.target.closest("#comment-form");
    if (form && form.requestSubmit) {
      evt.preventDefault();
      form.requestSubmit();
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (document.getElementById("connection-state")) setState(navigator.onLine === false ? "offline" : "reconnecting");
    scrollToBottom();
  });
})();
