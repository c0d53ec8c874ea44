// Live board: htmx's ws extension swaps each incoming card by id; this only shows
// whether the socket is up, so a stale board never looks live.
(function () {
  var badge = document.getElementById("board-connection");
  if (!badge) return;
  function show(text, state) {
    badge.textContent = text;
    badge.className = "badge " + state;
  }
  document.body.addEventListener("htmx:wsOpen", function () { show("live", "live"); });
  document.body.addEventListener("htmx:wsClose", function () { show("reconnecting…", "offline"); });
})();
