// Live board: htmx's ws extension swaps each incoming card by id and reconnects on its
// own after an abnormal close (server restart, network drop); the fresh snapshot the
// server sends on connect brings every card up to date. This only keeps the badge
// honest, so a stale board never looks live.
(function () {
  var badge = document.getElementById("board-connection");
  if (!badge) return;
  function show(text, state) {
    badge.textContent = text;
    badge.className = "badge " + state;
  }
  document.body.addEventListener("htmx:wsOpen", function () { show("live", "live"); });
  document.body.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail && event.detail.event ? event.detail.event.code : 0;
    if (code === 4403) show("access removed: reload the page", "offline");
    else show("reconnecting…", "offline");
  });
})();
