// The member's folders in the sidebar, between "Pinned" and "Recent": each a group that opens and
// closes, with its conversations newest first (its first page comes with the list, "Show more"
// fetches the next), renamed and deleted in place (its conversations stay, out of any folder), and
// "Move to…" on every conversation. Other tabs' changes arrive as folder.* events (chat.js).
// The conversation rows themselves, their data and the redrawing belong to the Sidebar.

import { icon, iconButton } from "./dom.js";
import { PopupMenu } from "./menu.js";

// Which folders the member closed, kept in this browser: a folder is open until closed.
const COLLAPSED_KEY = "chatsite.collapsedFolders";

export class Folders {
  /**
   * @param {{sidebar: import("./sidebar.js").Sidebar, groups: HTMLElement, head: HTMLElement,
   *          newButton: HTMLElement, nameMaxChars: number}} options
   */
  constructor(options) {
    Object.assign(this, options);
    // id -> {id, name, next}: `next` is the cursor of the folder's next page, null when all are here.
    this.byId = new Map();
    this.collapsed = readCollapsed();
    this.moveMenu = new PopupMenu(this.groups.closest("aside") ?? document.body);
    this.loading = false;
    this.groups.addEventListener("click", (event) => this.onClick(event));
    this.newButton.addEventListener("click", () => this.startNew());
  }

  get strings() {
    return this.sidebar.strings;
  }

  get api() {
    return this.sidebar.api;
  }

  /** All the folders as the server listed them (the first page of the list). */
  replace(folders) {
    this.byId = new Map(folders.map((folder) => [folder.id, folder]));
  }

  has(id) {
    return this.byId.has(id);
  }

  sorted() {
    return [...this.byId.values()].sort((a, b) => a.name.localeCompare(b.name) || a.id - b.id);
  }

  upsert(folder) {
    this.byId.set(folder.id, { next: null, ...this.byId.get(folder.id), ...folder });
    this.sidebar.draw();
  }

  /** The folder is gone; its conversations stay, out of any folder (as the server moved them). */
  remove(id) {
    if (!this.byId.delete(id)) return;
    this.sidebar.unfile(id);
    this.setCollapsed(id, false);
    this.sidebar.draw();
  }

  /** @param {Map<number, object[]>} filed each folder's conversations, newest first */
  draw(filed, hidden) {
    this.head.hidden = hidden;
    this.groups.hidden = hidden;
    if (hidden) return;
    this.groups.replaceChildren(...this.sorted().map((folder) => this.group(folder, filed.get(folder.id))));
  }

  /** A folder: a button that opens or closes it, its actions, then its conversations. */
  group(folder, conversations) {
    const s = this.strings;
    const open = !this.collapsed.has(folder.id);
    const group = document.createElement("li");
    group.className = "folder-group";
    group.dataset.folder = String(folder.id);
    const header = document.createElement("div");
    header.className = "folder-header";
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "folder-toggle";
    toggle.setAttribute("aria-expanded", String(open));
    toggle.setAttribute("aria-controls", `folder-${folder.id}-items`);
    const chevron = icon("right");
    chevron.classList.add("chevron");
    const name = document.createElement("span");
    name.className = "folder-name";
    name.textContent = folder.name;
    toggle.append(chevron, icon("folder"), name);
    const actions = document.createElement("div");
    actions.className = "item-actions";
    actions.append(
      iconButton("pencil", `${s.rename}: ${folder.name}`, "rename-folder"),
      iconButton("trash", `${s.delete}: ${folder.name}`, "delete-folder"),
    );
    header.append(toggle, actions);
    const list = document.createElement("ul");
    list.className = "conversation-list folder-items";
    list.id = `folder-${folder.id}-items`;
    list.setAttribute("aria-label", folder.name);
    list.hidden = !open;
    list.append(...conversations.map((summary) => this.sidebar.item(summary)));
    group.append(header, list);
    if (open && conversations.length === 0 && !folder.next) {
      const empty = document.createElement("p");
      empty.className = "folder-empty";
      empty.textContent = s.folder_empty;
      group.append(empty);
    }
    if (open && folder.next) {
      const more = document.createElement("button");
      more.type = "button";
      more.className = "folder-more";
      more.textContent = s.show_more;
      group.append(more);
    }
    return group;
  }

  onClick(event) {
    // A conversation's own controls are the Sidebar's.
    if (event.target.closest(".conversation-item")) return;
    const group = event.target.closest(".folder-group");
    const button = event.target.closest("button");
    if (!group || !button) return;
    const id = Number(group.dataset.folder);
    if (button.classList.contains("folder-toggle")) {
      this.setCollapsed(id, !this.collapsed.has(id));
      this.sidebar.draw();
      this.control(id, ".folder-toggle")?.focus();
    } else if (button.classList.contains("rename-folder")) {
      this.startRename(group, id);
    } else if (button.classList.contains("delete-folder")) {
      // A click from the keyboard (Enter, Space) has no pointer detail.
      this.delete(id, { byKeyboard: event.detail === 0 });
    } else if (button.classList.contains("folder-more")) {
      this.loadMore(id);
    }
  }

  control(id, selector) {
    return this.groups.querySelector(`.folder-group[data-folder="${id}"] ${selector}`);
  }

  setCollapsed(id, collapsed) {
    if (collapsed) this.collapsed.add(id);
    else this.collapsed.delete(id);
    try {
      localStorage.setItem(COLLAPSED_KEY, JSON.stringify([...this.collapsed]));
    } catch {
      // Storage may be off (private mode, a policy): folders then open again on the next visit.
    }
  }

  startNew() {
    const slot = document.createElement("span");
    const row = document.createElement("li");
    row.className = "folder-group new-folder-row";
    row.append(slot);
    this.groups.prepend(row);
    let created = null;
    const editing = this.sidebar.editInPlace(slot, {
      value: "",
      maxLength: this.nameMaxChars,
      label: this.strings.folder_name_label,
      save: async (name) => {
        if (!name) return;
        try {
          ({ folder: created } = await this.api.createFolder(name));
        } catch (error) {
          this.sidebar.onError(error);
          return;
        }
        this.byId.set(created.id, { next: null, ...this.byId.get(created.id), ...created });
      },
      refocus: () => (created ? this.control(created.id, ".folder-toggle") : this.newButton)?.focus(),
    });
    if (!editing) row.remove();
  }

  startRename(group, id) {
    const current = this.byId.get(id)?.name || "";
    this.sidebar.editInPlace(group.querySelector(".folder-toggle"), {
      value: current,
      maxLength: this.nameMaxChars,
      label: this.strings.folder_name_label,
      save: async (name) => {
        if (!name || name === current) return;
        try {
          const { folder } = await this.api.renameFolder(id, name);
          this.byId.set(id, { ...this.byId.get(id), ...folder });
        } catch (error) {
          this.sidebar.onError(error);
        }
      },
      refocus: () => this.control(id, ".folder-toggle")?.focus(),
    });
  }

  async delete(id, { byKeyboard = false } = {}) {
    try {
      await this.api.removeFolder(id);
    } catch (error) {
      this.sidebar.onError(error);
      return;
    }
    this.remove(id);
    this.sidebar.toast.show(this.strings.folder_deleted);
    // The button that had the focus is gone with its folder.
    if (byKeyboard) this.newButton.focus();
  }

  async loadMore(id) {
    const folder = this.byId.get(id);
    if (this.loading || !folder?.next) return;
    this.loading = true;
    try {
      const page = await this.api.list(folder.next, "", id);
      this.sidebar.add(page.conversations);
      folder.next = page.next;
    } catch (error) {
      this.sidebar.onError(error);
      return;
    } finally {
      this.loading = false;
    }
    this.sidebar.draw();
  }

  /** "Move to…" for one conversation: "No folder", then the member's folders. */
  openMoveMenu(button, summary) {
    const s = this.strings;
    const current = this.has(summary.folder) ? summary.folder : null;
    const choices = [
      { label: s.no_folder, value: null, checked: current === null },
      ...this.sorted().map((folder) => ({ label: folder.name, value: folder.id, checked: folder.id === current })),
    ];
    this.moveMenu.open({
      trigger: button,
      label: `${s.move_to}: ${summary.title || s.new_conversation}`,
      choices,
      note: this.byId.size ? "" : s.no_folders,
      restoreFocus: () => this.sidebar.focusItem(summary.id),
      onChoose: async (folder) => {
        if (folder !== current) {
          // The folder it goes to opens, so that it is seen arriving.
          if (folder !== null) this.setCollapsed(folder, false);
          await this.sidebar.change(summary.id, { folder });
        }
        this.sidebar.focusItem(summary.id);
      },
    });
  }
}

function readCollapsed() {
  try {
    const ids = JSON.parse(localStorage.getItem(COLLAPSED_KEY) || "[]");
    return new Set(Array.isArray(ids) ? ids.filter(Number.isInteger) : []);
  } catch {
    return new Set();
  }
}
