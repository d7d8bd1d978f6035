// Markdown to safe DOM. Model output is untrusted: it passes through DOMPurify before it touches the
// page, and the result is inserted as nodes, never as an HTML string.

import DOMPurify from "dompurify";
import { Marked } from "marked";

import { format } from "./dom.js";

const markdown = new Marked({ gfm: true, breaks: false, async: false });

const PURIFY_CONFIG = {
  // No controls and no data attributes from the model: the page's own buttons (regenerate, versions)
  // act on clicks, and a look-alike in a reply must not be one of them.
  FORBID_TAGS: ["style", "form", "button", "input", "textarea", "select", "option"],
  FORBID_ATTR: ["style"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  // Links leave the app in a new tab, without handing it a reference to this window.
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

function isAllowedImage(src) {
  // Inline images only: an address, even on this site, would make the reader's browser send a
  // request the model chose, with the reader's cookies.
  return src.startsWith("data:image/") || src.startsWith("blob:");
}

/**
 * Replace images the page's CSP would block anyway (outside addresses) with their alt text, so the
 * reader sees what was meant instead of a broken image.
 */
function dropOutsideImages(fragment, strings) {
  for (const image of fragment.querySelectorAll("img")) {
    if (isAllowedImage(image.getAttribute("src") || "")) continue;
    const alt = image.getAttribute("alt") || "";
    const note = document.createElement("span");
    note.className = "blocked-image";
    note.textContent = alt ? format(strings.blocked_image, { alt }) : strings.blocked_image_no_alt;
    image.replaceWith(note);
  }
}

function addCodeToolbars(fragment, strings) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const language = /language-([\w+#.-]+)/.exec(code?.className || "")?.[1] || "";
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const label = document.createElement("span");
    label.textContent = language;
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "code-copy";
    copy.textContent = strings.copy;
    copy.setAttribute("aria-label", strings.copy_code);
    bar.append(label, copy);
    pre.replaceWith(wrapper);
    wrapper.append(bar, pre);
  }
}

function wrapTables(fragment) {
  // Wide tables scroll inside the message instead of widening the page on a phone.
  for (const table of fragment.querySelectorAll("table")) {
    const wrapper = document.createElement("div");
    wrapper.className = "table-scroll";
    table.replaceWith(wrapper);
    wrapper.append(table);
  }
}

/** Render markdown text into element, replacing what it held. */
export function renderMarkdown(element, text, strings) {
  const html = markdown.parse(text);
  const fragment = DOMPurify.sanitize(html, PURIFY_CONFIG);
  dropOutsideImages(fragment, strings);
  addCodeToolbars(fragment, strings);
  wrapTables(fragment);
  element.replaceChildren(fragment);
}

/** Plain text, shown as typed (user messages): never parsed as HTML. */
export function renderPlainText(element, text) {
  element.textContent = text;
}
