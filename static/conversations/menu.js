// A small menu of choices opened from a button ("Move to…"), one at a time on the page: the arrow
// keys, Home and End move between choices, Enter or a click picks one, Esc or Tab closes it and gives
// the focus back. It is fixed to the window beside its button, so the scrolling list cannot clip it;
// scrolling or resizing closes it.

export class PopupMenu {
  /** @param {HTMLElement} container where the menu lives: inside the landmark of its buttons */
  constructor(container) {
    this.element = document.createElement("div");
    this.element.className = "popup-menu";
    this.element.setAttribute("role", "menu");
    this.element.hidden = true;
    container.append(this.element);
    this.trigger = null;
    this.onChoose = null;
    this.restoreFocus = null;
    this.element.addEventListener("keydown", (event) => this.onKey(event));
    this.element.addEventListener("click", (event) => {
      const choice = event.target.closest("[role^=menuitem]");
      if (!choice || choice.getAttribute("aria-disabled") === "true") return;
      const onChoose = this.onChoose;
      this.close({ focus: false });
      onChoose?.(JSON.parse(choice.dataset.value));
    });
    document.addEventListener(
      "pointerdown",
      (event) => {
        if (!this.isOpen || this.element.contains(event.target) || this.trigger?.contains(event.target)) return;
        this.close({ focus: false });
      },
      true,
    );
    document.addEventListener(
      "scroll",
      (event) => {
        if (this.isOpen && event.target !== this.element) this.close({ focus: false });
      },
      true,
    );
    window.addEventListener("resize", () => this.close({ focus: false }));
  }

  get isOpen() {
    return !this.element.hidden;
  }

  /**
   * @param {{trigger: HTMLElement, label: string,
   *          choices: {label: string, value: unknown, checked?: boolean}[], note?: string,
   *          onChoose: (value: unknown) => void, restoreFocus?: () => void}} options
   *   `restoreFocus` puts the focus back when the menu closes without a choice, for when the list
   *   was redrawn meanwhile and `trigger` is no longer on the page.
   */
  open({ trigger, label, choices, note = "", onChoose, restoreFocus = null }) {
    if (this.isOpen && this.trigger === trigger) {
      this.close();
      return;
    }
    this.close({ focus: false });
    this.trigger = trigger;
    this.onChoose = onChoose;
    this.restoreFocus = restoreFocus;
    this.element.setAttribute("aria-label", label);
    const items = choices.map((choice) => {
      const item = document.createElement("button");
      item.type = "button";
      item.className = "popup-item";
      item.setAttribute("role", "menuitemradio");
      item.setAttribute("aria-checked", String(Boolean(choice.checked)));
      item.tabIndex = -1;
      item.dataset.value = JSON.stringify(choice.value);
      item.textContent = choice.label;
      return item;
    });
    if (note) {
      // A menu holds only its items: the note is one that does nothing, read out like the others.
      const hint = document.createElement("div");
      hint.className = "popup-note";
      hint.setAttribute("role", "menuitem");
      hint.setAttribute("aria-disabled", "true");
      hint.tabIndex = -1;
      hint.textContent = note;
      items.push(hint);
    }
    this.element.replaceChildren(...items);
    this.element.hidden = false;
    trigger.setAttribute("aria-expanded", "true");
    this.place(trigger);
    (items.find((item) => item.getAttribute("aria-checked") === "true") || items[0])?.focus();
  }

  place(trigger) {
    // CSSOM, not a style attribute: allowed under the page's style-src 'self'.
    const gap = 4;
    const margin = 8;
    const anchor = trigger.getBoundingClientRect();
    const { offsetWidth: width, offsetHeight: height } = this.element;
    const left = Math.max(margin, Math.min(anchor.right - width, window.innerWidth - width - margin));
    let top = anchor.bottom + gap;
    if (top + height > window.innerHeight - margin) top = Math.max(margin, anchor.top - gap - height);
    this.element.style.left = `${left}px`;
    this.element.style.top = `${top}px`;
  }

  close({ focus = true } = {}) {
    if (!this.isOpen) return;
    const hadFocus = this.element.contains(document.activeElement);
    this.element.hidden = true;
    this.trigger?.setAttribute("aria-expanded", "false");
    if (focus && hadFocus) {
      if (this.trigger?.isConnected) this.trigger.focus();
      else this.restoreFocus?.();
    }
    this.trigger = null;
    this.onChoose = null;
  }

  onKey(event) {
    const items = [...this.element.querySelectorAll("[role^=menuitem]")];
    const index = items.indexOf(document.activeElement);
    let next = null;
    if (event.key === "ArrowDown") next = items[(index + 1) % items.length];
    else if (event.key === "ArrowUp") next = items[(index - 1 + items.length) % items.length];
    else if (event.key === "Home") next = items[0];
    else if (event.key === "End") next = items.at(-1);
    else if (event.key === "Escape" || event.key === "Tab") {
      event.preventDefault();
      // Not also the closing of the drawer, nor a Stop of the reply.
      event.stopPropagation();
      this.close();
      return;
    }
    if (next) {
      event.preventDefault();
      next.focus();
    }
  }
}
