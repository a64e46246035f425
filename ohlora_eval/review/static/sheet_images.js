(function () {
  "use strict";
  // Inside MLflow's UI the page is a blob: (or get-artifact) document whose relative image
  // paths do not resolve: each sheet is fetched from the artifact endpoint instead, and only
  // when its card comes near the screen (the first screenful first; 300 sheets at once
  // kept the page grey for seconds).
  var base = null;
  if (location.protocol === "blob:") {
    var ref = document.referrer;
    base = /^https?:/.test(ref) ? ref : new URL(location.href).origin + "/";
  } else if (/^https?:$/.test(location.protocol) && /get-artifact$/.test(location.pathname)) {
    base = location.href;
  }
  if (!base) { return; }
  function load(img) {
    img.src = new URL("get-artifact?path=" + encodeURIComponent(img.getAttribute("data-path"))
      + "&run_uuid=" + encodeURIComponent(img.getAttribute("data-run")), base).href;
  }
  var images = document.querySelectorAll("img[data-run][data-path]");
  if (!("IntersectionObserver" in window)) {
    Array.prototype.forEach.call(images, load);
    return;
  }
  var watcher = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) {
        watcher.unobserve(entry.target);
        load(entry.target);
      }
    });
  }, { rootMargin: "800px 0px" });
  Array.prototype.forEach.call(images, function (img) {
    img.removeAttribute("loading");
    watcher.observe(img);
  });
})();
