// tidings dashboard: a little script and no more. Pages work without it; with it, parts of a
// page refresh themselves and dangerous buttons ask first.
(function () {
  "use strict";

  // <div data-refresh="5"> is replaced every 5 seconds by the same element of a fresh copy of
  // the page, asked for as a fragment (the server then renders only the changing part).
  function refresh(element) {
    if (!element.hasAttribute("data-refresh")) { return; } // the fresh copy says it is done
    var seconds = Number(element.getAttribute("data-refresh")) || 10;
    var source = element.getAttribute("data-source") || window.location.href;
    window.setTimeout(function () {
      fetch(source, { headers: { "X-Tidings-Fragment": "1" }, credentials: "same-origin" })
        .then(function (answer) {
          if (answer.status === 401) { window.location.reload(); return null; }
          return answer.ok ? answer.text() : null;
        })
        .then(function (html) {
          if (html !== null) {
            var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(element.id);
            if (fresh) { element.replaceWith(fresh); element = fresh; }
          }
          refresh(element);
        })
        .catch(function () { refresh(element); });
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh][id]").forEach(refresh);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
    document.querySelectorAll("a[data-back]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
      });
    });
  });
})();
