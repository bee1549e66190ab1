// Short spoken messages for screen readers: LiveFeed.announce(text, options).
//
// Each message is added as a new paragraph to #announcer (templates/base.html), a visually
// hidden polite live region for additions: screen readers read it once, after what they are
// saying, and a message is read again when it repeats. New comments need no call: the
// comment list is a live log of its own (templates/feed/page.html).
//
//   LiveFeed.announce("Comment removed");
//   LiveFeed.announce("3 watching", { key: "presence", every: 10000 });
//
// With a `key`, messages of that key are spoken at most once per `every` ms (default
// 10 s): one that comes sooner waits for the end of the interval, and only the latest
// waiting one is spoken, unless it says what was said last.
(function () {
  "use strict";

  var DEFAULT_EVERY = 10000;
  var KEEP = 5; // the last few messages stay in the region; older ones are removed (unspoken)
  var byKey = {};

  function speak(text) {
    var region = document.getElementById("announcer");
    if (!region || !text) return;
    var message = document.createElement("p");
    message.textContent = text;
    region.appendChild(message);
    while (region.childNodes.length > KEEP) region.removeChild(region.firstChild);
  }

  function announce(text, options) {
    var key = options && options.key;
    if (!key) {
      speak(text);
      return;
    }
    var every = options.every >= 0 ? options.every : DEFAULT_EVERY;
    var entry = byKey[key] || (byKey[key] = { spokenAt: -Infinity, spoken: null, waiting: null, timer: null });
    var now = performance.now();
    if (entry.timer === null && now - entry.spokenAt >= every) {
      entry.spokenAt = now;
      entry.spoken = text;
      speak(text);
      return;
    }
    entry.waiting = text;
    if (entry.timer !== null) return;
    entry.timer = window.setTimeout(function () {
      entry.timer = null;
      var latest = entry.waiting;
      entry.waiting = null;
      if (latest === null || latest === entry.spoken) return;
      entry.spokenAt = performance.now();
      entry.spoken = latest;
      speak(latest);
    }, Math.max(0, Math.ceil(entry.spokenAt + every - now))); // setTimeout drops fractions
  }

  window.LiveFeed = window.LiveFeed || {};
  window.LiveFeed.announce = announce;
})();
