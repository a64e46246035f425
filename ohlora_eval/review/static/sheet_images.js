(function () {
  "use strict";
  // Inside MLflow's UI the page is a blob: (or get-artifact) document whose relative image
  // paths do not resolve: each sheet is fetched from the artifact endpoint instead. Only the
  // sheets on screen or within a screen of it are asked for, a few at a time in page order, so
  // the first screenful arrives first (300 requests at once kept the page grey for seconds);
  // the others are asked for as they scroll near. Outside MLflow the images' own src and the
  // browser's loading="lazy" do the same.
  var base = null;
  if (location.protocol === "blob:") {
    var ref = document.referrer;
    base = /^https?:/.test(ref) ? ref : new URL(location.href).origin + "/";
  } else if (/^https?:$/.test(location.protocol) && /get-artifact$/.test(location.pathname)) {
    base = location.href;
  }
  function address(run, path) {
    return new URL("get-artifact?path=" + encodeURIComponent(path)
      + "&run_uuid=" + encodeURIComponent(run), base).href;
  }
  // A sheet's motion preview (an animated GIF) is made and asked for when its box is first
  // opened, so the page's first screen loads no more than before.
  Array.prototype.forEach.call(document.querySelectorAll("details.motion"), function (box) {
    box.addEventListener("toggle", function () {
      if (!box.open || box.querySelector("img")) { return; }
      var run = box.getAttribute("data-run"), path = box.getAttribute("data-path");
      var src = base && run && path ? address(run, path) : box.getAttribute("data-src");
      if (!src) { return; }
      var img = document.createElement("img");
      img.className = "preview";
      img.alt = box.getAttribute("data-alt") || "";
      img.src = src;
      box.appendChild(img);
    });
  });
  if (!base) { return; }
  var sheets = Array.prototype.slice.call(document.querySelectorAll("img[data-run][data-path]"));
  var wanted = [];  // near the screen, not yet asked for
  var active = 0;
  var AT_ONCE = 4;
  var near = null;  // the IntersectionObserver, where the browser has one
  var PLACEHOLDER = "min-height:14em;background:#eee";  // until a sheet arrives: its space kept
  sheets.forEach(function (img) {
    img.removeAttribute("src");  // a relative path that cannot resolve here
    img.removeAttribute("loading");
    img.setAttribute("style", PLACEHOLDER);
  });
  function artifactAddress(img) {
    return address(img.getAttribute("data-run"), img.getAttribute("data-path"));
  }
  function pageOrder(a, b) {
    return a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING ? -1 : 1;
  }
  function next() {
    while (active < AT_ONCE && wanted.length) {
      var img = wanted.shift();
      if (near) { near.unobserve(img); }
      active += 1;
      img.addEventListener("load", done, { once: true });
      img.addEventListener("error", done, { once: true });
      img.src = artifactAddress(img);
    }
  }
  function done(event) {
    event.target.removeAttribute("style");
    active -= 1;
    next();
  }
  if (!("IntersectionObserver" in window)) {  // an old browser: every sheet, in page order
    wanted = sheets;
    next();
    return;
  }
  near = new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      var at = wanted.indexOf(entry.target);
      if (entry.isIntersecting && at < 0) {
        wanted.push(entry.target);
      } else if (!entry.isIntersecting && at >= 0) {  // scrolled past before its turn
        wanted.splice(at, 1);
      }
    });
    wanted.sort(pageOrder);
    next();
  }, { rootMargin: "100% 0px 100% 0px" });  // the screen, and one screen above and below
  sheets.forEach(function (img) { near.observe(img); });
})();
