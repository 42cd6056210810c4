"""A griffe extension for the documentation build: render the reST-isms of
aunshare's docstrings as Markdown, without changing the docstrings.

The library's docstrings are prose written with Sphinx roles
(:class:`Command`, :meth:`~Child.wait`, :func:`aunshare.run`) and, now and
then, a ``::`` literal block. mkdocstrings renders docstrings as Markdown,
where both come out as stray punctuation. This extension rewrites them when
the package is loaded:

* a role becomes an *optional* cross-reference: a link to the object's entry
  in the API reference when that object is rendered there, and plain code
  otherwise (autorefs never warns about optional references);
* ``text::`` followed by an indented block becomes ``text:`` and a fenced
  Python code block.

Role targets are resolved the way Sphinx would: in the scope of the object
that carries the docstring (its class, then its module), then from the
package root.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

import griffe

ROLE_RE = re.compile(r":(?:py:)?(?P<role>class|meth|func|attr|mod|exc|data|obj):`(?P<body>[^`]+)`")


def _target(body: str) -> tuple[str, str]:
    """(shown text, target name) for a role body: ``~a.b``, ``text <a.b>``, ``a.b()``."""
    m = re.fullmatch(r"(?P<text>.*?)\s*<(?P<target>[^>]+)>", body)
    if m:
        return m["text"], m["target"]
    name = body
    if name.startswith("~"):
        name = name[1:]
        return name.rsplit(".", 1)[-1], name
    return name, name


def _lookup(collection: Any, path: str) -> Any:
    try:
        obj = collection.get_member(path)
    except Exception:  # not found, or a path through an alias of another package
        return None
    try:
        return obj.final_target if obj.is_alias else obj
    except Exception:  # an alias whose target is outside the package
        return None


def _resolve(obj: Any, name: str) -> str | None:
    """The canonical path of ``name`` as seen from ``obj``, or None."""
    name = name.rstrip("()")
    pkg = obj.package
    collection = obj.modules_collection
    scopes = []
    scope = obj if obj.is_class or obj.is_module else obj.parent
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    candidates = [f"{s}.{name}" for s in scopes]
    candidates.append(name)
    if not name.startswith(pkg.name + "."):
        candidates.append(f"{pkg.name}.{name}")
    for path in candidates:
        target = _lookup(collection, path)
        if target is not None:
            return target.path
    return None


def _rewrite_roles(text: str, obj: Any) -> str:
    def replace(m: re.Match[str]) -> str:
        shown, name = _target(m["body"])
        code = f"<code>{html.escape(shown)}</code>"
        path = _resolve(obj, name)
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return ROLE_RE.sub(replace, text)


def _rewrite_literal_blocks(text: str) -> str:
    """``para::`` + blank line + indented block -> ``para:`` + fenced block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block: list[str] = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith((" ", "\t"))):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                stripped = line.rstrip()[:-2].rstrip()
                out.append(stripped + ":" if stripped else "")
                out.append("")
                out.append("```python")
                out.extend(textwrap.dedent("\n".join(block)).split("\n"))
                out.append("```")
                out.append("")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _walk(obj: Any, seen: set[int]) -> Any:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member, seen)


class RestRoles(griffe.Extension):
    """Rewrite reST roles and literal blocks in every docstring of a package."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
        for obj in _walk(pkg, set()):
            doc = obj.docstring
            if doc is None:
                continue
            doc.value = _rewrite_roles(_rewrite_literal_blocks(doc.value), obj)
