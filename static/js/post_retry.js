// Posts survive a flaky network: each composed comment gets one Idempotency-Key (a UUID), sent
// with every attempt; a network error, a timeout or a 502/503/504 (an instance restarting behind
// the load balancer) is retried with the same key, with backoff, until the server answers. The
// server creates the comment once and answers a repeat like the first success, so the comment
// is never lost and never doubled. Meanwhile the form is busy (its fields read-only, the button
// disabled) and says "Sending…" / "Retrying…" in its status (role=status, announced).
(function () {
  "use strict";

  var FORM_ID = "comment-form";
  var RETRY_STATUSES = [502, 503, 504];
  // No answer within this long counts as a network error (nginx itself waits up to 60 s).
  var ATTEMPT_TIMEOUT_MS = 20000;

  function isCommentForm(elt) {
    return !!elt && elt.id === FORM_ID && elt.tagName === "FORM";
  }

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // crypto.randomUUID needs a secure context (https or localhost); getRandomValues does not.
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  // Full jitter, 0.5 s growing to at most 8 s: many pages that lost one instance come back spread out.
  function retryDelay(attempt) {
    return 500 + Math.random() * Math.min(7500, 500 * Math.pow(2, Math.min(attempt, 4)));
  }

  function setStatus(form, text) {
    var status = form.querySelector("[data-form-status]");
    if (status && status.textContent !== text) status.textContent = text;
  }

  function setBusy(form, busy) {
    if (busy) form.setAttribute("aria-busy", "true");
    else form.removeAttribute("aria-busy");
    // Read-only, not disabled: disabled fields would not be sent with the retry.
    form.querySelectorAll("input:not([type=hidden]), textarea").forEach(function (field) {
      field.readOnly = busy;
    });
    form.querySelectorAll("button").forEach(function (button) {
      button.disabled = busy;
    });
  }

  // The first attempt of a composed comment picks its key; retries keep it.
  document.addEventListener("htmx:configRequest", function (evt) {
    var form = evt.detail.elt;
    if (!isCommentForm(form) || evt.detail.verb !== "post") return;
    if (!form.dataset.idempotencyKey) {
      form.dataset.idempotencyKey = newKey();
      form.dataset.attempt = "0";
    }
    var key = form.dataset.idempotencyKey;
    evt.detail.headers["Idempotency-Key"] = key;
    var hidden = form.querySelector("input[name=idempotency_key]");
    if (hidden) hidden.value = key;
    evt.detail.timeout = ATTEMPT_TIMEOUT_MS;
  });

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var form = evt.detail.elt;
    if (!isCommentForm(form)) return;
    setBusy(form, true);
    if (form.dataset.attempt === "0") setStatus(form, "Sending…");
  });

  function scheduleRetry(form) {
    var attempt = parseInt(form.dataset.attempt || "0", 10) + 1;
    form.dataset.attempt = String(attempt);
    form.dataset.retrying = "true";
    setBusy(form, true);
    setStatus(form, "Could not reach the server. Retrying…");
    window.setTimeout(function () {
      if (!document.body.contains(form)) return;
      delete form.dataset.retrying;
      var sent = window.htmx.ajax("POST", form.getAttribute("hx-post"), {
        source: form, target: form, swap: "outerHTML",
      });
      // A failed attempt is handled by the listeners above (afterRequest), not by the promise.
      if (sent && typeof sent.catch === "function") sent.catch(function () {});
    }, retryDelay(attempt));
  }

  // Every attempt ends here: a retryable failure is tried again with the same key; any other
  // answer ends the comment's key (a 2xx/4xx form fragment replaces the whole form anyway).
  document.addEventListener("htmx:afterRequest", function (evt) {
    var form = evt.detail.elt;
    if (!isCommentForm(form) || !form.dataset.idempotencyKey) return;
    var status = evt.detail.xhr ? evt.detail.xhr.status : 0;
    if (status === 0 || RETRY_STATUSES.indexOf(status) !== -1) {
      scheduleRetry(form);
      return;
    }
    delete form.dataset.idempotencyKey;
    delete form.dataset.attempt;
    setBusy(form, false);
  });

  // feed.js reports these failures as final ("Try again"); here they are retried, so say so
  // (these listeners run after feed.js's, which is loaded first).
  ["htmx:sendError", "htmx:timeout", "htmx:responseError"].forEach(function (name) {
    document.addEventListener(name, function (evt) {
      var form = evt.detail.elt;
      if (isCommentForm(form) && form.dataset.retrying) setStatus(form, "Could not reach the server. Retrying…");
    });
  });
})();
