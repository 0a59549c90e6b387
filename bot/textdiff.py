"""Word diffs between two texts of a letter (DESIGN.md §9), with the standard library's difflib.

A signer asked to re-confirm must see what changed, not the whole letter again: the diff keeps
the changed words and a few words around each change. It is a list of ``[tag, text]`` pairs (tag
``=`` unchanged, ``-`` removed, ``+`` added), plain JSON, so it can wait in the outbox and be
rendered per platform when sent (templating's ``worddiff`` filter escapes it for each format).
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

#: Words shown around each change (before and after), so a change reads in its sentence.
CONTEXT_WORDS = 8
#: The marks around removed and added words, in every format (as git's --word-diff=plain): they
#: survive any client, copy-paste and a text file.
REMOVED = ("[-", "-]")
ADDED = ("{+", "+}")

# A word with the whitespace before it (and any trailing whitespace): matching such tokens is
# fast, where separate whitespace tokens (thousands of identical " ") made SequenceMatcher take
# 80 s to compare two 1,500-word texts. The shared spaces are moved out of each change after.
_TOKENS = re.compile(r"\s*\S+|\s+")
_SPLIT = re.compile(r"\s+|[^\s]+")
_LEADING_SPACE = re.compile(r"^\s*")

Piece = list[str]  # [tag, text]


def _tokens(text: str) -> list[str]:
    """Words and the whitespace between them, so joining the tokens gives the text back."""
    return _SPLIT.findall(text)


def word_diff(old: str, new: str) -> list[Piece]:
    """The whole of both texts as pieces: unchanged, removed and added runs of words."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    pieces: list[Piece] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        removed, added = "".join(a[i1:i2]), "".join(b[j1:j2])
        if tag == "equal":
            _append(pieces, "=", removed)
            continue
        if tag == "replace":  # the space before both stays outside the marks
            space = _common_space(removed, added)
            _append(pieces, "=", space)
            removed, added = removed[len(space) :], added[len(space) :]
        _append(pieces, "-", removed)
        _append(pieces, "+", added)
    return _slide_spaces(pieces)


def _common_space(first: str, second: str) -> str:
    one = _LEADING_SPACE.match(first)
    two = _LEADING_SPACE.match(second)
    a = one.group() if one else ""
    b = two.group() if two else ""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _slide_spaces(pieces: list[Piece]) -> list[Piece]:
    """A word removed (or added) alone carries the space before it: when the text after it
    begins with the same space, show the change as the word and the space after it instead
    ("a [-giving -]b", not "a[- giving-] b"); both read back to the same two texts."""
    out: list[Piece] = []
    index = 0
    while index < len(pieces):
        tag, text = pieces[index]
        following = pieces[index + 1] if index + 1 < len(pieces) else None
        match = _LEADING_SPACE.match(text)
        space = match.group() if match else ""
        if (
            tag in "-+"
            and space
            and space != text
            and following is not None
            and following[0] == "="
            and following[1].startswith(space)
        ):
            _append(out, "=", space)
            _append(out, tag, text[len(space) :] + space)
            rest = following[1][len(space) :]
            if rest:
                _append(out, "=", rest)
            index += 2
            continue
        _append(out, tag, text)
        index += 1
    return out


def _append(pieces: list[Piece], tag: str, text: str) -> None:
    if not text:
        return
    if pieces and pieces[-1][0] == tag:
        pieces[-1][1] += text
    else:
        pieces.append([tag, text])


def changed(pieces: list[Piece]) -> bool:
    return any(tag != "=" for tag, _ in pieces)


def condensed(pieces: list[Piece], context: int = CONTEXT_WORDS) -> list[Piece]:
    """Only the changes and `context` words around each; the cuts are `…` pieces (tag `…`)."""
    out: list[Piece] = []
    last = len(pieces) - 1
    for index, (tag, text) in enumerate(pieces):
        if tag != "=":
            out.append([tag, text])
            continue
        words = _tokens(text)
        keep_head = index > 0  # words after the previous change
        keep_tail = index < last  # words before the next change
        count = sum(1 for token in words if not token.isspace())
        if count <= context * (keep_head + keep_tail) or not (keep_head or keep_tail):
            out.append([tag, text])
            continue
        head = _first_words(words, context) if keep_head else ""
        tail = _last_words(words, context) if keep_tail else ""
        if head:
            out.append(["=", head])
        out.append(["…", ""])
        if tail:
            out.append(["=", tail])
    return out


def _first_words(tokens: list[str], n: int) -> str:
    taken: list[str] = []
    for token in tokens:
        if not token.isspace():
            if n == 0:
                break
            n -= 1
        taken.append(token)
    return "".join(taken).rstrip() + " "


def _last_words(tokens: list[str], n: int) -> str:
    taken: list[str] = []
    for token in reversed(tokens):
        if not token.isspace():
            if n == 0:
                break
            n -= 1
        taken.append(token)
    return " " + "".join(reversed(taken)).lstrip()


def plain(pieces: list[Piece]) -> str:
    """The diff as plain text with the marks: what the console and files show."""
    parts = []
    for tag, text in pieces:
        if tag == "-":
            parts.append(REMOVED[0] + text + REMOVED[1])
        elif tag == "+":
            parts.append(ADDED[0] + text + ADDED[1])
        elif tag == "…":
            parts.append("…")
        else:
            parts.append(text)
    return "".join(parts)


def summary(pieces: list[Piece]) -> tuple[int, int]:
    """(words removed, words added)."""
    removed = sum(len(text.split()) for tag, text in pieces if tag == "-")
    added = sum(len(text.split()) for tag, text in pieces if tag == "+")
    return removed, added
