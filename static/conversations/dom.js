// Small builders for the chat page's elements.

const SVG = "http://www.w3.org/2000/svg";

/** An icon from the page's sprite (templates/conversations/chat.html). */
export function icon(name) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG, "use");
  use.setAttribute("href", `#icon-${name}`);
  svg.append(use);
  return svg;
}

/** A button that shows an icon and says what it does to assistive technology and on hover. */
export function iconButton(name, label, className = "") {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `icon-button ${className}`.trim();
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(icon(name));
  return button;
}

/** Fill "%(name)s" placeholders, the gettext style the strings arrive in. */
export function format(template, values) {
  return template.replace(/%\((\w+)\)s/g, (match, key) => (key in values ? String(values[key]) : match));
}

/** Put a field's text on the clipboard; without one (an insecure origin), select it for the reader to
 *  copy. Whether it was copied. */
export async function copyField(field) {
  try {
    await navigator.clipboard.writeText(field.value);
    return true;
  } catch {
    field.select();
    return false;
  }
}
