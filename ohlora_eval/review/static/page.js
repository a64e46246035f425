(function () {
  "use strict";
  var runId = document.body.getAttribute("data-run-id");
  var prefix = document.body.getAttribute("data-command");
  var allowFailed = document.body.getAttribute("data-allow-failed");
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input.pick-box"));
  var cmd = document.getElementById("command");
  var hint = document.getElementById("hint");
  var count = document.getElementById("count");
  var copy = document.getElementById("copy");
  var clear = document.getElementById("clear");
  var status = document.getElementById("status");

  function picked() {
    return boxes.filter(function (b) { return b.checked; })
      .map(function (b) { return parseInt(b.value, 10); })
      .sort(function (a, b) { return a - b; });
  }
  function update() {
    var cases = picked();
    var failed = boxes.some(function (b) { return b.checked && b.hasAttribute("data-failed"); });
    cmd.textContent = cases.length
      ? prefix + " run_id=" + runId + " cases=[" + cases.join(",") + "]"
        + (failed ? " " + allowFailed : "") : "";
    hint.hidden = cases.length > 0;
    count.textContent = String(cases.length);
    copy.disabled = cases.length === 0;
    clear.disabled = cases.length === 0;
    status.textContent = "";
    boxes.forEach(function (b) {
      var card = document.getElementById("card-" + b.value);
      if (card) { card.classList.toggle("picked", b.checked); }
    });
  }
  function selectCommand() {
    var range = document.createRange();
    range.selectNodeContents(cmd);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  function fallbackCopy() {
    selectCommand();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    status.textContent = ok ? "copied" : "selected: press Ctrl+C";
  }
  copy.addEventListener("click", function () {
    var text = cmd.textContent;
    if (!text) { return; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { status.textContent = "copied"; }, fallbackCopy);
    } else {
      fallbackCopy();
    }
  });
  clear.addEventListener("click", function () {
    boxes.forEach(function (b) { b.checked = false; });
    update();
  });
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  update();
})();
(function () {
  "use strict";
  // Order the cards by identity distance (a run that measured it) or back by review rank;
  // the passed cards and the near misses are each ordered in their own place.
  var select = document.getElementById("order");
  if (!select) { return; }
  function value(card, name) {
    var v = card.getAttribute("data-" + name);
    return v === null || v === "" ? NaN : parseFloat(v);
  }
  function compare(by) {
    return function (a, b) {
      if (by === "rank") { return value(a, "rank") - value(b, "rank"); }
      var x = value(a, "identity"), y = value(b, "identity");
      if (isNaN(x) || isNaN(y)) {  // not measured: last either way
        return (isNaN(x) ? 1 : 0) - (isNaN(y) ? 1 : 0) || value(a, "rank") - value(b, "rank");
      }
      return (by === "identity-asc" ? x - y : y - x) || value(a, "rank") - value(b, "rank");
    };
  }
  function reorder() {
    ["article.card:not(.near)", "article.card.near"].forEach(function (selector) {
      var cards = Array.prototype.slice.call(document.querySelectorAll(selector));
      if (cards.length < 2) { return; }
      var parent = cards[0].parentNode;
      var mark = document.createComment("cards");
      parent.insertBefore(mark, cards[0]);
      cards.sort(compare(select.value)).forEach(function (c) { parent.insertBefore(c, mark); });
      parent.removeChild(mark);
    });
  }
  select.addEventListener("change", reorder);
})();
