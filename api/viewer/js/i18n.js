// Message catalogues (i18n/en.json, i18n/ru.json: identical keys, checked by a test) and
// helpers that put translated text into the page. Everything is inserted as text, never HTML.

export const LANGUAGES = ["en", "ru"];

export class I18n {
  constructor() {
    this.lang = "en";
    this.catalogues = new Map();
    this.listeners = [];
  }

  async load(lang) {
    if (!this.catalogues.has(lang)) {
      const response = await fetch(`i18n/${lang}.json`, { cache: "no-cache" });
      if (!response.ok) throw new Error(`catalogue ${lang}: HTTP ${response.status}`);
      this.catalogues.set(lang, await response.json());
    }
    this.lang = lang;
    document.documentElement.lang = lang;
    this.apply(document);
    for (const listener of this.listeners) listener(lang);
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  has(key) {
    return Object.hasOwn(this.catalogues.get(this.lang) ?? {}, key);
  }

  // Message for `key` with {name} placeholders filled from `params` (numbers are formatted
  // for the language). Unknown keys come back as the key itself, which a test would catch.
  t(key, params = {}) {
    const text = this.catalogues.get(this.lang)?.[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (whole, name) =>
      Object.hasOwn(params, name) ? this.format(params[name]) : whole,
    );
  }

  format(value) {
    return typeof value === "number" ? this.number(value) : String(value);
  }

  number(value, digits = null) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    const options = digits === null ? { maximumFractionDigits: 3 } : {
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    };
    return new Intl.NumberFormat(this.lang, options).format(value);
  }

  percent(value, digits = 1) {
    if (value === null || value === undefined) return "—";
    return new Intl.NumberFormat(this.lang, {
      style: "percent", minimumFractionDigits: digits, maximumFractionDigits: digits,
    }).format(value);
  }

  bytes(n) {
    const units = ["B", "KB", "MB", "GB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    const text = new Intl.NumberFormat(this.lang, { maximumFractionDigits: 1 }).format(value);
    return `${text} ${this.t(`unit.${units[unit]}`)}`;
  }

  // Static markup: data-i18n (text), data-i18n-aria-label, data-i18n-title.
  apply(root) {
    for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = this.t(el.dataset.i18n);
    for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
      el.setAttribute("aria-label", this.t(el.dataset.i18nAriaLabel));
    }
    for (const el of root.querySelectorAll("[data-i18n-title]")) {
      el.setAttribute("title", this.t(el.dataset.i18nTitle));
    }
  }
}
