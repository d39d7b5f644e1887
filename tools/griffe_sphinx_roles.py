"""A griffe extension that makes corral's reST-flavoured docstrings read as Markdown.

corral's docstrings are prose with a little reStructuredText in them, which
mkdocstrings would otherwise print literally:

- roles, ``:class:`~corral.Pool``` and ``:meth:`Proxy.aclose```, become code
  that links to the object's entry in the API reference when it has one (an
  optional autorefs link: a name with no entry, such as a private class or a
  builtin exception, stays plain code);
- doctest runs (``>>>`` lines) become fenced ``pycon`` blocks, where Markdown
  would otherwise take ``>>>`` for nested quotes;
- a paragraph ending in ``::`` loses one colon, and the indented block after
  it becomes a fenced ``python`` block.

``mkdocs.yml`` loads it by path (``extensions: [tools/griffe_sphinx_roles.py]``).
It changes the text mkdocstrings renders, never the source.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?P<role>class|meth|func|attr|data|exc|mod|obj):`(?P<target>[^`]+)`")
EXPLICIT_TITLE = re.compile(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", re.DOTALL)
CALLABLE_ROLES = {"meth", "func"}


class SphinxRoles(griffe.Extension):
    """Rewrite roles, doctest runs and ``::`` literal blocks as Markdown."""

    def __init__(self) -> None:
        self._exports: set[str] | None = None
        self._done: set[int] = set()  # docstrings already rewritten (by id)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None or id(obj.docstring) in self._done:
            return
        self._done.add(id(obj.docstring))
        if self._exports is None:
            exports = obj.package.exports or []
            self._exports = {str(name) for name in exports}
        text = _fence_literal_blocks(_fence_doctests(obj.docstring.value))
        obj.docstring.value = ROLE.sub(lambda m: self._link(m, obj), text)

    def _link(self, match: re.Match[str], obj: griffe.Object) -> str:
        role, target = match["role"], match["target"].strip()
        explicit = EXPLICIT_TITLE.fullmatch(target)
        if explicit:  # :meth:`title <target>`
            title, target = explicit["title"].strip(), explicit["target"].strip()
        else:
            short = target.startswith("~")
            target = target.lstrip("~")
            title = target.rsplit(".", 1)[-1] if short else target
            if role in CALLABLE_ROLES:
                title += "()"
        title = html.escape(title)
        identifier = self._identifier(target, obj)
        if identifier is None:
            return f"<code>{title}</code>"
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    def _identifier(self, target: str, obj: griffe.Object) -> str | None:
        """The name the API reference renders ``target`` under, as seen from ``obj``.

        A bare or dotted name is looked up as Python would read it in the
        docstring's context: a member of the class it documents (or belongs
        to), then a name of its module, then a name corral exports.
        """
        exports = self._exports or set()
        if target.startswith("."):
            return None  # a private module, relative to this one: not in the reference
        if target.startswith("corral."):
            return target
        head = target.split(".", 1)[0]
        for scope in _scopes(obj):
            public = _public_path(scope, exports)
            if public is not None and head in scope.all_members:
                return f"{public}.{target}"
        if head in exports:
            return f"corral.{target}"
        return target


def _scopes(obj: griffe.Object) -> list[griffe.Object]:
    """The classes ``obj`` is or is in, innermost first, then its module."""
    scopes: list[griffe.Object] = []
    node: griffe.Object | None = obj
    while node is not None:
        if node.is_class or node.is_module:
            scopes.append(node)
        if node.is_module:
            break
        node = node.parent
    return scopes


def _public_path(scope: griffe.Object, exports: set[str]) -> str | None:
    """Where the reference renders ``scope``: ``corral.Name`` for what corral exports."""
    if not any(part.startswith("_") for part in scope.path.split(".")):
        return scope.path  # corral.testing and what is in it
    parent = scope.parent
    if scope.is_class and scope.name in exports and parent is not None and parent.is_module:
        return f"corral.{scope.name}"
    return None


def _fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines (and their ``...`` and output lines) in a fence."""
    out: list[str] = []
    in_run = False
    for line in text.splitlines():
        if line.lstrip().startswith(">>>") and not in_run:
            indent = line[: len(line) - len(line.lstrip())]
            if out and out[-1].strip():
                out.append("")  # a fence opens a block of its own
            out.append(f"{indent}```pycon")
            in_run = True
        elif in_run and not line.strip():
            out.append(f"{indent}```")
            in_run = False
        out.append(line)
    if in_run:
        out.append(f"{indent}```")
    return "\n".join(out)


def _fence_literal_blocks(text: str) -> str:
    """Turn ``Paragraph::`` plus an indented block into ``Paragraph:`` plus a fence."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::") or i + 2 >= len(lines) or lines[i + 1].strip():
            out.append(line)
            i += 1
            continue
        stem = line.rstrip()[:-2].rstrip()
        base = len(line) - len(line.lstrip())
        j = i + 2
        block: list[str] = []
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > base
        ):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        if not block:
            out.append(line)
            i += 1
            continue
        depth = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        if stem:
            out.append(f"{stem}:")
        out.append("")
        out.append(" " * base + "```python")
        out.extend(" " * base + b[depth:] if b.strip() else "" for b in block)
        out.append(" " * base + "```")
        out.append("")
        i = j
    return "\n".join(out)
