// The chat websocket (docs/websocket.md): one per tab, reconnected with backoff, plus the per-reply
// sequence bookkeeping that turns at-most-once deltas into a correct text.

const PROTOCOL_VERSION = 1;
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const PING_EVERY_MS = 25000;
// The server closes with this code when the session is gone; reconnecting would only fail again.
const SESSION_ENDED = 4401;

export class ChatSocket {
  /**
   * @param {string} url ws:// or wss:// address
   * @param {{onOpen?: () => void, onMessage: (msg: object) => void,
   *          onStateChange?: (state: string) => void, onSessionEnded?: () => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = false;
    this.state = "connecting";
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.setState("open");
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
      this.handlers.onOpen?.();
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message === null || typeof message !== "object") return;
      // A hello proves the server accepted this session: later drops start the backoff afresh.
      if (message.type === "hello") this.attempt = 0;
      this.handlers.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      if (event.code === SESSION_ENDED) {
        this.stopped = true;
        this.setState("ended");
        this.handlers.onSessionEnded?.();
        return;
      }
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.stopped || this.retryTimer !== null) return;
    this.setState("reconnecting");
    // Full jitter: tabs dropped together by a server restart do not all come back at once.
    const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempt);
    const delay = FIRST_DELAY_MS / 2 + Math.random() * ceiling;
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Skip the wait when the browser says the network or the tab is back. */
  reconnectNow() {
    if (this.stopped || this.ws !== null) return;
    this.attempt = 0;
    this.connect();
  }

  /** Send one frame; false when the socket is not open (the caller keeps what it wanted to send). */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...frame }));
    return true;
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.handlers.onStateChange?.(state);
  }
}

/**
 * Which deltas of which replies to apply. A snapshot states each live reply's last seq; after that a
 * delta is applied only when it is the next one, skipped when already contained, and a gap asks for
 * one resync (not one per missing delta) until the next snapshot arrives.
 */
export class ReplySequencer {
  constructor() {
    this.lastSeq = new Map();
    this.resyncPending = false;
  }

  /** Start over from a snapshot's messages. */
  reset(messages) {
    this.lastSeq.clear();
    this.resyncPending = false;
    for (const message of messages) this.lastSeq.set(message.id, message.seq ?? 0);
  }

  /** A reply the client saw created starts at seq 0. */
  track(messageId, seq = 0) {
    if (!this.lastSeq.has(messageId)) this.lastSeq.set(messageId, seq);
  }

  /** The reply ended with this seq (reply.done); later stragglers are skipped. */
  finish(messageId, seq) {
    this.lastSeq.set(messageId, Math.max(seq ?? 0, this.lastSeq.get(messageId) ?? 0));
  }

  /**
   * @returns {"apply" | "skip" | "gap" | "resync"} what to do with a delta: "resync" means a gap
   *   that should be reported now, "gap" one already reported.
   */
  accept(messageId, seq) {
    const last = this.lastSeq.get(messageId);
    if (last !== undefined && seq <= last) return "skip";
    if (last !== undefined && seq === last + 1) {
      this.lastSeq.set(messageId, seq);
      return "apply";
    }
    if (this.resyncPending) return "gap";
    this.resyncPending = true;
    return "resync";
  }
}

export function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}
