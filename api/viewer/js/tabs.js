// WAI-ARIA tabs: one tab in the Tab order (roving tabindex), arrow keys, Home and End move
// between tabs and activate them; Tab from the tab moves into its panel.

export class Tabs {
  constructor(tablist) {
    this.tabs = [...tablist.querySelectorAll('[role="tab"]')];
    for (const tab of this.tabs) {
      tab.addEventListener("click", () => this.select(tab));
      tab.addEventListener("keydown", (event) => this.onKey(event, tab));
    }
  }

  onKey(event, tab) {
    const i = this.tabs.indexOf(tab);
    const n = this.tabs.length;
    const target = {
      ArrowRight: this.tabs[(i + 1) % n],
      ArrowLeft: this.tabs[(i - 1 + n) % n],
      Home: this.tabs[0],
      End: this.tabs[n - 1],
    }[event.key];
    if (target) {
      event.preventDefault();
      this.select(target);
      target.focus();
    }
  }

  select(tab) {
    for (const t of this.tabs) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !selected;
    }
  }

  selectById(id) {
    const tab = this.tabs.find((t) => t.id === id);
    if (tab) this.select(tab);
  }
}
