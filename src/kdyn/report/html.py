"""A tiny HTML layer where escaping is the default, and the page shell of the report.

Every string that reaches the page goes through `esc` unless it is `Markup`, and only this module makes
`Markup` (from tags whose text and attribute values it escaped itself). So an entity called
`<script>alert(1)</script>`, a config value or a file name shows as text and runs nothing. The page has
no script at all, and its Content-Security-Policy forbids scripts and any network load as a second guard.

    tag("p", "Loss fell ", tag("b", "2.9 → 0.4"), class_="note")   # keyword `class_` → attribute `class`
    table(["kind", "n"], [["new", 28], ["known", 9]])
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


class Markup(str):
    """HTML this module built (its text already escaped); everything else is text."""


def esc(value: Any) -> Markup:
    """`value` as HTML: Markup passes through, anything else is escaped text (None → '')."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    return Markup(esc(sep).join(esc(p) for p in parts))


VOID = {"img", "meta", "link", "br", "hr"}


def tag(element: str, /, *children: Any, **attrs: Any) -> Markup:
    """<element attrs>children</element>; attribute names lose a trailing '_' and use '-' for '_'."""
    parts = [element]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{esc(value)}"')
    open_ = f"<{' '.join(parts)}>"
    if element in VOID:
        return Markup(open_)
    return Markup(f"{open_}{join(children)}</{element}>")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], caption: Any = None, numeric_from: int = 1,
          class_: str | None = None) -> Markup:  # fmt: skip
    """A table; columns from `numeric_from` on are right-aligned (numbers)."""

    def cells(row: Sequence[Any], cell: str) -> Markup:
        return tag("tr", *[tag(cell, v, class_="num" if i >= numeric_from else None) for i, v in enumerate(row)])

    body = [cells(r, "td") for r in rows]
    return tag("div", tag("table", tag("caption", caption) if caption is not None else "",
                          tag("thead", cells(header, "th")), tag("tbody", *body), class_=class_),
               class_="table-wrap")  # fmt: skip


def key_values(pairs: Iterable[tuple[Any, Any]]) -> Markup:
    """A two-column definition table (label, value)."""
    return tag("table", *[tag("tr", tag("th", k), tag("td", v)) for k, v in pairs], class_="kv")


def bullets(items: Iterable[Any], class_: str | None = None) -> Markup:
    return tag("ul", *[tag("li", item) for item in items], class_=class_)


def details(summary: Any, *body: Any) -> Markup:
    return tag("details", tag("summary", summary), *body)


@dataclass
class Section:
    """One numbered section of the report; `key` is its element id (the browser test looks for it)."""

    key: str
    title: str
    lead: str | None = None  # one sentence under the title: what the section answers
    body: list[Markup] = field(default_factory=list)

    def add(self, *blocks: Markup) -> Section:
        self.body.extend(blocks)
        return self


CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
:root { --ink:#1d2430; --muted:#5b6575; --line:#dfe3ea; --bg:#fbfcfd; --accent:#2b5cab; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif; }
header { background:#fff; border-bottom:1px solid var(--line); padding:14px 24px 10px; }
header h1 { font-size:22px; margin:0 0 2px; }
header p { margin:0; color:var(--muted); }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:6px 24px;
      font-size:13.5px; white-space:nowrap; overflow-x:auto; }
nav a { color:var(--accent); text-decoration:none; margin-right:16px; }
main { max-width:1260px; margin:0 auto; padding:8px 24px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:6px; padding:6px 20px 14px; margin:16px 0;
          scroll-margin-top:40px; }
h2 { font-size:19px; margin:10px 0 8px; }
h3 { font-size:15.5px; margin:16px 0 6px; }
p.lead { color:var(--muted); margin:0 0 8px; }
figure { margin:12px 0 16px; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { color:var(--muted); font-size:13.5px; margin-top:4px; }
figcaption b { color:var(--ink); }
.table-wrap { overflow-x:auto; margin:8px 0 12px; }
table { border-collapse:collapse; font-size:13px; }
caption { text-align:left; color:var(--muted); padding:0 0 4px; }
th, td { padding:3px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
thead th { border-bottom:2px solid #c5cbd5; font-weight:600; vertical-align:bottom; }
tbody td:first-child { white-space:nowrap; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
th.num { text-align:right; }
span.ci { color:var(--muted); font-size:11.5px; }
tbody tr:nth-child(even) { background:#f6f8fa; }
table.kv th { color:var(--muted); font-weight:normal; white-space:nowrap; }
.cols { display:flex; flex-wrap:wrap; gap:4px 36px; align-items:flex-start; }
ul.findings li { margin:4px 0; }
.glance { background:#eef4fb; border:1px solid #c9daf0; border-radius:6px; padding:10px 20px; margin:16px 0 0; }
.glance ul { margin:4px 0 6px; padding-left:20px; } .glance li { margin:3px 0; }
.glance a { color:var(--accent); font-size:13.5px; text-decoration:none; }
ul.notes { color:var(--muted); font-size:13px; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); }
pre { background:#f4f6f8; padding:10px; font-size:12.5px; overflow-x:auto; max-height:420px; }
footer { color:var(--muted); font-size:12.5px; text-align:center; padding:16px; }
"""


def page(title: str, subtitle: Any, sections: list[Section], footer: Any, glance: list[str] | None = None) -> str:
    """The whole document: head (CSP, inline CSS), header, navigation, the findings at a glance, sections, footer."""
    nav = tag("nav", *[tag("a", s.title, href=f"#{s.key}") for s in sections])
    body = [tag("section", tag("h2", s.title), tag("p", s.lead, class_="lead") if s.lead else "", *s.body, id=s.key)
            for s in sections]  # fmt: skip
    head = tag("head", tag("meta", charset="utf-8"), tag("meta", http_equiv="Content-Security-Policy", content=CSP),
               tag("meta", name="viewport", content="width=device-width, initial-scale=1"),
               tag("link", rel="icon", href="data:,"), tag("title", title), tag("style", Markup(CSS)))  # fmt: skip
    if glance:
        body.insert(0, tag("div", tag("b", "At a glance"), bullets(glance),
                           tag("a", "all findings ↓", href="#findings"), class_="glance"))  # fmt: skip
    doc = tag("html", head, tag("body", tag("header", tag("h1", title), tag("p", subtitle)), nav, tag("main", *body),
                                tag("footer", footer)), lang="en")  # fmt: skip
    return "<!DOCTYPE html>\n" + doc + "\n"
