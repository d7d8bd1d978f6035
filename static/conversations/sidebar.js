// The conversation list: pinned ones on top, the rest newest first, more pages on scroll, and live
// changes from other tabs (conversation.created / updated / deleted).

import { format, iconButton } from "./dom.js";

export class Sidebar {
  /**
   * @param {{root: HTMLElement, pinnedList: HTMLElement, recentList: HTMLElement,
   *          pinnedLabel: HTMLElement, recentLabel: HTMLElement, end: HTMLElement,
   *          strings: object, urlFor: (id: string) => string,
   *          api: {list: (cursor: string) => Promise<object>, update: (id: string, changes: object) => Promise<object>,
   *                remove: (id: string) => Promise<void>},
   *          onOpen: (id: string) => void, onRemoved: (id: string) => void, onError: (error: Error) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.items = new Map();
    this.next = null;
    this.loading = false;
    this.active = null;
    this.editing = null;
    this.root.addEventListener("click", (event) => this.onClick(event));
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) this.loadMore();
    }, { root: this.root }).observe(this.end);
  }

  load(conversations, next) {
    for (const summary of conversations) this.items.set(summary.id, summary);
    this.next = next;
    this.draw();
  }

  async loadMore() {
    if (this.loading || !this.next) return;
    this.loading = true;
    try {
      const page = await this.api.list(this.next);
      for (const summary of page.conversations) {
        if (!this.items.has(summary.id)) this.items.set(summary.id, summary);
      }
      this.next = page.next;
      this.draw();
    } catch (error) {
      this.onError(error);
      return;
    } finally {
      this.loading = false;
    }
    // The observer only reports changes: on a tall screen the end can still be in sight.
    const end = this.end.getBoundingClientRect();
    if (end.top <= this.root.getBoundingClientRect().bottom) this.loadMore();
  }

  /** The first page again, after the socket was down and may have missed changes. */
  async refresh() {
    try {
      const page = await this.api.list("");
      for (const summary of page.conversations) this.upsert(summary);
    } catch (error) {
      this.onError(error);
    }
  }

  get(id) {
    return this.items.get(id) || null;
  }

  titleOf(id) {
    return this.items.get(id)?.title || this.strings.new_conversation;
  }

  setActive(id) {
    this.active = id;
    for (const item of this.root.querySelectorAll(".conversation-item")) {
      const current = item.dataset.id === id;
      item.classList.toggle("active", current);
      const link = item.querySelector(".conversation-link");
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  upsert(summary) {
    const known = this.items.get(summary.id);
    // Events can overtake one another between tabs; the newer state wins.
    if (known && Date.parse(known.updated_at) > Date.parse(summary.updated_at)) return;
    this.items.set(summary.id, { ...known, ...summary });
    this.draw();
  }

  remove(id) {
    if (!this.items.delete(id)) return;
    this.draw();
  }

  draw() {
    // An open rename field would lose what is being typed; the list is redrawn when it closes.
    if (this.editing) return;
    const newestFirst = (a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at);
    const all = [...this.items.values()];
    const pinned = all.filter((summary) => summary.pinned).sort(newestFirst);
    const recent = all.filter((summary) => !summary.pinned).sort(newestFirst);
    this.pinnedList.replaceChildren(...pinned.map((summary) => this.item(summary)));
    this.recentList.replaceChildren(...recent.map((summary) => this.item(summary)));
    this.pinnedLabel.hidden = pinned.length === 0;
    this.recentLabel.hidden = pinned.length === 0 || recent.length === 0;
  }

  item(summary) {
    const s = this.strings;
    const title = summary.title || s.new_conversation;
    const item = document.createElement("li");
    item.className = "conversation-item";
    item.dataset.id = summary.id;
    const link = document.createElement("a");
    link.className = "conversation-link";
    link.href = this.urlFor(summary.id);
    link.textContent = title;
    link.title = title;
    if (summary.id === this.active) {
      item.classList.add("active");
      link.setAttribute("aria-current", "page");
    }
    const actions = document.createElement("div");
    actions.className = "item-actions";
    const pin = iconButton("pin", `${summary.pinned ? s.unpin : s.pin}: ${title}`, "pin");
    pin.setAttribute("aria-pressed", String(summary.pinned));
    actions.append(
      pin,
      iconButton("pencil", `${s.rename}: ${title}`, "rename"),
      iconButton("trash", `${s.delete}: ${title}`, "delete"),
    );
    item.append(link, actions);
    return item;
  }

  onClick(event) {
    const item = event.target.closest(".conversation-item");
    if (!item) return;
    const id = item.dataset.id;
    const link = event.target.closest(".conversation-link");
    if (link) {
      // Modified clicks keep their browser meaning (new tab, new window).
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      this.onOpen(id);
      return;
    }
    const button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("pin")) this.togglePin(id);
    else if (button.classList.contains("rename")) this.startRename(item, id);
    else if (button.classList.contains("delete")) this.confirmDelete(id);
  }

  async togglePin(id) {
    const summary = this.items.get(id);
    if (!summary) return;
    await this.change(id, { pinned: !summary.pinned });
  }

  async change(id, changes) {
    try {
      const { conversation } = await this.api.update(id, changes);
      this.upsert(conversation);
      return conversation;
    } catch (error) {
      this.onError(error);
      return null;
    }
  }

  startRename(item, id) {
    if (this.editing) return;
    const link = item.querySelector(".conversation-link");
    const input = document.createElement("input");
    input.type = "text";
    input.className = "rename-input";
    input.value = this.items.get(id)?.title || "";
    input.maxLength = this.titleMaxChars;
    input.setAttribute("aria-label", this.strings.rename_label);
    this.editing = id;
    link.replaceWith(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      this.editing = null;
      const title = input.value.trim();
      if (save && title !== (this.items.get(id)?.title || "")) await this.change(id, { title });
      this.draw();
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.isComposing) {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  async confirmDelete(id) {
    const title = this.titleOf(id);
    if (!window.confirm(format(this.strings.confirm_delete, { title }))) return;
    try {
      await this.api.remove(id);
    } catch (error) {
      this.onError(error);
      return;
    }
    this.remove(id);
    this.onRemoved(id);
  }
}

/** The sidebar as a drawer on narrow screens (chat.css hides it there until opened). */
export class Drawer {
  constructor({ chat, sidebar, backdrop, openButton, closeButton }) {
    Object.assign(this, { chat, sidebar, backdrop, openButton });
    openButton.addEventListener("click", () => this.open());
    backdrop.addEventListener("click", () => this.close());
    closeButton.addEventListener("click", () => {
      this.close();
      openButton.focus();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
    });
  }

  open() {
    this.chat.classList.add("sidebar-open");
    this.backdrop.hidden = false;
    this.openButton.setAttribute("aria-expanded", "true");
    this.sidebar.querySelector(".new-chat")?.focus();
  }

  close() {
    if (!this.chat.classList.contains("sidebar-open")) return;
    this.chat.classList.remove("sidebar-open");
    this.backdrop.hidden = true;
    this.openButton.setAttribute("aria-expanded", "false");
  }
}
