// The conversation's settings (templates/conversations/_settings.html): system prompt, parameters,
// JSON output and tools, saved on the server (PATCH /api/conversations/<id>/); and the team's
// assistants (conversations/assistant_views.py): "Save as assistant", and the picker a new
// conversation starts from. The server checks every value (conversations/parameters.py); its error
// names the parameter, whose field is then marked.
//
// A new conversation does not exist before its first message: its settings are a draft sent with that
// message (the send frame's `assistant` and `settings`, docs/websocket.md).

import { requestJSON } from "./api.js";
import { format } from "./dom.js";

const $ = (id) => document.getElementById(id);

export class SettingsPanel {
  /**
   * @param {{data: object, strings: object, openButton: HTMLButtonElement,
   *          assistantChoice: HTMLElement, assistantPicker: HTMLSelectElement,
   *          selected: () => string | null, model: () => number | null,
   *          onAssistant: (assistant: object | null) => void, onSaved: (text: string) => void}} options
   */
  constructor(options) {
    Object.assign(this, options);
    this.dialog = $("settings-dialog");
    this.form = $("settings-form");
    this.error = $("settings-error");
    this.systemPrompt = $("settings-system-prompt");
    this.toolList = $("settings-tool-list");
    this.toolChoice = $("param-tool_choice");
    this.schemaBox = $("settings-schema");
    this.assistants = [...(this.data.assistants || [])];
    // A new conversation's settings until its first message: {system_prompt, parameters, tools} or null.
    this.draft = null;
    this.assistant = null;
    this.buildTools();
    this.fillAssistantPicker();

    this.openButton.addEventListener("click", () => this.open());
    $("settings-close").addEventListener("click", () => this.dialog.close());
    $("settings-cancel").addEventListener("click", () => this.dialog.close());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    $("save-assistant").addEventListener("click", () => this.saveAssistant());
    for (const radio of this.form.elements["json-mode"]) {
      radio.addEventListener("change", () => this.showSchema());
    }
    this.assistantPicker.addEventListener("change", () => this.pickAssistant());
    this.dialog.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || event.isComposing) return;
      // Handled here: the page's own Escape stops a reply being written, which is not what was meant.
      event.preventDefault();
      this.dialog.close();
    });
    this.dialog.addEventListener("close", () => this.openButton.focus());
  }

  // --- Opening and filling --------------------------------------------------------------------------

  async open() {
    this.hideError();
    $("settings-new-note").hidden = this.selected() !== null;
    let settings = this.draft || { system_prompt: "", parameters: {}, tools: [] };
    const id = this.selected();
    if (id) {
      try {
        settings = (await this.request(this.urlFor(this.data.urls.conversation_detail, id))).conversation;
      } catch (error) {
        this.onSaved(error.message);
        return;
      }
    }
    this.fill(settings);
    this.showForModel();
    this.dialog.showModal();
    this.systemPrompt.focus();
  }

  fill({ system_prompt: systemPrompt, parameters, tools }) {
    this.systemPrompt.value = systemPrompt || "";
    for (const input of this.form.querySelectorAll("[data-kind]")) {
      const name = input.id.replace(/^param-/, "");
      input.value = this.shown(input.dataset.kind, parameters[name]);
      input.removeAttribute("aria-invalid");
    }
    const responseFormat = parameters.response_format;
    const mode = responseFormat?.type || "";
    for (const radio of this.form.elements["json-mode"]) radio.checked = radio.value === mode;
    const schema = responseFormat?.json_schema || {};
    $("json-schema-name").value = schema.name || "";
    $("json-schema").value = schema.schema ? JSON.stringify(schema.schema, null, 2) : "";
    $("json-schema-strict").checked = schema.strict !== false;
    this.showSchema();
    for (const box of this.toolList.querySelectorAll("input")) box.checked = tools.includes(box.value);
  }

  shown(kind, value) {
    if (value === undefined || value === null) return "";
    if (kind === "lines") return (Array.isArray(value) ? value : [value]).join("\n");
    if (kind === "json") return JSON.stringify(value);
    if (kind === "tool_choice" && typeof value === "object") return `fn:${value.function?.name}`;
    return String(value);
  }

  /** Only what the picked model takes is shown; hidden values are kept and saved all the same. */
  showForModel() {
    const model = this.data.models.find((item) => item.id === this.model());
    const supported = new Set(model?.parameters || []);
    for (const field of this.dialog.querySelectorAll("[data-parameter]")) {
      field.hidden = !supported.has(field.dataset.parameter);
    }
    $("settings-tools").hidden = !model?.tools || !this.data.tools.length;
  }

  showSchema() {
    this.schemaBox.hidden = this.form.elements["json-mode"].value !== "json_schema";
  }

  buildTools() {
    for (const name of this.data.tools || []) {
      const label = document.createElement("label");
      label.className = "settings-check";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = name;
      label.append(box, ` ${name}`);
      this.toolList.append(label);
      const option = document.createElement("option");
      option.value = `fn:${name}`;
      option.textContent = format(this.strings.call_tool, { name });
      this.toolChoice.append(option);
    }
  }

  // --- Reading the form ------------------------------------------------------------------------------

  /** The form as {system_prompt, parameters, tools}; throws {parameter, message} on JSON it cannot read. */
  read() {
    const parameters = {};
    for (const input of this.form.querySelectorAll("[data-kind]")) {
      const name = input.id.replace(/^param-/, "");
      const value = this.parsed(name, input.dataset.kind, input.value.trim());
      if (value !== null) parameters[name] = value;
    }
    const mode = this.form.elements["json-mode"].value;
    if (mode === "json_object") parameters.response_format = { type: "json_object" };
    if (mode === "json_schema") {
      parameters.response_format = {
        type: "json_schema",
        json_schema: {
          name: $("json-schema-name").value.trim(),
          schema: this.json("response_format", $("json-schema").value.trim() || "{}"),
          strict: $("json-schema-strict").checked,
        },
      };
    }
    const tools = [...this.toolList.querySelectorAll("input:checked")].map((box) => box.value);
    return { system_prompt: this.systemPrompt.value, parameters, tools };
  }

  parsed(name, kind, text) {
    if (text === "") return null;
    if (kind === "number") return Number(text);
    if (kind === "lines") return text.split("\n").map((line) => line.trim()).filter(Boolean);
    if (kind === "json") return this.json(name, text);
    if (kind === "tool_choice" && text.startsWith("fn:")) {
      return { type: "function", function: { name: text.slice(3) } };
    }
    return text;
  }

  json(parameter, text) {
    try {
      return JSON.parse(text);
    } catch {
      throw { parameter, message: format(this.strings.invalid_json, { field: parameter }) };
    }
  }

  // --- Saving ---------------------------------------------------------------------------------------

  async save() {
    let settings;
    try {
      settings = this.read();
    } catch (problem) {
      this.showError(problem.message, problem.parameter);
      return;
    }
    const id = this.selected();
    if (!id) {
      this.draft = settings;
      this.dialog.close();
      return;
    }
    try {
      await this.request(this.urlFor(this.data.urls.conversation_detail, id), "PATCH", settings);
    } catch (error) {
      this.showError(error.message, error.parameter);
      return;
    }
    this.dialog.close();
    this.onSaved(this.strings.settings_saved);
  }

  async saveAssistant() {
    const nameInput = $("assistant-name");
    const name = nameInput.value.trim();
    if (!name) {
      this.showError(this.strings.assistant_name_needed);
      nameInput.focus();
      return;
    }
    let settings;
    try {
      settings = this.read();
    } catch (problem) {
      this.showError(problem.message, problem.parameter);
      return;
    }
    try {
      const answer = await this.request(this.data.urls.assistant_list, "POST", {
        name,
        model: this.model(),
        ...settings,
      });
      this.assistants.push(answer.assistant);
      this.assistants.sort((a, b) => a.name.localeCompare(b.name));
      this.fillAssistantPicker();
    } catch (error) {
      this.showError(error.message, error.parameter);
      return;
    }
    nameInput.value = "";
    this.hideError();
    this.onSaved(format(this.strings.assistant_saved, { name }));
  }

  // --- Assistants for a new conversation ------------------------------------------------------------

  fillAssistantPicker() {
    const picked = this.assistantPicker.value;
    this.assistantPicker.replaceChildren(this.assistantPicker.options[0] || new Option("", ""));
    this.assistantPicker.options[0].textContent = this.strings.no_assistant;
    this.assistantPicker.options[0].value = "";
    for (const assistant of this.assistants) {
      this.assistantPicker.append(new Option(assistant.name, String(assistant.id)));
    }
    this.assistantPicker.value = picked;
    this.showAssistantChoice();
  }

  pickAssistant() {
    const id = Number(this.assistantPicker.value);
    this.assistant = this.assistants.find((item) => item.id === id) || null;
    const picked = this.assistant;
    this.draft = picked
      ? { system_prompt: picked.system_prompt, parameters: { ...picked.parameters }, tools: [...picked.tools] }
      : null;
    this.onAssistant(picked);
  }

  /** A new conversation: no assistant, no draft; the picker shows while nothing is selected. */
  reset() {
    this.draft = null;
    this.assistant = null;
    this.assistantPicker.value = "";
    this.showAssistantChoice();
  }

  showAssistantChoice() {
    this.assistantChoice.hidden = this.selected() !== null || this.assistants.length === 0;
  }

  /** What the send frame that starts a conversation carries: the assistant and the draft. */
  newConversationFields() {
    const fields = {};
    if (this.assistant) fields.assistant = this.assistant.id;
    if (this.draft) fields.settings = this.draft;
    return fields;
  }

  // --- Small things ---------------------------------------------------------------------------------

  urlFor(pattern, id) {
    return pattern.replace(this.data.any_id, id);
  }

  request(url, method = "GET", body = undefined) {
    return requestJSON(url, { method, body, loginUrl: this.data.urls.login, failed: this.strings.request_failed });
  }

  showError(text, parameter) {
    this.error.textContent = text;
    this.error.hidden = false;
    for (const marked of this.form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
    const field = parameter && this.dialog.querySelector(`[data-parameter="${CSS.escape(parameter)}"]`);
    const input = field && !field.hidden ? field.querySelector("input, select, textarea") : null;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", "settings-error");
      input.focus();
    }
  }

  hideError() {
    this.error.hidden = true;
    this.error.textContent = "";
  }
}
