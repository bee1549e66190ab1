// "N watching" (templates/feed/page.html): the stream's feed.presence frames replace
// #feed-watching by an out-of-band swap. The number itself is not a live region; the
// latest count is said politely at most once every 10 s, and not the first count after
// the page opens (it is on screen next to the connection state). Spoken through the
// shared LiveFeed.announce (static/js/announce.js) when the page has it, else through the
// page's own visually hidden status, #watching-announcement, with the same throttle.
(function () {
  "use strict";
  var MIN_GAP_MS = 10000;
  var shown = null;  // the count on screen when last seen
  var said = null;
  var saidAt = -Infinity;
  var timer = null;

  function current() {
    var el = document.getElementById("feed-watching");
    return el && !el.hidden ? el.getAttribute("data-watching") : null;
  }

  function sentence(count) {
    return count + (count === "1" ? " person" : " people") + " watching";
  }

  function sayLocally() {
    timer = null;
    var count = current();
    var region = document.getElementById("watching-announcement");
    if (count === null || count === said || !region) return;
    said = count;
    saidAt = Date.now();
    region.textContent = sentence(count);
  }

  function changed() {
    var count = current();
    if (count === null || count === shown) return;
    var first = shown === null;
    shown = count;
    if (first) {
      said = count;  // the first count is shown, not announced
      return;
    }
    if (window.LiveFeed && window.LiveFeed.announce) {
      window.LiveFeed.announce(sentence(count), { key: "presence", every: MIN_GAP_MS });
    } else if (timer === null) {
      timer = setTimeout(sayLocally, Math.max(0, saidAt + MIN_GAP_MS - Date.now()));
    }
  }

  function start() {
    var el = document.getElementById("feed-watching");
    if (!el || !window.MutationObserver) return;
    new MutationObserver(changed).observe(el.parentNode, { childList: true, subtree: true, attributes: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
