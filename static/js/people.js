// Replies: the "Reply" and "cancel" links swap in the comment form (htmx). Their answer is
// the form; anything else (the session ended on a members-only feed, the feed is gone, an
// error page) is not swapped in: the link is followed as an ordinary page instead.
(function () {
  "use strict";

  document.addEventListener("htmx:beforeSwap", function (evt) {
    var elt = evt.detail.requestConfig && evt.detail.requestConfig.elt;
    if (!elt || !elt.matches || !elt.matches("a.reply-link, a.cancel-reply")) return;
    var response = evt.detail.serverResponse || "";
    if (evt.detail.xhr.status !== 200 || response.indexOf('id="comment-form"') === -1) {
      evt.detail.shouldSwap = false;
      window.location.href = elt.href;
    }
  });
})();
