// Request log: leave filters that are blank out of the URL htmx requests and pushes.
(function () {
  document.body.addEventListener("htmx:configRequest", function (event) {
    if (!event.detail.elt.matches("form.filters")) return;
    var form = event.detail.formData, blank = [];
    form.forEach(function (value, key) { if (value === "") blank.push(key); });
    blank.forEach(function (key) { form.delete(key); });
  });
})();
