// A model's reasoning, collapsed above its answer. While the model is still thinking (reasoning has
// arrived, the answer has not), the summary counts the seconds; once the answer begins it says how
// long the thinking took. The clock is this page's: from the first reasoning it saw of the reply.

import { format } from "./dom.js";

const TICK_MS = 1000;
// By "<message id>:<part index>": a reply that calls tools reasons once per step.
const startedAt = new Map(); // key -> performance.now() when the reasoning was first seen
const thoughtFor = new Map(); // key -> whole seconds, once the answer began
let ticker = null;
let tickStrings = null;

function seconds(since) {
  return Math.max(0, Math.round((performance.now() - since) / 1000));
}

function tick() {
  const live = document.querySelectorAll("details.reasoning > summary[data-thinking]");
  if (live.length === 0) {
    clearInterval(ticker);
    ticker = null;
    return;
  }
  for (const summary of live) {
    const since = startedAt.get(summary.dataset.thinking);
    if (since !== undefined) summary.textContent = format(tickStrings.thinking_for, { seconds: seconds(since) });
  }
}

/**
 * One reasoning part, collapsed; `key` names it across redraws. thinking: the reply is being written
 * and has no answer text yet. Redrawn on every frame of a streaming reply, so all state lives in the
 * maps above.
 */
export function reasoningDetails(key, text, thinking, strings) {
  const details = document.createElement("details");
  details.className = "reasoning";
  const summary = document.createElement("summary");
  if (thinking) {
    if (!startedAt.has(key)) startedAt.set(key, performance.now());
    summary.dataset.thinking = key;
    summary.textContent = format(strings.thinking_for, { seconds: seconds(startedAt.get(key)) });
    tickStrings = strings;
    ticker ??= setInterval(tick, TICK_MS);
  } else {
    if (startedAt.has(key) && !thoughtFor.has(key)) thoughtFor.set(key, seconds(startedAt.get(key)));
    summary.textContent = thoughtFor.has(key)
      ? format(strings.thought_for, { seconds: thoughtFor.get(key) })
      : strings.reasoning;
  }
  const pre = document.createElement("pre");
  pre.textContent = text || "";
  details.append(summary, pre);
  return details;
}
