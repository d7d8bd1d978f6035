// Markdown to safe DOM. Model output is untrusted: it passes through DOMPurify before it touches the
// page, and the result is inserted as nodes, never as an HTML string. Fenced code is highlighted
// while marked renders, so highlight.js's markup is sanitized with the rest; math leaves placeholders
// that KaTeX fills after sanitizing, and KaTeX's output is sanitized once more, in place.

import DOMPurify from "dompurify";
import hljs from "highlight.js";
import katex from "katex";
import { Marked } from "marked";

import { format } from "./dom.js";

// A streaming reply is drawn again on every frame: past this size a code block stays plain text.
const MAX_HIGHLIGHT = 20_000;

const KATEX_OPTIONS = {
  // KaTeX's own error box (throwOnError: false) sets a style attribute, which the CSP refuses;
  // typesetMath() draws the same box for every error instead.
  throwOnError: true,
  trust: false, // no \href, \url, \includegraphics, \htmlClass and the like
  strict: "ignore", // LaTeX-isms KaTeX renders anyway are no reason to warn on every frame
  maxSize: 20, // em: no \rule or \kern that covers the page
  maxExpand: 200, // macro expansions: no recursion bombs
  output: "htmlAndMathml", // HTML to see, MathML for screen readers
};

// Placeholders the markdown pass leaves for KaTeX: the TeX source as text.
const MATH_CLASS = "math";

const markdown = new Marked({ gfm: true, breaks: false, async: false });

const PURIFY_CONFIG = {
  // No controls and no data attributes from the model: the page's own buttons (regenerate, versions)
  // act on clicks, and a look-alike in a reply must not be one of them.
  // Nothing that loads an address by itself either: media and SVG images, backgrounds, posters and
  // srcset would make the reader's browser call a host the model chose (the CSP blocks it; this does
  // not rely on it). Inline images stay, checked in dropOutsideImages.
  FORBID_TAGS: [
    "style", "form", "button", "input", "textarea", "select", "option",
    "video", "audio", "source", "track", "image", "feimage",
  ],
  FORBID_ATTR: ["style", "background", "poster", "srcset"],
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

// KaTeX's own output: the same rules, plus the inline styles that place its boxes. They are set
// through the CSSOM by KaTeX (which the page's CSP allows), never parsed from the model's text.
const MATH_PURIFY_CONFIG = {
  FORBID_TAGS: PURIFY_CONFIG.FORBID_TAGS,
  ADD_TAGS: ["semantics", "annotation"],
  ADD_ATTR: ["style"],
  ALLOW_DATA_ATTR: false,
  IN_PLACE: true,
};

/** Remember the last few results by key: a streaming reply asks for its finished parts every frame. */
class RecentResults {
  constructor(size) {
    this.size = size;
    this.results = new Map();
  }

  get(key, make) {
    const known = this.results.has(key);
    const value = known ? this.results.get(key) : make();
    // Re-inserting marks the key as the most recent; the oldest goes first.
    this.results.delete(key);
    this.results.set(key, value);
    if (this.results.size > this.size) this.results.delete(this.results.keys().next().value);
    return value;
  }
}

const highlighted = new RecentResults(64);
const typeset = new RecentResults(256);

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

/**
 * A fenced block in a language highlight.js knows, as highlighted HTML; false leaves it to marked.
 * Only the fence's language counts: guessing would cost every frame and guess wrong on half a block.
 */
function highlightCode({ text, lang }) {
  const language = (lang || "").match(/^\S*/)[0];
  if (!language || text.length > MAX_HIGHLIGHT || !hljs.getLanguage(language)) return false;
  const code = text.replace(/\n$/, "");
  const html = highlighted.get(`${language}\n${code}`, () => hljs.highlight(code, { language }).value);
  return `<pre><code class="hljs language-${escapeHtml(language)}">${html}\n</code></pre>\n`;
}

// Display math alone on its lines: $$...$$ or \[...\].
const BLOCK_MATH = [/^ {0,3}\$\$((?:[^$]|\$(?!\$))+?)\$\$[ \t]*(?:\n+|$)/, /^ {0,3}\\\[((?:(?!\\\])[\s\S])+?)\\\][ \t]*(?:\n+|$)/];
// An opening line whose closing line has not arrived yet (a reply still streaming).
const OPEN_BLOCK_MATH = /^ {0,3}(?:\$\$|\\\[)[ \t]*\n/;
const INLINE_MATH = [
  { pattern: /^\$\$((?:[^$]|\$(?!\$))+?)\$\$/, display: true },
  { pattern: /^\\\[((?:(?!\\\])[\s\S])+?)\\\]/, display: true },
  { pattern: /^\\\(((?:(?!\\\))[\s\S])+?)\\\)/, display: false },
  // $...$ as Pandoc reads it, so that prices stay prices: no space inside either dollar, no digit
  // right after the closing one ("$5 and $10"), and on one line.
  { pattern: /^\$(?![\s$])((?:\\.|[^$\\\n])+?)(?<!\s)\$(?!\d)/, display: false },
];

function mathHtml(tag, tex, display) {
  const kind = display ? "math-display" : "math-inline";
  return `<${tag} class="${MATH_CLASS} ${kind}">${escapeHtml(tex.trim())}</${tag}>`;
}

const mathExtensions = [
  {
    name: "blockMath",
    level: "block",
    start: (src) => /^ {0,3}(?:\$\$|\\\[)/m.exec(src)?.index,
    tokenizer(src) {
      for (const pattern of BLOCK_MATH) {
        const match = pattern.exec(src);
        if (match) return { type: "blockMath", raw: match[0], tex: match[1] };
      }
      const closer = src.trimStart().startsWith("$$") ? "$$" : "\\]";
      const open = OPEN_BLOCK_MATH.exec(src);
      // Shown as its source until it closes, instead of as a paragraph that changes shape.
      if (open && !src.includes(closer, open[0].length)) {
        return { type: "blockMath", raw: src, tex: src.slice(open[0].length), pending: true };
      }
      return undefined;
    },
    renderer(token) {
      if (token.pending) return `<div class="math-pending">${escapeHtml(token.tex)}</div>\n`;
      return `${mathHtml("div", token.tex, true)}\n`;
    },
  },
  {
    name: "inlineMath",
    level: "inline",
    start: (src) => {
      const index = src.search(/\$|\\[([]/);
      return index < 0 ? undefined : index;
    },
    tokenizer(src) {
      for (const { pattern, display } of INLINE_MATH) {
        const match = pattern.exec(src);
        if (match) return { type: "inlineMath", raw: match[0], tex: match[1], display };
      }
      return undefined;
    },
    renderer: (token) => mathHtml("span", token.tex, token.display),
  },
];

markdown.use({ renderer: { code: highlightCode }, extensions: mathExtensions });

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
    // The whole class name or none: a fence named python"><img gets no "python" label.
    const language = /(?:^|\s)language-([\w+#.-]+)(?:\s|$)/.exec(code?.className || "")?.[1] || "";
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

/**
 * Typeset the math placeholders of a sanitized fragment. KaTeX builds nodes and sets their styles
 * through the CSSOM; the result is sanitized once more, then kept for the next frames as a copy.
 */
function typesetMath(fragment) {
  for (const element of fragment.querySelectorAll(`.${MATH_CLASS}`)) {
    const display = element.classList.contains("math-display");
    const tex = element.textContent;
    const rendered = typeset.get(`${display}\n${tex}`, () => {
      const holder = document.createElement("span");
      try {
        katex.render(tex, holder, { ...KATEX_OPTIONS, displayMode: display });
        DOMPurify.sanitize(holder, MATH_PURIFY_CONFIG);
      } catch (error) {
        // A typo or a limit reached: the source, marked as an error, with KaTeX's reason on hover.
        const box = document.createElement("span");
        box.className = "katex-error";
        box.title = error.message;
        box.textContent = tex;
        holder.replaceChildren(box);
      }
      return holder;
    });
    element.replaceChildren(...rendered.cloneNode(true).childNodes);
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

function makeScrollersReachable(fragment) {
  // Wide code, tables and display math scroll sideways; a keyboard must be able to scroll them too.
  for (const scroller of fragment.querySelectorAll("pre, .table-scroll, .katex-display")) scroller.tabIndex = 0;
}

/** Render markdown text into element, replacing what it held. */
export function renderMarkdown(element, text, strings) {
  const html = markdown.parse(text);
  const fragment = DOMPurify.sanitize(html, PURIFY_CONFIG);
  dropOutsideImages(fragment, strings);
  typesetMath(fragment);
  addCodeToolbars(fragment, strings);
  wrapTables(fragment);
  makeScrollersReachable(fragment);
  element.replaceChildren(fragment);
}

/** Plain text, shown as typed (user messages): never parsed as HTML. */
export function renderPlainText(element, text) {
  element.textContent = text;
}
