// Replies asked for as JSON (conversations/json_replies.py checks them when they finish): shown
// pretty-printed and highlighted as a code block with its copy button, and the server's verdict as a
// badge or a list of errors by JSON pointer path.

import { format } from "./dom.js";
import { renderMarkdown } from "./render.js";

// The same fence the server looks through: a reply wrapped whole in ```json … ```.
const FENCE = /^\s*```[ \t]*(?:json|JSON)?[ \t]*\n([\s\S]*?)\n?[ \t]*```\s*$/;
const INDENT = "  ";

/** The reply's json_check part, when it was asked for as JSON and has been checked. */
export function jsonCheckOf(message) {
  return message.parts.find((part) => part.type === "json_check") || null;
}

/**
 * Whether `part` is the answer a JSON check speaks of: the reply's last text part after any tool
 * step (the text of earlier steps is the model talking while it works).
 */
export function isCheckedAnswer(message, part) {
  if (!jsonCheckOf(message)) return false;
  const lastTool = message.parts.findLastIndex((each) => each.type === "tool_call" || each.type === "tool_result");
  const answer = message.parts.slice(lastTool + 1).findLast((each) => each.type === "text");
  return answer === part;
}

function unfenced(text) {
  return FENCE.exec(text)?.[1] ?? text;
}

/**
 * JSON text indented two spaces per level, token by token. JSON.parse and stringify would round
 * numbers past 2^53 and reorder nothing else, but a copied value must be the one the model wrote.
 * Only valid JSON comes here (the server parsed it), so strings are the one thing to step over.
 */
export function prettyJson(text) {
  let out = "";
  let depth = 0;
  const newline = () => `\n${INDENT.repeat(depth)}`;
  for (let i = 0; i < text.length; i++) {
    const character = text[i];
    if (character === '"') {
      let end = i + 1;
      while (end < text.length && text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      out += text.slice(i, end + 1);
      i = end;
    } else if (character === "{" || character === "[") {
      const close = character === "{" ? "}" : "]";
      let next = i + 1;
      while (/\s/.test(text[next] || "")) next++;
      if (text[next] === close) {
        out += character + close;
        i = next;
      } else {
        depth++;
        out += character + newline();
      }
    } else if (character === "}" || character === "]") {
      depth--;
      out += newline() + character;
    } else if (character === ",") {
      out += `,${newline()}`;
    } else if (character === ":") {
      out += ": ";
    } else if (!/\s/.test(character)) {
      out += character;
    }
  }
  return out;
}

function longestRun(text, character) {
  let longest = 0;
  let run = 0;
  for (const each of text) {
    run = each === character ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

/** A checked reply: pretty and highlighted when it parsed as JSON, else as written. */
export function renderJsonReply(element, text, check, strings) {
  if (!check.parsed) {
    renderMarkdown(element, text, strings);
    return;
  }
  const pretty = prettyJson(unfenced(text).trim());
  // A fence longer than any run of backticks inside, so that a string holding ``` cannot close it.
  const fence = "`".repeat(Math.max(3, longestRun(pretty, "`") + 1));
  renderMarkdown(element, `${fence}json\n${pretty}\n${fence}\n`, strings);
}

function verdictLabel(check, s) {
  if (check.valid) return check.mode === "json_schema" ? s.json_matches_schema : s.json_valid;
  if (!check.parsed) return s.json_not_json;
  if (check.schema_error) return s.json_schema_invalid;
  return check.mode === "json_schema" ? s.json_schema_mismatch : s.json_not_object;
}

function errorItem(path, message, strings) {
  const item = document.createElement("li");
  const where = document.createElement("code");
  where.className = "json-path";
  where.textContent = path || strings.json_root;
  const what = document.createElement("span");
  what.className = "json-message";
  what.textContent = message;
  item.append(where, " ", what);
  return item;
}

/** The server's verdict: a badge, and for a reply that failed, what failed where. */
export function jsonVerdict(check, strings) {
  const s = strings;
  const box = document.createElement("div");
  box.className = `json-check ${check.valid ? "json-valid" : "json-invalid"}`;
  const badge = document.createElement("span");
  badge.className = "json-badge";
  badge.textContent = verdictLabel(check, s);
  box.append(badge);
  if (check.mode === "json_schema" && check.name) {
    const name = document.createElement("span");
    name.className = "json-schema-name";
    name.textContent = check.name;
    box.append(" ", name);
  }
  const errors = check.errors || [];
  if (check.valid || (errors.length === 0 && !check.schema_error)) return box;
  const list = document.createElement("ul");
  list.className = "json-errors";
  for (const error of errors) {
    // chatsite's own failures carry a code worded here; the rest are the validator's messages.
    const message = error.code === "not_object" ? s.json_not_object : error.message;
    list.append(errorItem(error.path, message, s));
  }
  if (check.schema_error) list.append(errorItem("", check.schema_error, s));
  if (check.more_errors > 0) {
    const more = document.createElement("li");
    more.className = "json-more";
    more.textContent = format(s.json_more_errors, { count: check.more_errors });
    list.append(more);
  }
  box.append(list);
  return box;
}
