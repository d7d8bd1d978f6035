// The chat's "Share…" dialog: make a read-only link to the open conversation, list its links, update
// a link's snapshot, copy its address again or revoke it (conversations/share_views.py). Only a link
// that still works comes with its address (`path`), so revoked and expired ones offer no copy.

import { requestJSON } from "./api.js";
import { copyField, format } from "./dom.js";

export class ShareDialog {
  /**
   * @param {{data: object, strings: object, openButton: HTMLButtonElement, menuButton: HTMLElement,
   *          onOpen: () => void, selected: () => string | null}} options
   */
  constructor({ data, strings, openButton, menuButton, onOpen, selected }) {
    const $ = (id) => document.getElementById(id);
    this.data = data;
    this.strings = strings;
    this.selected = selected;
    this.openButton = openButton;
    this.dialog = $("share-dialog");
    this.createButton = $("share-create");
    this.expiry = $("share-expiry");
    this.result = $("share-result");
    this.url = $("share-url");
    this.status = $("share-status");
    this.error = $("share-error");
    this.list = $("share-links");
    // Only a conversation that exists can be shared; the menu shows the entry then.
    menuButton.addEventListener("click", () => {
      openButton.hidden = !this.selected();
    });
    openButton.addEventListener("click", () => {
      onOpen();
      this.open();
    });
    $("share-close").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || event.isComposing) return;
      // Handled here: the page's own Escape stops a reply being written, which is not what was meant.
      event.preventDefault();
      this.dialog.close();
    });
    // The menu entry is hidden once the menu closes: the focus goes back to the menu's button.
    this.dialog.addEventListener("close", () => menuButton.focus());
    this.createButton.addEventListener("click", () => this.create());
    $("share-copy").addEventListener("click", () => this.copy());
    this.list.addEventListener("click", (event) => this.onListClick(event));
  }

  request(url, options = {}) {
    return requestJSON(url, { ...options, loginUrl: this.data.urls.login, failed: this.strings.request_failed });
  }

  sharesUrl(id) {
    return this.data.urls.conversation_shares.replace(this.data.any_id, id);
  }

  linkUrl(template, linkId) {
    return template.replace(/\/0\/(snapshot\/)?$/, (match, tail) => `/${linkId}/${tail || ""}`);
  }

  async open() {
    this.result.hidden = true;
    this.url.value = "";
    this.status.textContent = "";
    this.showError("");
    this.dialog.showModal();
    await this.load();
  }

  async load() {
    const id = this.selected();
    if (!id) return;
    try {
      const payload = await this.request(this.sharesUrl(id));
      this.render(payload.shares);
    } catch (error) {
      this.showError(error.message);
    }
  }

  render(shares) {
    const s = this.strings;
    if (!shares.length) {
      const empty = document.createElement("li");
      empty.textContent = s.share_none;
      this.list.replaceChildren(empty);
      return;
    }
    this.list.replaceChildren(
      ...shares.map((share) => {
        const item = document.createElement("li");
        item.dataset.share = String(share.id);
        const meta = document.createElement("span");
        meta.className = "share-meta";
        const words = [
          share.audience === "team" ? s.share_team : s.share_anyone,
          format(s.share_messages, { count: share.messages }),
          share.expires_at
            ? format(s.share_expires, { date: new Date(share.expires_at).toLocaleString() })
            : s.share_never_expires,
          new Date(share.created_at).toLocaleString(),
        ];
        if (share.state !== "active") words.push(s[`share_state_${share.state}`]);
        meta.textContent = words.join(" · ");
        item.append(meta);
        if (share.state === "active") {
          const actions = [["update", s.share_update], ["revoke", s.share_revoke]];
          if (share.path) {
            item.dataset.url = new URL(share.path, window.location.origin).href;
            actions.unshift(["copy", s.share_copy_link]);
          }
          for (const [action, label] of actions) {
            const button = document.createElement("button");
            button.type = "button";
            button.dataset.action = action;
            button.textContent = label;
            item.append(button);
          }
        }
        return item;
      }),
    );
  }

  async create() {
    const id = this.selected();
    if (!id || this.createButton.disabled) return;
    this.createButton.disabled = true;
    this.showError("");
    const audience = this.dialog.querySelector("input[name=share-audience]:checked")?.value || "anyone";
    const days = this.expiry.value ? Number(this.expiry.value) : null;
    try {
      const payload = await this.request(this.sharesUrl(id), {
        method: "POST",
        body: { audience, expires_in_days: days },
      });
      this.url.value = payload.url;
      this.result.hidden = false;
      this.status.textContent = this.strings.share_created;
      this.url.select();
      await this.load();
    } catch (error) {
      this.showError(error.message);
    } finally {
      this.createButton.disabled = false;
    }
  }

  async onListClick(event) {
    const button = event.target.closest("button[data-action]");
    const item = button?.closest("[data-share]");
    if (!button || !item || button.disabled) return;
    if (button.dataset.action === "copy") {
      this.url.value = item.dataset.url;
      this.result.hidden = false;
      await this.copy();
      return;
    }
    button.disabled = true;
    this.showError("");
    try {
      if (button.dataset.action === "revoke") {
        await this.request(this.linkUrl(this.data.urls.share_detail, item.dataset.share), { method: "DELETE" });
        this.status.textContent = this.strings.share_revoked;
      } else {
        await this.request(this.linkUrl(this.data.urls.share_snapshot, item.dataset.share), { method: "POST" });
        this.status.textContent = this.strings.share_updated;
      }
      await this.load();
    } catch (error) {
      button.disabled = false;
      this.showError(error.message);
    }
  }

  async copy() {
    if (await copyField(this.url)) this.status.textContent = this.strings.copied;
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }
}
