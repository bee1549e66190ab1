// "N watching" (templates/feed/page.html): the stream's feed.presence frames replace
// #feed-watching by an out-of-band swap. The number itself is not a live region; a
// visually hidden polite status says the latest count at most once every 10 s, and
// not the first count after the page opens (it is on screen with the connection state).
(function () {
  "use strict";
  var MIN_GAP_MS = 10000;
  var said = null;
  var saidAt = -Infinity;
  var timer = null;

  function current() {
    var el = document.getElementById("feed-watching");
    return el && !el.hidden ? el.getAttribute("data-watching") : null;
  }

  function announce() {
    timer = null;
    var count = current();
    var region = document.getElementById("watching-announcement");
    if (count === null || count === said || !region) return;
    said = count;
    saidAt = Date.now();
    region.textContent = count + (count === "1" ? " person" : " people") + " watching";
  }

  function changed() {
    if (said === null) {
      said = current();  // the first count is shown, not announced
      return;
    }
    if (timer === null) timer = setTimeout(announce, Math.max(0, saidAt + MIN_GAP_MS - Date.now()));
  }

  function start() {
    var el = document.getElementById("feed-watching");
    if (!el || !window.MutationObserver) return;
    new MutationObserver(changed).observe(el.parentNode, { childList: true, subtree: true, attributes: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
