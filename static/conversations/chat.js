// The chat page: wires the sidebar, the thread, the composer and the socket together.
// The protocol is docs/websocket.md; the page's first data comes from conversations/views.py.

import { conversationApi } from "./api.js";
import { AttachmentTray } from "./attachments.js";
import { Drawer, Sidebar } from "./sidebar.js";
import { SettingsPanel } from "./settings.js";
import { ShareDialog } from "./share.js";
import { ChatSocket, ReplySequencer, socketUrl } from "./socket.js";
import { Thread } from "./thread.js";
import { Toast } from "./toast.js";
import { TransferMenu } from "./transfer.js";

const data = JSON.parse(document.getElementById("chat-data").textContent);
const strings = data.strings;
const $ = (id) => document.getElementById(id);
const SEND_TIMEOUT_MS = 20000;
// Marks the requests for older messages, whose errors concern only the button that asked.
const HISTORY_REF = "history";

const ui = {
  title: $("conversation-title"),
  picker: $("model-picker"),
  offlineBadge: $("offline-badge"),
  status: $("connection-status"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send-button"),
  stop: $("stop-button"),
  error: $("composer-error"),
};

const state = {
  selected: data.selected,
  // The send not yet answered, {ref, text, newChat}: one at a time. Its answer is the user's
  // message.created, the first snapshot of the conversation it started, or an error with its ref.
  pendingSend: null,
  sendTimer: null,
  model: data.default_model,
  maxTextChars: null,
  refCount: 0,
  connectedBefore: false,
};

const sequencer = new ReplySequencer();

// --- Addresses and HTTP ---------------------------------------------------------------------------

function urlFor(pattern, id) {
  return pattern.replace(data.any_id, id);
}

const api = conversationApi(data);

// --- Pieces ---------------------------------------------------------------------------------------

const toast = new Toast($("toast-region"));

// On a phone the sidebar is a drawer behind the menu button.
const drawer = new Drawer({
  chat: $("chat"),
  sidebar: $("sidebar"),
  backdrop: $("backdrop"),
  openButton: $("menu-button"),
  closeButton: $("sidebar-close"),
});

const thread = new Thread({
  log: $("messages"),
  scroller: $("messages-scroller"),
  emptyState: $("empty-state"),
  strings,
  actions: {
    regenerate: (id) => sendFrame({ type: "regenerate", conversation: state.selected, message: id }),
    select: (id) => sendFrame({ type: "select", conversation: state.selected, message: id }),
    edit: sendEdit,
  },
  onChange: updateComposer,
  onJump: focusComposer,
  onOlder: (before) =>
    socket.send({ type: "history", conversation: state.selected, before, ref: HISTORY_REF }),
  imageUrl: (id) => urlFor(data.urls.attachment, id),
});

// Images attached in the composer (attachments.js): uploaded at once, named by id in the send.
const attachments = new AttachmentTray({
  composer: ui.composer,
  tray: $("attachment-tray"),
  button: $("attach-button"),
  fileInput: $("attach-file"),
  dropZone: ui.composer.closest(".pane"),
  pasteTarget: ui.input,
  strings,
  limits: data.limits,
  uploadUrl: data.urls.attachment_upload,
  loginUrl: data.urls.login,
  onChange: () => updateComposer(),
  // An earlier refusal no longer applies once another image is on its way.
  onUpload: () => hideError(),
  onError: (text) => showError(text),
});

const sidebar = new Sidebar({
  root: $("conversation-nav"),
  pinnedList: $("pinned-list"),
  recentList: $("recent-list"),
  pinnedLabel: $("pinned-label"),
  recentLabel: $("recent-label"),
  end: $("list-end"),
  folders: {
    groups: $("folder-groups"),
    head: $("folders-head"),
    newButton: $("new-folder"),
    nameMaxChars: data.limits.folder_name_max_chars,
  },
  toast,
  searchInput: $("conversation-search"),
  resultsList: $("search-results"),
  searchStatus: $("search-status"),
  strings,
  titleMaxChars: data.limits.title_max_chars,
  urlFor: (id) => urlFor(data.urls.conversation, id),
  api,
  reveal: () => drawer.open(),
  onOpen: (id) => openConversation(id, { push: true }),
  onRemoved: (id) => {
    if (id === state.selected) openNewChat({ push: true });
  },
  // Undo of the delete of the open conversation opens it again, unless the member moved on since.
  onRestored: (id, wasOpen) => {
    const untouched = state.selected === null && !state.pendingSend && !thread.messages.length && !ui.input.value;
    if (wasOpen && untouched) openConversation(id, { push: true });
  },
  onError: (error) => showError(error.message),
});

const socket = new ChatSocket(socketUrl(data.urls.socket), {
  onOpen: () => {
    if (state.selected) socket.send({ type: "subscribe", conversation: state.selected });
    // Whatever was in flight when the socket dropped is answered by the snapshot, or not at all.
    settleSend();
    if (state.connectedBefore) sidebar.refresh();
    state.connectedBefore = true;
  },
  onMessage: handleServerMessage,
  onStateChange: showConnection,
  onSessionEnded: () => {
    showConnectionText(strings.session_ended);
    window.setTimeout(() => window.location.assign(data.urls.login), 1500);
  },
});

// --- Server messages ------------------------------------------------------------------------------

function handleServerMessage(message) {
  const handler = handlers[message.type];
  if (handler) handler(message);
}

/** Whether a conversation's message concerns what this tab shows. */
function isShown(message) {
  return message.conversation !== null && message.conversation === state.selected;
}

/** The first answer about a conversation this tab started: from now on it is the one shown. */
function adoptNewConversation(id) {
  state.selected = id;
  if (state.pendingSend?.images) attachments.clear();
  settleSend();
  window.history.replaceState({ id }, "", urlFor(data.urls.conversation, id));
  sidebar.setActive(id);
  settings.reset();
}

function requestResync() {
  if (state.selected) socket.send({ type: "resync", conversation: state.selected });
}

const handlers = {
  hello(message) {
    state.maxTextChars = message.limits?.max_text_chars ?? null;
    if (state.maxTextChars) ui.input.maxLength = state.maxTextChars;
  },

  snapshot(message) {
    // A fresh snapshot of what is already shown keeps the reader's place; a new one starts at the end.
    let keepScroll = thread.messages.length > 0;
    if (!isShown(message)) {
      // Only a socket's own subscription yields snapshots: an unknown one answers our new chat.
      if (state.selected !== null || !state.pendingSend?.newChat) return;
      adoptNewConversation(message.conversation);
      keepScroll = false;
    }
    const conversation = message.data;
    sequencer.reset(conversation.messages);
    thread.setMessages(conversation.messages, { keepScroll, older: conversation.older === true });
    setTitle(conversation.title);
    if (conversation.model !== null && conversation.model !== undefined) setPickedModel(conversation.model);
    const known = sidebar.get(conversation.id);
    const updatedAt = conversation.updated_at ?? known?.updated_at;
    if (updatedAt) {
      const { id, title, pinned } = conversation;
      // A listed conversation's folder comes from conversation.updated; a snapshot may be older.
      const folder = known ? known.folder : (conversation.folder ?? null);
      sidebar.upsert({ ...known, id, title, pinned, folder, updated_at: updatedAt });
    }
  },

  "message.created"(message) {
    const created = message.data;
    const pending = state.pendingSend;
    let answersEdit = false;
    if (pending && (message.ref === pending.ref || (isShown(message) && created.role === "user"))) {
      if (pending.newChat && state.selected === null) adoptNewConversation(message.conversation);
      answersEdit = pending.edit === true;
      if (pending.images) attachments.clear();
      settleSend();
    }
    if (!isShown(message)) return;
    if (created.role === "assistant") sequencer.track(created.id, created.seq ?? 0);
    if (!thread.add(created)) requestResync();
    // The editor left with the old version of the message; the composer takes the focus it had.
    if (answersEdit && (!document.activeElement || document.activeElement === document.body)) focusComposer();
    if (created.role === "user") {
      thread.scrollToEnd();
      // Talking in a conversation moves it to the top, as the server's updated_at now says.
      const known = sidebar.get(message.conversation);
      if (known) sidebar.upsert({ ...known, updated_at: created.created_at });
    }
  },

  "reply.delta"(message) {
    // A reply on another branch (a version not shown) streams too: its deltas are not for this view.
    if (!isShown(message) || !thread.has(message.message)) return;
    const verdict = sequencer.accept(message.message, message.seq);
    if (verdict === "apply") {
      if (!thread.appendDelta(message.message, message.content, message.reasoning, message.parts)) {
        requestResync();
      }
    } else if (verdict === "resync") {
      requestResync();
    }
  },

  "reply.done"(message) {
    if (!isShown(message)) return;
    sequencer.finish(message.message, message.seq);
    if (!thread.replace({ ...message.data, id: message.message })) requestResync();
  },

  "conversation.created"(message) {
    sidebar.upsert(message.data);
  },

  "conversation.updated"(message) {
    sidebar.upsert(message.data);
    if (message.conversation === state.selected) setTitle(message.data.title);
  },

  "folder.created"(message) {
    sidebar.folders.upsert(message.data);
  },

  "folder.updated"(message) {
    sidebar.folders.upsert(message.data);
  },

  "folder.deleted"(message) {
    sidebar.folders.remove(message.data.id);
  },

  "conversation.deleted"(message) {
    sidebar.remove(message.conversation);
    if (message.conversation === state.selected) {
      openNewChat({ push: false });
      window.history.replaceState({ id: null }, "", data.urls.chat);
      showError(strings.not_found);
    }
  },

  history(message) {
    if (!isShown(message)) return;
    thread.prependOlder(message.data.messages, message.data.older, message.data.before);
  },

  error(message) {
    if (message.ref === HISTORY_REF) {
      // The path changed under the request (another tab chose a version): the snapshot follows.
      thread.olderFailed();
      return;
    }
    const pending = state.pendingSend;
    if (pending && message.ref === pending.ref) {
      settleSend();
      // The message was refused: give its text back rather than lose it (a refused edit keeps
      // its text in the editor, open again).
      if (!pending.edit && !ui.input.value) ui.input.value = pending.text;
      autosize();
    }
    if (message.code === "not_found" && !message.ref && state.selected) {
      openNewChat({ push: false });
      window.history.replaceState({ id: null }, "", data.urls.chat);
    }
    showError(message.detail || strings.request_failed);
    updateComposer();
  },
};

// --- Navigation -----------------------------------------------------------------------------------

function openConversation(id, { push }) {
  drawer.close();
  if (id === state.selected) return;
  if (push) window.history.pushState({ id }, "", urlFor(data.urls.conversation, id));
  state.selected = id;
  settleSend();
  sequencer.reset([]);
  thread.clear();
  setTitle(sidebar.get(id)?.title || "");
  sidebar.setActive(id);
  settings.showAssistantChoice();
  socket.send({ type: "subscribe", conversation: id });
  focusComposer();
}

function openNewChat({ push }) {
  drawer.close();
  if (push) window.history.pushState({ id: null }, "", data.urls.chat);
  state.selected = null;
  settleSend();
  sequencer.reset([]);
  thread.clear();
  setTitle("");
  sidebar.setActive(null);
  setPickedModel(data.default_model);
  settings.reset();
  focusComposer();
}

function idFromLocation() {
  const match = /\/c\/([0-9a-f-]{36})\/?$/.exec(window.location.pathname);
  return match ? match[1] : null;
}

window.addEventListener("popstate", () => {
  const id = idFromLocation();
  if (id) openConversation(id, { push: false });
  else openNewChat({ push: false });
});

$("new-chat").addEventListener("click", (event) => {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  openNewChat({ push: true });
});

// --- Composer -------------------------------------------------------------------------------------

function sendFrame(frame) {
  if (!socket.send(frame)) {
    showError(strings.reconnecting);
    return false;
  }
  hideError();
  return true;
}

function submit() {
  const text = ui.input.value.trim();
  const images = attachments.ids();
  if ((!text && !images.length) || thread.liveReply() || state.pendingSend || attachments.busy()) return;
  if (images.length && !data.models.find((model) => model.id === state.model)?.vision) {
    showError(strings.image_needs_vision);
    return;
  }
  if (state.maxTextChars && text.length > state.maxTextChars) {
    showError(strings.too_long);
    return;
  }
  const ref = `c${++state.refCount}`;
  const frame = { type: "send", conversation: state.selected, text, ref };
  if (images.length) frame.attachments = images;
  if (state.selected === null) {
    // Not in docs/websocket.md v1 yet: the model a new conversation starts with.
    if (state.model) frame.model = state.model;
    // The assistant it starts from and the settings chosen before this first message (settings.js).
    Object.assign(frame, settings.newConversationFields());
  } else if (thread.leaf) {
    frame.parent = thread.leaf.id;
  }
  if (!sendFrame(frame)) return;
  // The images stay in the tray until the message is saved: a refused send keeps them.
  const newChat = state.selected === null;
  state.pendingSend = { ref, text: ui.input.value, newChat, images: images.length > 0 };
  // Never stuck: a send the server did not answer may be tried again.
  state.sendTimer = setTimeout(settleSend, SEND_TIMEOUT_MS);
  ui.input.value = "";
  autosize();
  thread.scrollToEnd();
  updateComposer();
  ui.input.focus();
}

/** Send a new version of one of the member's messages; true when it went out. */
function sendEdit(id, text) {
  if (!text || thread.liveReply() || state.pendingSend) return false;
  if (state.maxTextChars && text.length > state.maxTextChars) {
    showError(strings.too_long);
    return false;
  }
  const ref = `c${++state.refCount}`;
  if (!sendFrame({ type: "edit", conversation: state.selected, message: id, text, ref })) return false;
  // Answered like a send: by the new message's message.created, or an error with this ref.
  state.pendingSend = { ref, text, newChat: false, edit: true };
  state.sendTimer = setTimeout(settleSend, SEND_TIMEOUT_MS);
  updateComposer();
  return true;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});

ui.input.addEventListener("keydown", (event) => {
  // isComposing: Enter also confirms an input method's candidate (Chinese, Japanese): not a send.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  } else if (event.key === "ArrowUp" && ui.input.value === "" && !event.isComposing && !hasModifier(event)) {
    // As in terminals and other chats: Up in an empty composer edits the last message sent.
    if (!state.pendingSend && thread.editLast()) event.preventDefault();
  }
});

ui.input.addEventListener("input", () => {
  autosize();
  updateComposer();
});

function stopReply() {
  const reply = thread.liveReply();
  if (reply) sendFrame({ type: "stop", conversation: state.selected, message: reply.id });
}

ui.stop.addEventListener("click", () => {
  stopReply();
  ui.input.focus();
});

// Esc stops the reply being written, from the composer or anywhere on the page; not from an open
// editor (Esc cancels the edit) nor from the sidebar (Esc cancels a rename, closes the drawer).
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented || event.isComposing || hasModifier(event)) return;
  if (event.target instanceof Element && event.target.closest("#sidebar, .message-editor")) return;
  if (!thread.liveReply()) return;
  event.preventDefault();
  stopReply();
});

function hasModifier(event) {
  return event.shiftKey || event.altKey || event.ctrlKey || event.metaKey;
}

/** Ready to type; on a phone only once the reader taps, as the keyboard would cover the page. */
function focusComposer() {
  if (window.matchMedia("(min-width: 768px)").matches) ui.input.focus();
}

function settleSend() {
  clearTimeout(state.sendTimer);
  state.pendingSend = null;
  thread.editSettled();
  updateComposer();
}

function autosize() {
  // CSSOM, not a style attribute: allowed under the page's style-src 'self'.
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

function updateComposer() {
  const live = thread.liveReply() !== null;
  const waiting = state.pendingSend !== null;
  ui.stop.hidden = !live;
  ui.send.hidden = live;
  const empty = !ui.input.value.trim() && !attachments.count();
  ui.send.disabled = waiting || empty || attachments.busy() || ui.picker.value === "";
}

// --- Model picker ---------------------------------------------------------------------------------

function setPickedModel(id) {
  if (id === null || id === undefined) return;
  const option = ui.picker.querySelector(`option[value="${CSS.escape(String(id))}"]`);
  if (!option) return;
  ui.picker.value = String(id);
  state.model = id;
  ui.offlineBadge.hidden = !option.dataset.offline;
}

ui.picker.addEventListener("change", async () => {
  const id = Number(ui.picker.value);
  setPickedModel(id);
  if (state.selected) {
    try {
      await api.update(state.selected, { model: id });
    } catch (error) {
      showError(error.message);
    }
  }
});

// --- Small things ---------------------------------------------------------------------------------

function setTitle(title) {
  const text = title || strings.new_conversation;
  ui.title.textContent = text;
  document.title = `${text} · chatsite`;
}

let statusTimer = null;

function showConnection(connection) {
  clearTimeout(statusTimer);
  if (connection === "open") {
    ui.status.hidden = true;
    updateComposer();
    return;
  }
  // Brief blips are not worth a banner.
  statusTimer = setTimeout(() => {
    showConnectionText(connection === "connecting" ? strings.connecting : strings.reconnecting);
  }, 1000);
}

function showConnectionText(text) {
  ui.status.textContent = text;
  ui.status.hidden = false;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
}

// --- Settings and assistants (settings.js) --------------------------------------------------------

const settings = new SettingsPanel({
  data,
  strings,
  openButton: $("settings-button"),
  assistantChoice: $("assistant-choice"),
  assistantPicker: $("assistant-picker"),
  selected: () => state.selected,
  model: () => state.model,
  onAssistant: (assistant) => {
    if (assistant?.model) setPickedModel(assistant.model);
  },
  onSaved: (text) => toast.show(text),
});

// --- Share links (share.js); before the menu, so that its entry is shown or hidden as it opens -----

new ShareDialog({
  data,
  strings,
  openButton: $("share-button"),
  menuButton: $("more-button"),
  onOpen: () => $("more-button").click(),
  selected: () => state.selected,
});

// --- Export and import ----------------------------------------------------------------------------

new TransferMenu({
  root: $("more-menu"),
  button: $("more-button"),
  panel: $("more-panel"),
  exportMarkdown: $("export-markdown"),
  exportJson: $("export-json"),
  importButton: $("import-button"),
  fileInput: $("import-file"),
  strings,
  urls: {
    export: (id) => urlFor(data.urls.conversation_export, id),
    import: data.urls.conversation_import,
    login: data.urls.login,
  },
  selected: () => state.selected,
  onImported: (conversations) => {
    for (const summary of conversations) sidebar.upsert(summary);
    if (conversations.length) openConversation(conversations[0].id, { push: true });
  },
  onError: showError,
});

// --- Start ----------------------------------------------------------------------------------------

sidebar.load(data.conversations, data.next, data.folders);
sidebar.setActive(state.selected);
setPickedModel(data.default_model);
thread.clear();
updateComposer();
socket.connect();
focusComposer();
