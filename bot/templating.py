"""The one Jinja2 Environment.

Every value printed by ``{{ }}`` is escaped for the output format of the render (context variable
``_format``: text, md, html, mrkdwn) by the environment's ``finalize`` hook, so no template can
forget to escape a name. Values already made safe for that format are ``Safe`` instances.
"""

from __future__ import annotations

import html
import re
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context
from jinja2.runtime import Context

#: The repository's templates/ directory, installed as this resource package (see setup.py):
#: loading through the import system works from a wheel as well as from the checkout.
TEMPLATE_PACKAGE = "bot.templates"
FORMATS = ("text", "md", "html", "mrkdwn")

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~!{}&])")
_MD_LINE_START = re.compile(r"^(\s*)([-+=]|\d+[.)])")


class Safe(str):
    """A string already escaped (or built) for the format being rendered."""


def escape_markdown(text: str) -> str:
    """Backslash-escape what CommonMark would treat as markup; '(' '-' '.' stay readable."""
    escaped = _MD_SPECIAL.sub(r"\\\1", text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def escape_mrkdwn(text: str) -> str:
    """Slack mrkdwn: only & < > need escaping; this also neutralises <!channel> and <@U…>."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_for(fmt: str, text: str) -> str:
    if fmt == "html":
        return html.escape(text, quote=True)
    if fmt == "md":
        return escape_markdown(text)
    if fmt == "mrkdwn":
        return escape_mrkdwn(text)
    return text


def _format_of(context: Context) -> str:
    fmt = context.get("_format")
    if isinstance(fmt, str):
        return fmt
    name = context.name or ""
    for candidate, suffix in (("html", ".html.j2"), ("md", ".md.j2"), ("mrkdwn", ".mrkdwn.j2")):
        if name.endswith(suffix):
            return candidate
    return "text"


@pass_context
def _finalize(context: Context, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Safe):
        return value
    return escape_for(_format_of(context), str(value))


@pass_context
def _bold(context: Context, value: Any) -> Safe:
    fmt = _format_of(context)
    inner = escape_for(fmt, str(value))
    if fmt == "html":
        return Safe(f"<b>{inner}</b>")
    if fmt == "md":
        return Safe(f"**{inner}**")
    if fmt == "mrkdwn":
        return Safe(f"*{inner}*")
    return Safe(inner)


@pass_context
def _code(context: Context, value: Any) -> Safe:
    fmt = _format_of(context)
    inner = escape_for(fmt, str(value))
    if fmt == "html":
        return Safe(f"<code>{inner}</code>")
    if fmt in ("md", "mrkdwn"):
        return Safe(f"`{str(value).replace('`', '')}`" if fmt == "md" else f"`{inner}`")
    return Safe(inner)


@pass_context
def _worddiff(context: Context, pieces: Any) -> Safe:
    """A word diff (bot.textdiff pieces) with its marks, escaped for the format; in HTML the
    removed words are also struck through and the added ones bold."""
    from bot.textdiff import ADDED, REMOVED

    fmt = _format_of(context)
    parts = []
    for tag, text in pieces:
        inner = escape_for(fmt, text)
        if tag == "-":
            marked = escape_for(fmt, REMOVED[0]) + inner + escape_for(fmt, REMOVED[1])
            parts.append(f"<del>{marked}</del>" if fmt == "html" else marked)
        elif tag == "+":
            marked = escape_for(fmt, ADDED[0]) + inner + escape_for(fmt, ADDED[1])
            parts.append(f"<b>{marked}</b>" if fmt == "html" else marked)
        elif tag == "…":
            parts.append("…")
        else:
            parts.append(inner)
    return Safe("".join(parts))


def _lines(people: Any) -> list[str]:
    """Each signatory's printed line; join them, then finalize escapes the list once."""
    return [person.line for person in people]


def _make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader(TEMPLATE_PACKAGE, "."),
        autoescape=False,  # finalize escapes per format; HTML autoescape would be wrong for mrkdwn
        finalize=_finalize,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["b"] = _bold
    env.filters["code"] = _code
    env.filters["lines"] = _lines
    env.filters["worddiff"] = _worddiff
    return env


ENV = _make_environment()


def render(template: str, fmt: str = "text", **context: Any) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}")
    return ENV.get_template(template).render(_format=fmt, **context)
