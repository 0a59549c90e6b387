"""A letter's Markdown body as plain data (paragraphs, lists, runs of emphasis) for PDF and DOCX.

Both print engines lay out the same structure, built from markdown-it tokens, so neither parses
Markdown itself and no body text ever reaches an engine as markup: a run is a string to print.
Raw HTML in the body stays text, as in the html output (html=False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_LINK_SCHEMES = ("http:", "https:", "mailto:")  # as the html output's sanitiser allows


@dataclass(frozen=True)
class Run:
    """A stretch of text with one set of styles; text "\\n" alone is a hard line break."""

    text: str
    strong: bool = False
    em: bool = False
    code: bool = False
    href: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "strong": self.strong,
            "em": self.em,
            "code": self.code,
            "href": self.href,
        }


@dataclass(frozen=True)
class Block:
    """kind: paragraph, heading, list, quote, code or rule."""

    kind: str
    runs: list[Run] = field(default_factory=list)
    level: int = 0  # heading level
    ordered: bool = False
    start: int = 1  # first number of an ordered list
    items: list[list[Block]] = field(default_factory=list)  # list items; a quote's is one item

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "runs": [run.as_json() for run in self.runs],
            "level": self.level,
            "ordered": self.ordered,
            "start": self.start,
            "items": [[block.as_json() for block in item] for item in self.items],
        }


def parse_body(body: str) -> list[Block]:
    """The body's blocks in order, as the html output shows them."""
    return _blocks(SyntaxTreeNode(_markdown.parse(body)).children)


def _blocks(nodes: list[SyntaxTreeNode]) -> list[Block]:
    blocks: list[Block] = []
    for node in nodes:
        kind = node.type
        if kind == "paragraph":
            blocks.append(Block("paragraph", _inline(node)))
        elif kind == "heading":
            blocks.append(Block("heading", _inline(node), level=int(node.tag[1:])))
        elif kind in ("bullet_list", "ordered_list"):
            start = node.attrs.get("start", 1)
            blocks.append(
                Block(
                    "list",
                    ordered=kind == "ordered_list",
                    start=int(start) if isinstance(start, int | str) else 1,
                    items=[_blocks(item.children) for item in node.children],
                )
            )
        elif kind == "blockquote":
            blocks.append(Block("quote", items=[_blocks(node.children)]))
        elif kind in ("code_block", "fence"):
            blocks.append(Block("code", [Run(node.content.rstrip("\n"), code=True)]))
        elif kind == "hr":
            blocks.append(Block("rule"))
        elif kind == "html_block":  # not produced with html=False; kept as text if it ever is
            blocks.append(Block("paragraph", [Run(node.content.rstrip("\n"))]))
    return blocks


def _inline(node: SyntaxTreeNode) -> list[Run]:
    runs: list[Run] = []
    for child in node.children:  # the one "inline" node
        _walk(child.children, runs, strong=False, em=False, href="")
    return _merged(runs)


def _walk(
    nodes: list[SyntaxTreeNode], runs: list[Run], *, strong: bool, em: bool, href: str
) -> None:
    for node in nodes:
        kind = node.type
        if kind in ("text", "html_inline"):
            runs.append(Run(node.content, strong=strong, em=em, href=href))
        elif kind == "code_inline":
            runs.append(Run(node.content, strong=strong, em=em, code=True, href=href))
        elif kind == "softbreak":
            runs.append(Run(" ", strong=strong, em=em, href=href))
        elif kind == "hardbreak":
            runs.append(Run("\n"))
        elif kind == "strong":
            _walk(node.children, runs, strong=True, em=em, href=href)
        elif kind == "em":
            _walk(node.children, runs, strong=strong, em=True, href=href)
        elif kind == "link":
            target = str(node.attrs.get("href", ""))
            safe = target if target.lower().startswith(_LINK_SCHEMES) else ""
            _walk(node.children, runs, strong=strong, em=em, href=safe)
        elif kind == "image":  # a letter prints its text: an image shows its description
            _walk(node.children, runs, strong=strong, em=em, href=href)


def _merged(runs: list[Run]) -> list[Run]:
    """Neighbouring runs of the same style as one (fewer elements for the engines to lay out)."""
    merged: list[Run] = []
    for run in runs:
        last = merged[-1] if merged else None
        if (
            last is not None
            and "\n" not in (last.text, run.text)
            and (last.strong, last.em, last.code, last.href)
            == (run.strong, run.em, run.code, run.href)
        ):
            merged[-1] = Run(last.text + run.text, run.strong, run.em, run.code, run.href)
        else:
            merged.append(run)
    return merged
