// Model route form: add and remove target rows without a reload (a <template> row the
// server rendered), show each provider's own model as the placeholder of a blank
// upstream model, and the traffic share each weight implies. The server validates all.
(function () {
  function form(el) { return el && el.closest("#route-form"); }

  function refresh(routeForm) {
    if (!routeForm) return;
    var rows = routeForm.querySelectorAll("#route-targets tr.target-row");
    var total = 0;
    rows.forEach(function (row) {
      var w = parseInt(row.querySelector("[name=target_weight]").value, 10);
      if (w > 0 && w <= 100) total += w;
    });
    rows.forEach(function (row) {
      var select = row.querySelector("[name=target_provider]");
      var option = select.options[select.selectedIndex];
      var model = row.querySelector("[name=target_model]");
      model.placeholder = option && option.dataset.model ? option.dataset.model + " (the provider's model)" : "the provider's model";
      var w = parseInt(row.querySelector("[name=target_weight]").value, 10);
      var cell = row.querySelector("[data-share]");
      if (!(w >= 0 && w <= 100)) cell.textContent = "—";
      else if (w === 0) cell.textContent = "standby";
      else cell.textContent = Math.round((w / total) * 100) + "%";
    });
    var add = routeForm.querySelector("[data-add-target]");
    if (add) add.disabled = rows.length >= parseInt(routeForm.dataset.maxTargets || "32", 10);
  }

  document.addEventListener("click", function (event) {
    var add = event.target.closest("[data-add-target]");
    if (add) {
      var routeForm = form(add);
      var template = routeForm.querySelector("#route-target-template");
      var body = routeForm.querySelector("#route-targets");
      body.appendChild(template.content.cloneNode(true));
      body.lastElementChild.querySelector("select").focus();
      refresh(routeForm);
      return;
    }
    var remove = event.target.closest("[data-remove-target]");
    if (remove) {
      var owner = form(remove);
      var row = remove.closest("tr");
      if (owner.querySelectorAll("#route-targets tr.target-row").length > 1) {
        var next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        next.querySelector("select").focus();
      } else {
        // Keep one row to fill in; an all-blank row is no target.
        row.querySelector("select").value = "";
        row.querySelector("[name=target_model]").value = "";
      }
      refresh(owner);
    }
  });

  ["input", "change"].forEach(function (type) {
    document.addEventListener(type, function (event) {
      if (event.target.closest("#route-targets")) refresh(form(event.target));
    });
  });

  function init() { refresh(document.getElementById("route-form")); }
  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:load", init); // the form re-rendered with errors
})();
