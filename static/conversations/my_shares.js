// "My shared links" (templates/conversations/my_shares.html): each working link's Copy button puts its
// address on the clipboard. The page is usable without this script: the address is in a read-only field.
import { copyField } from "./dom.js";

for (const button of document.querySelectorAll("button.share-copy")) {
  const field = document.getElementById(button.dataset.target);
  const label = button.textContent;
  button.addEventListener("click", async () => {
    if (!(await copyField(field))) return;
    button.textContent = button.dataset.copied;
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  });
}
