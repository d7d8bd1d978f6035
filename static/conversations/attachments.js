// Images for vision models: chosen with the composer's button, pasted or dropped. Each is uploaded at
// once over HTTP (conversations/attachment_views.py: the socket takes no files) and shown as a
// thumbnail with a remove button until its message goes; the send names them by id
// (docs/websocket.md). In the thread, a message's images load from this site only, for their owner.

import { csrfToken } from "./api.js";
import { format, iconButton } from "./dom.js";

const ATTACHMENT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class AttachmentTray {
  /**
   * @param {{composer: HTMLElement, tray: HTMLElement, button: HTMLButtonElement,
   *          fileInput: HTMLInputElement, dropZone: HTMLElement, pasteTarget: HTMLElement,
   *          strings: object, limits: {image_max_bytes: number, images_per_message: number},
   *          uploadUrl: string, loginUrl: string, onChange: () => void,
   *          onUpload: () => void, onError: (text: string) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    // {file, id, element, progress, request, preview}: id is set once the server has the image.
    this.items = [];
    this.button.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      this.add([...this.fileInput.files]);
      // The same file chosen again must still fire "change".
      this.fileInput.value = "";
    });
    this.pasteTarget.addEventListener("paste", (event) => this.onPaste(event));
    this.dropZone.addEventListener("dragenter", (event) => this.onDragOver(event));
    this.dropZone.addEventListener("dragover", (event) => this.onDragOver(event));
    this.dropZone.addEventListener("dragleave", (event) => {
      if (!this.dropZone.contains(event.relatedTarget)) this.composer.classList.remove("dragging");
    });
    this.dropZone.addEventListener("drop", (event) => {
      if (!isFileDrag(event)) return;
      event.preventDefault();
      this.composer.classList.remove("dragging");
      this.add([...event.dataTransfer.files]);
    });
  }

  /** The ids of the uploaded images, in the order they were added. */
  ids() {
    return this.items.filter((item) => item.id).map((item) => item.id);
  }

  count() {
    return this.items.length;
  }

  /** Whether an upload is still running: the message waits for it. */
  busy() {
    return this.items.some((item) => !item.id);
  }

  /** The message went: its images are in the thread now. */
  clear() {
    for (const item of [...this.items]) this.remove(item, { quiet: true });
    this.changed();
  }

  add(files) {
    for (const file of files) {
      if (this.items.length >= this.limits.images_per_message) {
        this.onError(format(this.strings.too_many_images, { count: this.limits.images_per_message }));
        break;
      }
      if (file.size > this.limits.image_max_bytes) {
        const limit = Math.round((this.limits.image_max_bytes / (1024 * 1024)) * 10) / 10;
        this.onError(format(this.strings.image_too_large, { limit }));
        continue;
      }
      // Anything else goes to the server, which says by name why it refuses (an SVG, a polyglot…).
      const item = { file, id: null };
      this.items.push(item);
      this.tray.append(this.buildThumbnail(item));
      this.upload(item);
      this.onUpload();
    }
    this.changed();
  }

  buildThumbnail(item) {
    const element = document.createElement("li");
    element.className = "attachment uploading";
    const preview = document.createElement("img");
    // A blob: address of the member's own file (the page's CSP allows blob: images).
    item.preview = URL.createObjectURL(item.file);
    preview.src = item.preview;
    preview.alt = item.file.name || this.strings.attached_image;
    const progress = document.createElement("progress");
    progress.max = 1;
    progress.value = 0;
    progress.setAttribute("aria-label", this.strings.uploading_image);
    const remove = iconButton("close", this.strings.remove_image, "attachment-remove");
    remove.addEventListener("click", () => {
      this.remove(item);
      this.pasteTarget.focus();
    });
    element.append(preview, progress, remove);
    item.element = element;
    item.progress = progress;
    return element;
  }

  upload(item) {
    // XMLHttpRequest, not fetch: only it reports upload progress.
    const request = new XMLHttpRequest();
    item.request = request;
    request.open("POST", this.uploadUrl);
    request.setRequestHeader("Accept", "application/json");
    request.setRequestHeader("X-CSRFToken", csrfToken());
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) item.progress.value = event.loaded / event.total;
    });
    request.addEventListener("load", () => {
      if (request.status === 401) {
        window.location.assign(this.loginUrl);
        return;
      }
      const payload = request.response;
      if (request.status === 201 && ATTACHMENT_ID.test(payload?.id || "")) {
        item.id = payload.id;
        item.request = null;
        item.element.classList.remove("uploading");
        item.progress.remove();
        this.changed();
      } else {
        this.fail(item, payload?.error?.detail);
      }
    });
    request.addEventListener("error", () => this.fail(item, null));
    const body = new FormData();
    body.append("file", item.file);
    request.send(body);
  }

  fail(item, detail) {
    this.remove(item);
    this.onError(detail || this.strings.image_failed);
  }

  remove(item, { quiet = false } = {}) {
    const index = this.items.indexOf(item);
    if (index < 0) return;
    this.items.splice(index, 1);
    item.request?.abort();
    URL.revokeObjectURL(item.preview);
    item.element.remove();
    if (!quiet) this.changed();
  }

  changed() {
    this.tray.hidden = this.items.length === 0;
    this.onChange();
  }

  onPaste(event) {
    const data = event.clipboardData;
    if (!data) return;
    // Text copied from an office program comes with a picture of itself: the text is what was meant.
    if (data.types.includes("text/plain")) return;
    const files = [...data.files].filter((file) => file.type.startsWith("image/"));
    if (!files.length) return;
    event.preventDefault();
    this.add(files);
  }

  onDragOver(event) {
    if (!isFileDrag(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    this.composer.classList.add("dragging");
  }
}

function isFileDrag(event) {
  return [...(event.dataTransfer?.types || [])].includes("Files");
}

/**
 * One image of a member's message, from this site (attachment_views.serve, owner only), opening in
 * full in a new tab. Its width and height keep its place while it loads.
 * @param {{attachment: string, width?: number, height?: number}} part
 * @param {(id: string) => string} imageUrl
 */
export function messageImage(part, strings, imageUrl) {
  const id = String(part.attachment || "");
  if (!imageUrl || !ATTACHMENT_ID.test(id)) {
    const placeholder = document.createElement("span");
    placeholder.className = "image-placeholder";
    placeholder.textContent = strings.image;
    return placeholder;
  }
  const link = document.createElement("a");
  link.className = "message-image";
  link.href = imageUrl(id);
  link.target = "_blank";
  link.rel = "noopener";
  const image = document.createElement("img");
  image.src = link.href;
  image.alt = strings.attached_image;
  image.loading = "lazy";
  image.decoding = "async";
  if (Number.isInteger(part.width) && Number.isInteger(part.height)) {
    image.width = part.width;
    image.height = part.height;
  }
  link.append(image);
  return link;
}
