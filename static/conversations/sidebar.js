// The conversation list: pinned ones on top, the rest newest first, more pages on scroll, and live
// changes from other tabs (conversation.created / updated / deleted). Typing in the search box
// shows the conversations whose title or messages match instead, newest first.

import { format, iconButton } from "./dom.js";

const SEARCH_DELAY_MS = 200;

export class Sidebar {
  /**
   * @param {{root: HTMLElement, pinnedList: HTMLElement, recentList: HTMLElement,
   *          pinnedLabel: HTMLElement, recentLabel: HTMLElement, end: HTMLElement,
   *          searchInput: HTMLInputElement, resultsList: HTMLElement, searchStatus: HTMLElement,
   *          strings: object, urlFor: (id: string) => string,
   *          api: {list: (cursor: string, query?: string) => Promise<object>,
   *                update: (id: string, changes: object) => Promise<object>, remove: (id: string) => Promise<void>},
   *          reveal: () => void, onOpen: (id: string) => void, onRemoved: (id: string) => void,
   *          onError: (error: Error) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.items = new Map();
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

  load(conversations, next) {
    for (const summary of conversations) this.items.set(summary.id, summary);
    this.next = next;
    this.draw();
  }

  async loadMore() {
    if (this.results) return this.loadMoreResults();
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
      for (const summary of page.conversations) this.upsert(summary);
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

  remove(id) {
    const listed = this.items.delete(id);
    const found = this.results?.items.delete(id) ?? false;
    if (!listed && !found) return;
    this.draw();
  }

  draw() {
    // An open rename field would lose what is being typed; the list is redrawn when it closes.
    if (this.editing) return;
    const searching = this.results !== null;
    this.pinnedList.hidden = searching;
    this.recentList.hidden = searching;
    this.resultsList.hidden = !searching;
    if (searching) {
      this.drawResults();
      return;
    }
    this.searchStatus.textContent = "";
    const newestFirst = (a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at);
    const all = [...this.items.values()];
    const pinned = all.filter((summary) => summary.pinned).sort(newestFirst);
    const recent = all.filter((summary) => !summary.pinned).sort(newestFirst);
    this.pinnedList.replaceChildren(...pinned.map((summary) => this.item(summary)));
    this.recentList.replaceChildren(...recent.map((summary) => this.item(summary)));
    this.pinnedLabel.hidden = pinned.length === 0;
    this.recentLabel.hidden = pinned.length === 0 || recent.length === 0;
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
    if (this.editing) return;
    const link = item.querySelector(".conversation-link");
    const input = document.createElement("input");
    input.type = "text";
    input.className = "rename-input";
    input.value = this.get(id)?.title || "";
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
      if (save && title !== (this.get(id)?.title || "")) await this.change(id, { title });
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
