// The pane header's "More" menu: download the open conversation as Markdown or JSON, import
// conversations from a file (conversations/transfer_views.py; docs/transfer.md has the formats).

import { csrfToken } from "./api.js";

export class TransferMenu {
  /**
   * @param {{root: HTMLElement, button: HTMLButtonElement, panel: HTMLElement,
   *          exportMarkdown: HTMLAnchorElement, exportJson: HTMLAnchorElement,
   *          importButton: HTMLButtonElement, fileInput: HTMLInputElement, strings: object,
   *          urls: {export: (id: string) => string, import: string, login: string},
   *          selected: () => string | null, onImported: (conversations: object[]) => void,
   *          onError: (text: string) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.button.addEventListener("click", () => (this.panel.hidden ? this.open() : this.close()));
    // A download leaves the page where it is: the menu has done its job.
    this.exportMarkdown.addEventListener("click", () => this.close());
    this.exportJson.addEventListener("click", () => this.close());
    this.importButton.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => this.upload());
    document.addEventListener("click", (event) => {
      if (!this.root.contains(event.target)) this.close();
    });
    this.root.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || this.panel.hidden) return;
      // Handled: the page's own Escape (stop a reply) is not for this key press.
      event.preventDefault();
      this.close();
      this.button.focus();
    });
  }

  open() {
    // Exports are of the conversation open now, which may have changed since the page loaded.
    const id = this.selected();
    for (const [link, format] of [[this.exportMarkdown, "md"], [this.exportJson, "json"]]) {
      link.hidden = !id;
      if (id) link.href = `${this.urls.export(id)}?format=${format}`;
    }
    this.panel.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    this.panel.querySelector(".more-item:not([hidden])")?.focus();
  }

  close() {
    if (this.panel.hidden) return;
    this.panel.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
  }

  async upload() {
    const file = this.fileInput.files[0];
    if (!file || this.importButton.disabled) return;
    const label = this.importButton.textContent;
    this.importButton.disabled = true;
    this.importButton.textContent = this.strings.importing;
    const body = new FormData();
    body.append("file", file);
    try {
      const response = await fetch(this.urls.import, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
        body,
      });
      if (response.status === 401) {
        window.location.assign(this.urls.login);
        return;
      }
      const payload = await response.json().catch(() => null);
      if (!response.ok) throw new Error(payload?.error?.detail || this.strings.request_failed);
      this.close();
      this.onImported(payload.conversations);
    } catch (error) {
      this.close();
      this.onError(error.message || this.strings.request_failed);
    } finally {
      this.importButton.disabled = false;
      this.importButton.textContent = label;
      // The same file chosen again must still fire "change".
      this.fileInput.value = "";
    }
  }
}
