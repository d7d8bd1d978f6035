// The theme switch in the page header: the page changes at once and the choice is saved in the
// background. Without this script the switch is a plain form (base.html).
//
// The Django admin keeps its own choice in localStorage ("theme": auto, light or dark) and reads it on
// each admin page; writing the member's choice there makes the admin follow it.

const ADMIN_NAMES = { system: "auto", light: "light", dark: "dark" };

function apply(theme) {
  document.documentElement.dataset.theme = theme;
  // The settings page's own select must not post the old choice back.
  for (const select of document.querySelectorAll('select[name="theme"]')) select.value = theme;
  try {
    localStorage.setItem("theme", ADMIN_NAMES[theme] ?? "auto");
  } catch {
    // Storage can be disabled; only the admin's copy of the choice is lost.
  }
}

async function save(form) {
  const response = await fetch(form.action, {
    method: "POST",
    body: new FormData(form),
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  // An ended session answers with the login page, after a redirect.
  if (!response.ok || response.redirected) throw new Error(`theme not saved: ${response.status}`);
}

const form = document.getElementById("theme-switch");
if (form) {
  const select = form.elements.theme;
  let saved = select.value;
  apply(saved);
  select.addEventListener("change", async () => {
    const chosen = select.value;
    apply(chosen);
    try {
      await save(form);
      saved = chosen;
    } catch (error) {
      console.warn(error);
      // Show what is stored, unless another choice was made meanwhile.
      if (select.value === chosen) apply(saved);
    }
  });
}
