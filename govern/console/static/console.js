// govern console: progressive enhancement only (every page works without it); vendored, no CDN.
// CSP forbids inline handlers, so behaviour is attached here.
document.addEventListener("DOMContentLoaded", () => {
  // Ask before a button that writes a policy file (data-confirm="...").
  document.querySelectorAll("button[data-confirm]").forEach((button) => {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  });
  // Changing a select in a GET filter form applies it at once.
  document.querySelectorAll("form.filters[method=get] select").forEach((select) => {
    select.addEventListener("change", () => select.form.requestSubmit());
  });
});
