// The messages of the selected path: rendering, live replies and the controls on each message.

import { messageImage } from "./attachments.js";
import { format, icon, iconButton } from "./dom.js";
import { isCheckedAnswer, jsonCheckOf, jsonVerdict, renderJsonReply } from "./json_view.js";
import { reasoningDetails } from "./reasoning.js";
import { renderMarkdown, renderPlainText } from "./render.js";

const LIVE = new Set(["pending", "streaming"]);
// Within this many pixels of the bottom the view follows a growing reply.
const STICK_DISTANCE_PX = 48;
// The editor grows with its text up to this height, then scrolls.
const EDITOR_MAX_HEIGHT_PX = 320;

export function isLive(message) {
  return LIVE.has(message.status);
}

/** The member's own messages of plain text: the edit message carries text only, never an image. */
function isEditable(message) {
  return message.role === "user" && message.parts.every((part) => part.type === "text");
}

function textOf(message) {
  return message.parts
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("\n\n");
}

export class Thread {
  /**
   * @param {{log: HTMLElement, scroller: HTMLElement, emptyState: HTMLElement, strings: object,
   *          actions: {regenerate: (id: number) => void, select: (id: number) => void,
   *                    edit: (id: number, text: string) => boolean},
   *          onChange: () => void, onJump: () => void,
   *          onOlder: (before: number) => boolean,
   *          imageUrl?: (id: string) => string, readOnly?: boolean}} options  imageUrl: where a
   *   message's image is read; readOnly: copy buttons only (a shared conversation)
   */
  constructor({ log, scroller, emptyState, strings, actions, onChange, onJump, onOlder, imageUrl, readOnly = false }) {
    this.log = log;
    this.scroller = scroller;
    this.emptyState = emptyState;
    this.strings = strings;
    this.actions = actions;
    this.onChange = onChange;
    this.onJump = onJump;
    this.onOlder = onOlder;
    this.imageUrl = imageUrl;
    this.readOnly = readOnly;
    this.loadingOlder = false;
    this.messages = [];
    this.elements = new Map();
    this.dirty = new Set();
    this.frame = null;
    this.stick = true;
    // The message being edited: {id, form, input, save, cancel, saving}.
    this.editing = null;
    this.jumpButton = this.buildJumpButton();
    this.olderButton = this.buildOlderButton();
    scroller.addEventListener("scroll", () => {
      this.stick = this.distanceToEnd() < STICK_DISTANCE_PX;
      this.updateJump();
    });
    // A smaller view (a phone's keyboard, a resized window) keeps the newest text in sight.
    new ResizeObserver(() => this.followBottom()).observe(scroller);
    log.addEventListener("click", (event) => this.onClick(event));
  }

  /** The reply being written on this path, if any. */
  liveReply() {
    return this.messages.find((message) => message.role === "assistant" && isLive(message)) || null;
  }

  get leaf() {
    return this.messages.at(-1) || null;
  }

  has(id) {
    return this.elements.has(id);
  }

  clear() {
    this.setMessages([]);
  }

  /** A snapshot: the path as the server has it now (its newest page; `older`: there is more above). */
  setMessages(messages, { keepScroll = false, older = false } = {}) {
    const scrollTop = this.scroller.scrollTop;
    // A snapshot (a reconnect, another tab's choice) must not throw away what the member is typing.
    const editing = this.editing;
    const draft = editing && {
      id: editing.id,
      text: editing.input.value,
      focused: document.activeElement === editing.input,
      saving: editing.saving,
    };
    this.editing = null;
    this.messages = messages.map((message) => ({ ...message, parts: [...(message.parts || [])] }));
    this.elements.clear();
    this.dirty.clear();
    const nodes = this.messages.map((message) => this.build(message));
    this.log.replaceChildren(...nodes);
    this.loadingOlder = false;
    this.olderButton.hidden = !older;
    if (draft && this.startEdit(draft.id, { draft: draft.text, focus: draft.focused, reveal: false })) {
      this.editing.saving = draft.saving;
    }
    if (keepScroll && !this.stick) this.scroller.scrollTop = scrollTop;
    else this.stick = true;
    this.afterChange();
  }

  /**
   * A new message: it answers its parent, so whatever followed the parent on this path (an older
   * sibling's branch) gives way. False when the parent is not on this path: the caller resyncs.
   */
  add(message) {
    if (this.has(message.id)) return true;
    const at = message.parent === null ? 0 : this.messages.findIndex((m) => m.id === message.parent) + 1;
    if (at === 0 && message.parent !== null) return false;
    for (const gone of this.messages.splice(at)) {
      this.elements.get(gone.id)?.remove();
      this.elements.delete(gone.id);
      if (this.editing?.id === gone.id) this.editing = null;
    }
    const copy = { ...message, parts: [...(message.parts || [])] };
    this.messages.push(copy);
    this.log.append(this.build(copy));
    this.afterChange();
    return true;
  }

  /**
   * Append one delta to a live reply: its text, then its tool calls or results (`parts`), after
   * which text begins a new part. Drawn on the next frame, not now.
   */
  appendDelta(id, content, reasoning, parts) {
    const message = this.messages.find((m) => m.id === id);
    if (!message) return false;
    if (reasoning) appendPart(message, "reasoning", reasoning);
    if (content) appendPart(message, "text", content);
    if (Array.isArray(parts)) message.parts.push(...parts);
    if (message.status === "pending") {
      message.status = "streaming";
      this.elements.get(id)?.classList.replace("status-pending", "status-streaming");
      this.onChange();
    }
    this.dirty.add(id);
    this.frame ??= requestAnimationFrame(() => this.flush());
    return true;
  }

  /** The final form of a message (reply.done). */
  replace(data) {
    const index = this.messages.findIndex((m) => m.id === data.id);
    if (index === -1) return false;
    const message = { ...this.messages[index], ...data };
    message.parts = [...(message.parts || [])];
    this.messages[index] = message;
    this.dirty.delete(data.id);
    const old = this.elements.get(data.id);
    old.replaceWith(this.build(message));
    this.afterChange();
    return true;
  }

  /** Follow the conversation to its bottom again, e.g. after the reader sends a message. */
  scrollToEnd() {
    this.stick = true;
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.updateJump();
  }

  flush() {
    this.frame = null;
    for (const id of this.dirty) {
      const message = this.messages.find((m) => m.id === id);
      const element = this.elements.get(id);
      if (message && element) this.fillBody(element.querySelector(".message-body"), message);
    }
    this.dirty.clear();
    this.followBottom();
  }

  afterChange() {
    const live = this.liveReply() !== null;
    this.emptyState.hidden = this.messages.length > 0;
    // Screen readers hear a reply once, when it is done, not every frame of it.
    this.log.setAttribute("aria-busy", String(live));
    // No edits while a reply is written on this path: the new branch would leave it behind.
    for (const button of this.log.querySelectorAll(".edit-message")) button.hidden = live;
    if (this.editing) this.updateEditor();
    this.followBottom();
    this.onChange();
  }

  followBottom() {
    if (this.stick) this.scroller.scrollTop = this.scroller.scrollHeight;
    this.updateJump();
  }

  distanceToEnd() {
    const scroller = this.scroller;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
  }

  // --- Jump to latest --------------------------------------------------------------------------

  /** Older messages of the path (`history`), just above the first one shown. */
  prependOlder(messages, older, before) {
    this.loadingOlder = false;
    if (this.messages[0]?.id !== before) return; // a snapshot replaced the view meanwhile
    const fresh = messages
      .filter((message) => !this.has(message.id))
      .map((message) => ({ ...message, parts: [...(message.parts || [])] }));
    const { scrollHeight, scrollTop } = this.scroller;
    this.messages.unshift(...fresh);
    this.log.prepend(...fresh.map((message) => this.build(message)));
    this.olderButton.hidden = !older;
    // The reader keeps looking at what they were reading.
    this.scroller.scrollTop = scrollTop + (this.scroller.scrollHeight - scrollHeight);
    this.onChange();
  }

  /** A history request failed or was refused: the button may be used again. */
  olderFailed() {
    this.loadingOlder = false;
  }

  requestOlder() {
    if (this.olderButton.hidden || this.loadingOlder || this.messages.length === 0) return;
    this.loadingOlder = this.onOlder(this.messages[0].id);
  }

  buildOlderButton() {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "load-older";
    button.textContent = this.strings.older_messages;
    button.hidden = true;
    button.addEventListener("click", () => this.requestOlder());
    this.log.before(button);
    // Reaching the top loads the page above without a click; a short page fills the view at once.
    new IntersectionObserver((entries) => {
      if (entries.some((entry) => entry.isIntersecting)) this.requestOlder();
    }, { root: this.scroller, rootMargin: "300px 0px 0px 0px" }).observe(button);
    return button;
  }

  buildJumpButton() {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "jump-latest";
    button.hidden = true;
    button.append(icon("down"), document.createTextNode(this.strings.jump_to_latest));
    button.addEventListener("click", () => {
      this.scrollToEnd();
      this.onJump?.();
    });
    // Between the messages and the composer, floating over the bottom of the messages.
    const holder = document.createElement("div");
    holder.className = "jump-holder";
    holder.append(button);
    this.scroller.after(holder);
    return button;
  }

  /** Shown to a reader who scrolled up from newer text; gone once they are back at the end. */
  updateJump() {
    this.jumpButton.hidden = this.stick || this.distanceToEnd() < STICK_DISTANCE_PX;
  }

  // --- Editing a message of the member's -------------------------------------------------------

  /**
   * Turn one of the member's messages into a form whose text is sent as a new version of it.
   * draft: text to start from instead of the message's; reveal: scroll the form into view.
   */
  startEdit(id, { draft = null, focus = true, reveal = true } = {}) {
    const message = this.messages.find((m) => m.id === id);
    const article = this.elements.get(id);
    if (!message || !article || !isEditable(message)) return false;
    if (this.editing?.id === id) {
      if (focus) this.editing.input.focus();
      return true;
    }
    this.cancelEdit({ restoreFocus: false });
    const s = this.strings;
    const form = document.createElement("form");
    form.className = "message-editor";
    const input = document.createElement("textarea");
    input.className = "editor-input";
    input.rows = 1;
    input.value = draft ?? textOf(message);
    input.setAttribute("aria-label", s.edit_label);
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "editor-cancel";
    cancel.textContent = s.cancel;
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "editor-save";
    save.textContent = s.save;
    const buttons = document.createElement("div");
    buttons.className = "editor-actions";
    buttons.append(cancel, save);
    form.append(input, buttons);

    input.addEventListener("keydown", (event) => {
      // As in the composer: Enter also confirms an input method's candidate, and Esc drops it.
      if (event.isComposing) return;
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        this.saveEdit();
      } else if (event.key === "Escape") {
        // Handled: the page's Esc (stop the reply) leaves it alone.
        event.preventDefault();
        this.cancelEdit();
      }
    });
    input.addEventListener("input", () => {
      fitEditor(input);
      this.updateEditor();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveEdit();
    });
    cancel.addEventListener("click", () => this.cancelEdit());

    article.classList.add("editing");
    article.append(form);
    this.editing = { id, form, input, save, cancel, saving: false };
    this.updateEditor();
    fitEditor(input);
    if (focus) {
      input.focus();
      input.setSelectionRange(input.value.length, input.value.length);
    }
    if (reveal) form.scrollIntoView({ block: "nearest" });
    return true;
  }

  /** Up in an empty composer: edit the member's last message on this path. */
  editLast() {
    if (this.liveReply()) return false;
    const last = this.messages.findLast((message) => message.role === "user");
    return last ? this.startEdit(last.id) : false;
  }

  cancelEdit({ restoreFocus = true } = {}) {
    const editing = this.editing;
    if (!editing) return;
    this.editing = null;
    editing.form.remove();
    const article = this.elements.get(editing.id);
    article?.classList.remove("editing");
    if (restoreFocus) article?.querySelector(".edit-message")?.focus();
  }

  saveEdit() {
    const editing = this.editing;
    if (!editing) return;
    this.updateEditor();
    if (editing.save.disabled) return;
    // The form stays until the server's message.created replaces the message, or an error reopens it.
    editing.saving = this.actions.edit(editing.id, editing.input.value.trim());
    this.updateEditor();
  }

  /** The edit was answered (or timed out): the form is usable again if it is still there. */
  editSettled() {
    const editing = this.editing;
    if (!editing?.saving) return;
    editing.saving = false;
    this.updateEditor();
    if (!document.activeElement || document.activeElement === document.body) editing.input.focus();
  }

  updateEditor() {
    const { input, save, cancel, saving } = this.editing;
    input.readOnly = saving;
    cancel.disabled = saving;
    save.disabled = saving || !input.value.trim() || this.liveReply() !== null;
  }

  // --- Building a message --------------------------------------------------------------------

  build(message) {
    const s = this.strings;
    const article = document.createElement("article");
    article.className = `message message-${message.role} status-${message.status}`;
    article.dataset.id = message.id;
    article.setAttribute("aria-label", message.role === "user" ? s.you : s.assistant);

    const body = document.createElement("div");
    body.className = "message-body";
    this.fillBody(body, message);
    article.append(body);

    const notice = this.statusNotice(message);
    if (notice) article.append(notice);

    const actions = this.messageActions(message);
    if (actions.childElementCount > 0) article.append(actions);
    this.elements.set(message.id, article);
    return article;
  }

  fillBody(body, message) {
    const s = this.strings;
    // Redrawing must not close what the reader opened.
    const open = [...body.querySelectorAll(":scope > details")].map((details) => details.open);
    const nodes = [];
    for (const part of message.parts) {
      if (part.type === "text") {
        if (!part.text) continue;
        const block = document.createElement("div");
        if (message.role === "user") {
          block.className = "plain-text";
          renderPlainText(block, part.text);
        } else if (isCheckedAnswer(message, part)) {
          block.className = "markdown json-reply";
          renderJsonReply(block, part.text, jsonCheckOf(message), s);
        } else {
          block.className = "markdown";
          renderMarkdown(block, part.text, s);
        }
        nodes.push(block);
      } else if (part.type === "reasoning") {
        const key = `${message.id}:${message.parts.indexOf(part)}`;
        nodes.push(reasoningDetails(key, part.text, isLive(message) && !textOf(message), s));
      } else if (part.type === "json_check") {
        nodes.push(jsonVerdict(part, s));
      } else if (part.type === "refusal") {
        const refusal = document.createElement("p");
        refusal.className = "refusal";
        refusal.textContent = part.text;
        nodes.push(refusal);
      } else if (part.type === "tool_call") {
        nodes.push(details(format(s.tool_call, { name: part.name }), readableJson(part.arguments), "tool tool-call"));
      } else if (part.type === "tool_result") {
        const content = typeof part.content === "string" ? part.content : JSON.stringify(part.content);
        const summary = part.name ? format(s.tool_result_of, { name: part.name }) : s.tool_result;
        nodes.push(details(summary, readableJson(content), "tool tool-result"));
      } else if (part.type === "context_note") {
        nodes.push(contextNote(part.omitted_messages, s));
      } else if (part.type === "image") {
        nodes.push(messageImage(part, s, this.imageUrl));
      }
    }
    if (message.role === "assistant" && isLive(message) && !textOf(message)) {
      const typing = document.createElement("div");
      typing.className = "typing";
      typing.setAttribute("aria-label", s.thinking);
      typing.append(document.createElement("span"), document.createElement("span"), document.createElement("span"));
      nodes.push(typing);
    }
    body.replaceChildren(...nodes);
    body.querySelectorAll(":scope > details").forEach((element, index) => {
      if (open[index]) element.open = true;
    });
  }

  statusNotice(message) {
    const s = this.strings;
    if (message.status === "cancelled") {
      return notice("stopped", s.stopped);
    }
    // A complete reply the provider ended early: say so, or a cut-off answer reads as a finished one.
    const cut = { length: s.cut_at_length, content_filter: s.filtered }[message.finish_reason];
    if (message.status === "complete" && cut) {
      return notice("cut", cut);
    }
    if (message.status === "error" || message.status === "interrupted") {
      const label = message.status === "interrupted" ? s.interrupted : s.error;
      const element = notice(message.status, label);
      if (message.error?.detail) {
        const detail = document.createElement("span");
        detail.className = "notice-detail";
        detail.textContent = message.error.detail;
        element.append(" ", detail);
      }
      element.setAttribute("role", "alert");
      return element;
    }
    return null;
  }

  messageActions(message) {
    const s = this.strings;
    const bar = document.createElement("div");
    bar.className = "message-actions";
    const siblings = message.siblings || [message.id];
    if (siblings.length > 1) {
      const index = siblings.indexOf(message.id);
      const versions = document.createElement("div");
      versions.className = "versions";
      const previous = iconButton("left", s.previous_version, "version-previous");
      previous.dataset.select = siblings[index - 1] ?? "";
      previous.disabled = index <= 0;
      const label = document.createElement("span");
      label.className = "version-label";
      label.textContent = `${index + 1}/${siblings.length}`;
      label.setAttribute("aria-label", format(s.version, { index: index + 1, count: siblings.length }));
      const next = iconButton("right", s.next_version, "version-next");
      next.dataset.select = siblings[index + 1] ?? "";
      next.disabled = index >= siblings.length - 1;
      versions.append(previous, label, next);
      bar.append(versions);
    }
    if (isLive(message)) return bar;
    if (textOf(message).trim()) {
      bar.append(iconButton("copy", s.copy, "copy-message"));
    }
    if (this.readOnly) return bar;
    if (isEditable(message)) {
      const edit = iconButton("pencil", s.edit, "edit-message");
      edit.hidden = this.liveReply() !== null;
      bar.append(edit);
    }
    if (message.role === "assistant") {
      const failed = message.status === "error" || message.status === "interrupted";
      const button = iconButton("regenerate", failed ? s.retry : s.regenerate, "regenerate");
      if (failed) {
        button.classList.add("retry");
        button.append(document.createTextNode(s.retry));
      }
      bar.append(button);
    }
    return bar;
  }

  onClick(event) {
    const button = event.target.closest("button");
    if (!button || !this.log.contains(button)) return;
    const article = button.closest(".message");
    const id = Number(article?.dataset.id);
    if (button.dataset.select) {
      this.actions.select(Number(button.dataset.select));
    } else if (button.classList.contains("regenerate")) {
      this.actions.regenerate(id);
    } else if (button.classList.contains("edit-message")) {
      this.startEdit(id);
    } else if (button.classList.contains("copy-message")) {
      const message = this.messages.find((m) => m.id === id);
      if (message) copyText(button, textOf(message), this.strings);
    } else if (button.classList.contains("code-copy")) {
      const code = button.closest(".code-block")?.querySelector("code");
      if (code) copyText(button, code.textContent, this.strings);
    }
  }
}

function fitEditor(input) {
  // CSSOM, not a style attribute: allowed under the page's style-src 'self'.
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight + 2, EDITOR_MAX_HEIGHT_PX)}px`;
}

function appendPart(message, type, text) {
  const last = message.parts.at(-1);
  if (last && last.type === type) {
    message.parts[message.parts.length - 1] = { ...last, text: (last.text || "") + text };
  } else {
    message.parts.push({ type, text });
  }
}

/** A tool's arguments or output: indented when it is JSON, as it came otherwise. */
function readableJson(text) {
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null ? JSON.stringify(value, null, 2) : text;
  } catch {
    return text;
  }
}

function details(summaryText, content, className) {
  const element = document.createElement("details");
  element.className = className;
  const summary = document.createElement("summary");
  summary.textContent = summaryText;
  const pre = document.createElement("pre");
  pre.textContent = content || "";
  element.append(summary, pre);
  return element;
}

/** Above a reply: how many earlier messages were not sent to fit the model's context window. */
function contextNote(count, strings) {
  const element = document.createElement("p");
  element.className = "context-note";
  const number = Number(count) || 0;
  element.textContent = number === 1 ? strings.context_note_one : format(strings.context_note, { count: number });
  return element;
}

function notice(kind, text) {
  const element = document.createElement("p");
  element.className = `notice notice-${kind}`;
  const label = document.createElement("span");
  label.className = "notice-label";
  label.textContent = text;
  element.append(label);
  return element;
}

async function copyText(button, text, strings) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    return;
  }
  const label = button.getAttribute("aria-label");
  button.setAttribute("aria-label", strings.copied);
  button.classList.add("copied");
  const original = [...button.childNodes];
  if (button.classList.contains("code-copy")) button.textContent = strings.copied;
  else button.replaceChildren(icon("check"));
  setTimeout(() => {
    button.setAttribute("aria-label", label);
    button.classList.remove("copied");
    button.replaceChildren(...original);
  }, 1500);
}
