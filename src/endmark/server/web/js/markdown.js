// Markdown to safe HTML: marked parses, DOMPurify cleans (a model's text is untrusted),
// highlight.js colours code, and each code block gets a copy button.

import { marked } from "../vendor/marked.esm.js";
import hljs from "../vendor/highlight.min.js";

marked.setOptions({ gfm: true, breaks: true });

export function renderMarkdown(target, text) {
  const html = marked.parse(text || "");
  target.innerHTML = window.DOMPurify.sanitize(html);
  for (const code of target.querySelectorAll("pre code")) {
    const language = (code.className.match(/language-([\w+-]+)/) || [])[1];
    if (language && hljs.getLanguage(language)) {
      code.innerHTML = hljs.highlight(code.textContent, { language }).value;
    } else {
      code.innerHTML = hljs.highlightAuto(code.textContent).value;
    }
    code.classList.add("hljs");
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.title = "Copy the code";
    code.parentElement.prepend(copy);
  }
}

// One listener for every copy button on the page.
document.addEventListener("click", (event) => {
  const button = event.target.closest(".copy-code");
  if (!button) return;
  const code = button.parentElement.querySelector("code");
  const done = () => {
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(code.textContent).then(done, () => fallbackCopy(code, done));
  } else {
    fallbackCopy(code, done);
  }
});

function fallbackCopy(code, done) {
  // Plain http on another host is not a secure context: no clipboard API there.
  const area = document.createElement("textarea");
  area.value = code.textContent;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
}
