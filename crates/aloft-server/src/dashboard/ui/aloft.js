// Aloft dashboard: the little script the pages use; every page also works without it.
// - The theme button switches light / dark / the system's choice, remembered in this browser.
// - An element with data-refresh="NAME" (and data-every="SECONDS") is replaced every few seconds
//   by the fragment NAME of the same page (?fragment=NAME), so live figures stay current.
(function () {
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem("aloft-theme"); } catch (e) {}
  if (saved === "light" || saved === "dark") root.setAttribute("data-theme", saved);
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme");
    if (button) {
      var label = function () {
        var t = root.getAttribute("data-theme") || "system";
        button.textContent = "Theme: " + t;
      };
      label();
      button.hidden = false;
      button.addEventListener("click", function () {
        var t = root.getAttribute("data-theme");
        var next = t === "light" ? "dark" : t === "dark" ? null : "light";
        if (next) root.setAttribute("data-theme", next); else root.removeAttribute("data-theme");
        try { if (next) localStorage.setItem("aloft-theme", next); else localStorage.removeItem("aloft-theme"); } catch (e) {}
        label();
      });
    }
    var live = document.querySelectorAll("[data-refresh]");
    Array.prototype.forEach.call(live, function (el) {
      var every = Math.max(5, parseInt(el.getAttribute("data-every") || "15", 10)) * 1000;
      var name = el.getAttribute("data-refresh");
      setInterval(function () {
        if (document.hidden) return;
        var url = location.pathname + "?fragment=" + encodeURIComponent(name);
        fetch(url, { credentials: "same-origin", headers: { "x-aloft-fragment": name } })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html !== null) el.innerHTML = html; })
          .catch(function () {});
      }, every);
    });
  });
})();
