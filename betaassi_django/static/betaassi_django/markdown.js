/* Assistant replies as Markdown, safely (docs/pages.md): marked turns the Markdown into HTML, DOMPurify cleans that
   HTML before it reaches the page. A reply's own raw HTML is shown as text and its images as links; what is left
   still goes through DOMPurify (no script, no event handler, no javascript: link). Links open in a new tab with
   rel="noopener noreferrer nofollow"; code blocks get a bar with their language and a Copy button (chat.js
   handles its clicks); tables and code blocks scroll sideways inside the bubble, reachable by the keyboard. */
(() => {
  "use strict";
  const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const markdown = new marked.Marked({
    gfm: true,
    renderer: {
      html: (token) => escapeHtml(token.text),  // a reply's own HTML is shown, never interpreted
      image: (token) => `<a href="${escapeHtml(token.href)}">${escapeHtml(token.text || token.href)}</a>`,
    },
  });
  const PURIFY = {FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "svg", "math"],
                  FORBID_ATTR: ["style", "id", "name"]};
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });

  function decorateCode(pre) {
    const code = pre.querySelector("code");
    const block = document.createElement("div"), bar = document.createElement("div");
    const language = document.createElement("span"), copy = document.createElement("button");
    block.className = "code-block";
    bar.className = "code-bar";
    const match = code && /language-([\w+#.-]+)/.exec(code.className);
    language.textContent = match ? match[1] : "code";
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    bar.append(language, copy);
    pre.tabIndex = 0;  // a long line scrolls sideways: the keyboard must reach it
    pre.replaceWith(block);
    block.append(bar, pre);
  }

  function renderMarkdown(target, text) {
    target.innerHTML = DOMPurify.sanitize(markdown.parse(text), PURIFY);
    target.querySelectorAll("pre").forEach(decorateCode);
    for (const table of target.querySelectorAll("table")) {
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      wrap.tabIndex = 0;
      table.replaceWith(wrap);
      wrap.append(table);
    }
  }

  window.betaassiMarkdown = {render: renderMarkdown};
})();
