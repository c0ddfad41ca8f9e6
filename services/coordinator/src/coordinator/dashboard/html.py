"""A small HTML builder that escapes every value it is given, unless the value is already :class:`Html`.

Issue titles, run summaries and event details are written by people and agents, so nothing reaches a page
without passing through here.
"""

import html
from collections.abc import Iterable

_VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})

type Child = Html | str | int | float | Iterable[Child] | None


class Html(str):
    """Markup that is safe to emit as it is."""

    __slots__ = ()


def escape(value: object) -> Html:
    """``value`` as text inside markup (quotes escaped too, so it is safe in attributes)."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


def fragment(*children: Child) -> Html:
    """The children one after another, each escaped unless it is :class:`Html`; None is left out."""
    parts: list[str] = []
    _append(parts, children)
    return Html("".join(parts))


def el(tag: str, *children: Child, **attributes: str | int | float | bool | None) -> Html:
    """The element ``tag`` with ``attributes`` and ``children``.

    Attribute names are Python names: a trailing underscore is dropped (``class_``) and other underscores
    become hyphens (``data_run`` → ``data-run``). None and False leave an attribute out; True writes it bare.
    """
    rendered = [tag]
    for name, value in attributes.items():
        if value is None or value is False:
            continue
        attribute = name.rstrip("_").replace("_", "-")
        rendered.append(attribute if value is True else f'{attribute}="{escape(value)}"')
    opening = f"<{' '.join(rendered)}>"
    if tag in _VOID:
        return Html(opening)
    return Html(f"{opening}{fragment(*children)}</{tag}>")


def _append(parts: list[str], children: Iterable[Child]) -> None:
    for child in children:
        if child is None:
            continue
        if isinstance(child, str | int | float):
            parts.append(escape(child))
        else:
            _append(parts, child)
