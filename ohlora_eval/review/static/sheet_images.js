(function () {
  "use strict";
  // Inside MLflow's UI the page is a blob: (or get-artifact) document whose relative image
  // paths do not resolve: each sheet is fetched from the artifact endpoint instead, a few at
  // a time in page order, so the first screenful arrives first (300 requests at once kept
  // the page grey for seconds).
  var base = null;
  if (location.protocol === "blob:") {
    var ref = document.referrer;
    base = /^https?:/.test(ref) ? ref : new URL(location.href).origin + "/";
  } else if (/^https?:$/.test(location.protocol) && /get-artifact$/.test(location.pathname)) {
    base = location.href;
  }
  if (!base) { return; }
  var queue = Array.prototype.slice.call(document.querySelectorAll("img[data-run][data-path]"));
  var active = 0;
  var AT_ONCE = 4;
  function next() {
    while (active < AT_ONCE && queue.length) {
      var img = queue.shift();
      active += 1;
      img.removeAttribute("loading");
      img.addEventListener("load", done, { once: true });
      img.addEventListener("error", done, { once: true });
      img.src = new URL("get-artifact?path=" + encodeURIComponent(img.getAttribute("data-path"))
        + "&run_uuid=" + encodeURIComponent(img.getAttribute("data-run")), base).href;
    }
  }
  function done() {
    active -= 1;
    next();
  }
  next();
})();
