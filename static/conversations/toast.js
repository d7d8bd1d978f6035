// A short message at the bottom of the page, with at most one action ("Conversation deleted — Undo").
// The region is a role="status" element already in the page, so screen readers read what appears in
// it. A toast goes away after a while, but not while the pointer or the focus is on it: there is time
// to read it and to reach its button. Esc dismisses it when it has the focus.

const SHOWN_MS = 8000;

export class Toast {
  /** @param {HTMLElement} region the page's role="status" element for toasts */
  constructor(region) {
    this.region = region;
    this.current = null;
    this.timer = null;
    this.held = { pointer: false, focus: false };
  }

  /**
   * @param {string} text
   * @param {{action?: string, onAction?: () => Promise<unknown> | unknown, focus?: boolean,
   *          returnFocus?: () => void}} options `focus` puts the focus on the action at once (the
   *   member acted from the keyboard and the control they used is gone); `returnFocus` is called
   *   when the toast goes while it has the focus, so that the focus lands somewhere useful.
   */
  show(text, { action = "", onAction = null, focus = false, returnFocus = null } = {}) {
    this.dismiss();
    const toast = document.createElement("div");
    toast.className = "toast";
    const message = document.createElement("span");
    message.className = "toast-text";
    message.textContent = text;
    toast.append(message);
    let button = null;
    if (action) {
      button = document.createElement("button");
      button.type = "button";
      button.className = "toast-action";
      button.textContent = action;
      button.addEventListener("click", async () => {
        const hadFocus = toast.contains(document.activeElement);
        button.disabled = true;
        this.pause();
        try {
          await onAction?.();
        } finally {
          this.dismiss();
          if (hadFocus) returnFocus?.();
        }
      });
      toast.append(button);
    }
    toast.addEventListener("pointerenter", () => this.hold("pointer", true));
    toast.addEventListener("pointerleave", () => this.hold("pointer", false));
    toast.addEventListener("focusin", () => this.hold("focus", true));
    toast.addEventListener("focusout", (event) => {
      if (!toast.contains(event.relatedTarget)) this.hold("focus", false);
    });
    toast.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      // Not also a Stop of the reply or the closing of the drawer.
      event.preventDefault();
      event.stopPropagation();
      this.dismiss();
      returnFocus?.();
    });
    this.held = { pointer: false, focus: false };
    this.current = toast;
    this.region.append(toast);
    if (focus && button) button.focus();
    this.resume();
  }

  hold(what, value) {
    this.held[what] = value;
    if (this.held.pointer || this.held.focus) this.pause();
    else this.resume();
  }

  pause() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  resume() {
    this.pause();
    if (!this.current || this.held.pointer || this.held.focus) return;
    this.timer = setTimeout(() => this.dismiss(), SHOWN_MS);
  }

  dismiss() {
    this.pause();
    const toast = this.current;
    // First: removing a focused toast reports a focusout, which must not start a timer for it.
    this.current = null;
    toast?.remove();
  }
}
