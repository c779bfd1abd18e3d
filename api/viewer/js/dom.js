// DOM helpers. Server text (report sentences, codes, model names, DICOM-derived strings) is
// always set with textContent: nothing from the network is ever parsed as HTML.

export const $ = (id) => document.getElementById(id);

export function el(tag, { text = null, className = null, attrs = {} } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== null && text !== undefined) node.textContent = String(text);
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

export function row(cells) {
  return el("tr", {}, cells.map((c) => (c instanceof Node ? c : el("td", { text: c }))));
}

export function numCell(text) {
  return el("td", { text, className: "num" });
}

// <dl> content from [label, value] pairs; a value may be a string or a Node.
export function facts(dl, pairs) {
  const nodes = [];
  for (const [label, value] of pairs) {
    nodes.push(el("dt", { text: label }));
    nodes.push(value instanceof Node ? el("dd", {}, [value]) : el("dd", { text: value }));
  }
  dl.replaceChildren(...nodes);
}

export function list(items) {
  return el("ul", {}, items.map((item) => el("li", { text: item })));
}

export const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));
