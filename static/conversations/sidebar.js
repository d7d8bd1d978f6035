// The conversation list: pinned ones on top, then the member's folders (collapsible, each with its
// conversations newest first), then the rest newest first, more pages on scroll, and live changes
// from other tabs (conversation.* and folder.* events). Typing in the search box shows the
// conversations whose title or messages match instead, newest first. A delete happens at once; a
// toast offers to undo it.

import { iconButton } from "./dom.js";
import { Folders } from "./folders.js";

const SEARCH_DELAY_MS = 200;
const newestFirst = (a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at);

export class Sidebar {
  /**
   * @param {{root: HTMLElement, pinnedList: HTMLElement, recentList: HTMLElement,
   *          pinnedLabel: HTMLElement, recentLabel: HTMLElement, end: HTMLElement,
   *          folders: {groups: HTMLElement, head: HTMLElement, newButton: HTMLElement, nameMaxChars: number},
   *          searchInput: HTMLInputElement, resultsList: HTMLElement, searchStatus: HTMLElement,
   *          strings: object, urlFor: (id: string) => string, toast: import("./toast.js").Toast,
   *          api: ReturnType<typeof import("./api.js").conversationApi>,
   *          reveal: () => void, onOpen: (id: string) => void, onRemoved: (id: string) => void,
   *          onRestored: (id: string, wasOpen: boolean) => void, onError: (error: Error) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.items = new Map();
    this.folders = new Folders({ ...options.folders, sidebar: this });
    this.next = null;
    this.loading = false;
    this.active = null;
    this.editing = null;
    // While a search is shown: {query, items, next}, the results as the list keeps its own.
    this.results = null;
    this.searchTimer = null;
    this.searchTicket = 0;
    this.root.addEventListener("click", (event) => this.onClick(event));
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) this.loadMore();
    }, { root: this.root }).observe(this.end);
    this.listenForSearch();
  }

  load(conversations, next, folders) {
    this.folders.replace(folders);
    this.add(conversations);
    this.next = next;
    this.draw();
  }

  /** Conversations of a later page: those already known are as fresh or fresher. */
  add(conversations) {
    for (const summary of conversations) {
      if (!this.items.has(summary.id)) this.items.set(summary.id, summary);
    }
  }

  async loadMore() {
    if (this.results) return this.loadMoreResults();
    if (this.loading || !this.next) return;
    this.loading = true;
    try {
      const page = await this.api.list(this.next);
      this.add(page.conversations);
      this.next = page.next;
      this.draw();
    } catch (error) {
      this.onError(error);
      return;
    } finally {
      this.loading = false;
    }
    this.fillView();
  }

  /** More pages while the end of the list is in sight: the observer only reports changes. */
  fillView() {
    const end = this.end.getBoundingClientRect();
    if (end.top <= this.root.getBoundingClientRect().bottom) this.loadMore();
  }

  /** The first page again, after the socket was down and may have missed changes. */
  async refresh() {
    try {
      const page = await this.api.list("");
      // Folders changed while the socket was down are as the server has them now.
      this.folders.replace(page.folders);
      for (const summary of page.conversations) this.upsert(summary);
      this.draw();
    } catch (error) {
      this.onError(error);
    }
    if (this.results) this.search(this.results.query, { again: true });
  }

  get(id) {
    return this.items.get(id) || this.results?.items.get(id) || null;
  }

  titleOf(id) {
    return this.get(id)?.title || this.strings.new_conversation;
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

  /** This conversation's link takes the focus; when it is not in sight, the first of the list. */
  focusItem(id) {
    const link = this.root.querySelector(`.conversation-item[data-id="${CSS.escape(id)}"] .conversation-link`);
    link?.focus();
    if (link && document.activeElement === link) return;
    this.root.querySelector(".conversation-link")?.focus();
  }

  upsert(summary) {
    const known = this.items.get(summary.id);
    // Events can overtake one another between tabs; the newer state wins.
    if (known && Date.parse(known.updated_at) > Date.parse(summary.updated_at)) return;
    this.items.set(summary.id, { ...known, ...summary });
    // A result keeps its snippet; whether it still matches is known at the next search.
    const found = this.results?.items.get(summary.id);
    if (found) this.results.items.set(summary.id, { ...found, ...summary });
    this.draw();
  }

  /** Out of a folder that is gone. */
  unfile(folderId) {
    for (const [id, summary] of this.items) {
      if (summary.folder === folderId) this.items.set(id, { ...summary, folder: null });
    }
  }

  remove(id) {
    const listed = this.items.delete(id);
    const found = this.results?.items.delete(id) ?? false;
    if (!listed && !found) return;
    this.draw();
  }

  draw() {
    // An open rename field would lose what is being typed; the list is redrawn when it closes.
    if (this.editing) return;
    // The rows are drawn anew; the control that had the focus (a row's link or button) gets it back,
    // also when the redraw comes from an event of another tab or process just after an Undo.
    const focused = this.root.contains(document.activeElement) ? document.activeElement : null;
    const focusedId = focused?.closest(".conversation-item")?.dataset.id;
    const focusedPart = focused?.classList.contains("conversation-link") ? "conversation-link" : focused?.classList[1];
    this.drawRows();
    if (focusedId === undefined || document.activeElement !== document.body) return;
    const row = this.root.querySelector(`.conversation-item[data-id="${CSS.escape(focusedId)}"]`);
    (focusedPart && row?.querySelector(`.${CSS.escape(focusedPart)}`))?.focus();
  }

  drawRows() {
    const searching = this.results !== null;
    this.pinnedList.hidden = searching;
    this.recentList.hidden = searching;
    this.resultsList.hidden = !searching;
    if (searching) {
      this.folders.draw(new Map(), true);
      this.drawResults();
      return;
    }
    this.searchStatus.textContent = "";
    // Pinned ones stay on top wherever they are filed; one in a folder that is gone is in "Recent".
    const pinned = [];
    const recent = [];
    const filed = new Map(this.folders.sorted().map((folder) => [folder.id, []]));
    for (const summary of [...this.items.values()].sort(newestFirst)) {
      if (summary.pinned) pinned.push(summary);
      else (filed.get(summary.folder) ?? recent).push(summary);
    }
    this.pinnedList.replaceChildren(...pinned.map((summary) => this.item(summary)));
    this.folders.draw(filed, false);
    this.recentList.replaceChildren(...recent.map((summary) => this.item(summary)));
    this.pinnedLabel.hidden = pinned.length === 0;
    this.recentLabel.hidden = recent.length === 0;
  }

  drawResults() {
    const { query, items } = this.results;
    const found = [...items.values()].sort((a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at));
    this.resultsList.replaceChildren(...found.map((summary) => this.item(summary, query)));
    this.pinnedLabel.hidden = true;
    this.recentLabel.hidden = true;
    this.searchStatus.textContent = found.length ? "" : this.strings.no_matches;
  }

  /** A conversation of the list; with a query, a search result: title and snippet, matches marked. */
  item(summary, query = "") {
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
    if (query) {
      link.classList.add("search-result");
      link.replaceChildren(marked("result-title", title, query));
      if (summary.snippet) link.append(marked("result-snippet", summary.snippet, query));
    }
    if (summary.id === this.active) {
      item.classList.add("active");
      link.setAttribute("aria-current", "page");
    }
    const actions = document.createElement("div");
    actions.className = "item-actions";
    const pin = iconButton("pin", `${summary.pinned ? s.unpin : s.pin}: ${title}`, "pin");
    pin.setAttribute("aria-pressed", String(summary.pinned));
    const move = iconButton("folder-move", `${s.move_to}: ${title}`, "move");
    move.setAttribute("aria-haspopup", "menu");
    move.setAttribute("aria-expanded", "false");
    actions.append(
      pin,
      move,
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
    else if (button.classList.contains("move")) this.folders.openMoveMenu(button, this.get(id));
    else if (button.classList.contains("rename")) this.startRename(item, id);
    // A click from the keyboard (Enter, Space) has no pointer detail.
    else if (button.classList.contains("delete")) this.delete(id, { byKeyboard: event.detail === 0 });
  }

  async togglePin(id) {
    const summary = this.get(id);
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
    const current = this.get(id)?.title || "";
    this.editInPlace(item.querySelector(".conversation-link"), {
      value: current,
      maxLength: this.titleMaxChars,
      label: this.strings.rename_label,
      save: async (title) => {
        if (title !== current) await this.change(id, { title });
      },
      refocus: () => this.focusItem(id),
    });
  }

  /**
   * Put a text field in place of `target` until Enter or a click elsewhere saves it (`save` gets the
   * trimmed text) or Esc drops it; the list is redrawn after. `refocus` then places the focus,
   * which the field took with it, if the field still had it. False when another field is open.
   */
  editInPlace(target, { value, maxLength, label, save, refocus = null }) {
    if (this.editing) return false;
    const input = document.createElement("input");
    input.type = "text";
    input.className = "rename-input";
    input.value = value;
    input.maxLength = maxLength;
    input.setAttribute("aria-label", label);
    this.editing = true;
    target.replaceWith(input);
    input.focus();
    input.select();
    let done = false;
    const finish = async (keep) => {
      if (done) return;
      done = true;
      const hadFocus = document.activeElement === input;
      this.editing = null;
      if (keep) await save(input.value.trim());
      this.draw();
      if (hadFocus) refocus?.();
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
    return true;
  }

  /** Delete at once, with an Undo in a toast for a few seconds (the server keeps it an hour). */
  async delete(id, { byKeyboard = false } = {}) {
    const summary = this.get(id);
    const wasOpen = this.active === id;
    // Gone from this tab before the server answers: its conversation.deleted, which can arrive
    // first, then concerns a conversation this tab no longer shows.
    this.remove(id);
    this.onRemoved(id);
    try {
      await this.api.remove(id);
    } catch (error) {
      if (summary) this.upsert(summary);
      this.onError(error);
      return;
    }
    this.toast.show(this.strings.conversation_deleted, {
      action: this.strings.undo,
      onAction: () => this.restore(id, wasOpen),
      // The button that had the focus is gone; from the keyboard, Undo is the next thing to reach.
      focus: byKeyboard,
      returnFocus: () => this.focusItem(id),
    });
  }

  async restore(id, wasOpen) {
    try {
      const { conversation } = await this.api.restore(id);
      this.upsert(conversation);
    } catch (error) {
      this.onError(error);
      return;
    }
    this.onRestored(id, wasOpen);
  }

  // --- Search ---------------------------------------------------------------------------------

  listenForSearch() {
    const input = this.searchInput;
    const later = () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.search(input.value), SEARCH_DELAY_MS);
    };
    // While an input method composes (pinyin for 北京), the box holds letters not meant as a search.
    input.addEventListener("input", (event) => {
      if (!event.isComposing) later();
    });
    input.addEventListener("compositionend", later);
    input.addEventListener("keydown", (event) => {
      // An empty box lets Esc through, to close the drawer on a phone.
      if (event.key !== "Escape" || event.isComposing || input.value === "") return;
      event.preventDefault();
      event.stopPropagation();
      input.value = "";
      this.search("");
    });
    document.addEventListener("keydown", (event) => {
      if (!isSearchShortcut(event)) return;
      event.preventDefault();
      // On a phone the box is in the closed drawer, and a hidden element takes no focus.
      if (getComputedStyle(input).visibility === "hidden") this.reveal();
      input.focus();
      input.select();
    });
  }

  /** Show the conversations matching `value`, or the whole list again when it is blank. */
  async search(value, { again = false } = {}) {
    clearTimeout(this.searchTimer);
    const query = value.trim();
    // Every call outdates the answers still on their way: only the latest query's may be shown.
    const ticket = ++this.searchTicket;
    this.root.removeAttribute("aria-busy");
    if (!again && query === (this.results?.query ?? "")) return;
    if (!query) {
      this.results = null;
      this.draw();
      this.fillView();
      return;
    }
    this.root.setAttribute("aria-busy", "true");
    try {
      const page = await this.api.list("", query);
      if (ticket !== this.searchTicket) return;
      const items = new Map(page.conversations.map((found) => [found.id, found]));
      this.results = { query, items, next: page.next };
      this.root.scrollTop = 0;
      this.draw();
      this.fillView();
    } catch (error) {
      if (ticket === this.searchTicket) this.onError(error);
    } finally {
      if (ticket === this.searchTicket) this.root.removeAttribute("aria-busy");
    }
  }

  async loadMoreResults() {
    const results = this.results;
    if (this.loading || !results.next) return;
    this.loading = true;
    try {
      const page = await this.api.list(results.next, results.query);
      for (const found of page.conversations) {
        if (!results.items.has(found.id)) results.items.set(found.id, found);
      }
      results.next = page.next;
    } catch (error) {
      this.onError(error);
      return;
    } finally {
      this.loading = false;
    }
    if (this.results !== results) return;
    this.draw();
    this.fillView();
  }
}

/** Ctrl+K, or Cmd+K on a Mac; the K key wherever the layout puts it when it types no Latin letter. */
function isSearchShortcut(event) {
  if (!(event.ctrlKey || event.metaKey) || event.altKey || event.shiftKey) return false;
  // Chrome's autofill sends keydown events without a key.
  const key = (event.key || "").toLowerCase();
  return key === "k" || (!/^[a-z]$/.test(key) && event.code === "KeyK");
}

/** A span of plain text with each case-insensitive occurrence of `query` in a <mark>. */
function marked(className, text, query) {
  const span = document.createElement("span");
  span.className = className;
  const words = query.split(/\s+/).join(" ").replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let last = 0;
  for (const match of text.matchAll(new RegExp(words, "giu"))) {
    const mark = document.createElement("mark");
    mark.textContent = match[0];
    span.append(text.slice(last, match.index), mark);
    last = match.index + match[0].length;
  }
  span.append(text.slice(last));
  return span;
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
