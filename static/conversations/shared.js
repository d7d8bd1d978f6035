// A shared conversation (templates/conversations/shared.html): the snapshot's messages, drawn by the
// chat's own Thread and renderer, read-only. Images are read under the share's address only.

import { Thread } from "./thread.js";

const data = JSON.parse(document.getElementById("shared-data").textContent);

const thread = new Thread({
  log: document.getElementById("messages"),
  scroller: document.getElementById("messages-scroller"),
  emptyState: document.getElementById("empty-state"),
  strings: data.strings,
  readOnly: true,
  actions: { regenerate: () => {}, select: () => {}, edit: () => false },
  onChange: () => {},
  onJump: () => {},
  onOlder: () => false,
  imageUrl: (id) => data.image_url.replace(data.any_id, id),
});
thread.setMessages(data.messages);
// A reader starts at the top of what was shared, not at its end as in the chat.
document.getElementById("messages-scroller").scrollTop = 0;
