"""Cursor pagination as OpenAI's list endpoints do it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import NamedTuple

from django.db.models import QuerySet
from django.http import QueryDict

from .errors import ApiError, invalid
from .limits import plausible_id
from .serializers import Encoded

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _limit(query: QueryDict, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    raw = query.get("limit")
    if raw is None or raw == "":
        return default
    try:
        if not raw.isascii() or not raw.lstrip("-").isdigit():
            raise ValueError(raw)
        limit = int(raw)
    except ValueError:
        raise invalid(
            f"Invalid type for 'limit': expected an integer, but got '{raw[:50]}' instead.",
            param="limit",
            code="invalid_type",
        ) from None
    if not 1 <= limit <= maximum:
        side = "below minimum" if limit < 1 else "above maximum"
        bound = ">= 1" if limit < 1 else f"<= {maximum}"
        raise invalid(
            f"Invalid 'limit': integer {side} value. Expected a value {bound}, but got {raw[:50]} instead.",
            param="limit",
            code="integer_below_min_value" if limit < 1 else "integer_above_max_value",
        )
    return limit


def _order(query: QueryDict) -> str:
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise invalid(
            f"Invalid value for 'order': '{order[:50]}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    return order


def bad_cursor(name: str, object_id: str) -> ApiError:
    return invalid(
        f"Invalid '{name}': no object with id '{object_id[:100]}' is in this list.", param=name, code="invalid_cursor"
    )


def _cursor_seq(queryset: QuerySet, name: str, object_id: str) -> int:
    seq = queryset.filter(id=object_id).values_list("seq", flat=True).first() if plausible_id(object_id) else None
    if seq is None:
        raise bad_cursor(name, object_id)
    return seq


class Plan(NamedTuple):
    """What a list request asks for: ``bounds`` are ("gt" or "lt", seq) pairs from its cursors."""

    limit: int
    bounds: tuple[tuple[str, int], ...]
    ascending: bool
    backwards: bool


def plan(query: QueryDict, cursor_seq: Callable[[str, str], int], *, default_limit: int = DEFAULT_LIMIT,
         max_limit: int = MAX_LIMIT) -> Plan:
    """Read a list request's parameters; ``cursor_seq(name, id)`` is the seq of a cursor's object (or a 400).
    ``default_limit`` and ``max_limit``: where the specification bounds ``limit`` otherwise (``GET /files``).

    ``after`` pages forward in the chosen order; ``before`` returns the objects just before the cursor (still
    in the chosen order), and ``has_more`` then says whether more lie further back.
    """
    limit, order = _limit(query, default_limit, max_limit), _order(query)
    after, before = query.get("after"), query.get("before")
    forward = order == "asc"
    bounds = []
    if after:
        bounds.append(("gt" if forward else "lt", cursor_seq("after", after)))
    if before:
        bounds.append(("lt" if forward else "gt", cursor_seq("before", before)))
    backwards = bool(before) and not after
    return Plan(limit, tuple(bounds), forward != backwards, backwards)


def _trim(items: list, plan: Plan) -> tuple[list, bool]:
    """Up to ``plan.limit + 1`` items in the order they were read -> the page's items, and whether more lie on."""
    has_more = len(items) > plan.limit
    items = items[: plan.limit]
    if plan.backwards:
        items.reverse()
    return items, has_more


def finish(items: list, plan: Plan, serialize: Callable[[list], list[dict]]) -> dict:
    """The list object from up to ``plan.limit + 1`` items in the order they were read."""
    items, has_more = _trim(items, plan)
    data = serialize(items)
    return {
        "object": "list",
        "data": data,
        # The specification types these as strings; an empty page has "".
        "first_id": data[0]["id"] if data else "",
        "last_id": data[-1]["id"] if data else "",
        "has_more": has_more,
    }


def finish_encoded(items: list, plan: Plan, encode: Callable[[object], str], id_of: Callable[[object], str]
                   ) -> Encoded:
    """``finish`` for items encoded one by one (``encode`` returns an object's JSON text): the same list object,
    as JSON text."""
    items, has_more = _trim(items, plan)
    first, last = (id_of(items[0]), id_of(items[-1])) if items else ("", "")
    return Encoded(f'{{"object":"list","data":[{",".join(map(encode, items))}],"first_id":{json.dumps(first)},'
                   f'"last_id":{json.dumps(last)},"has_more":{"true" if has_more else "false"}}}')


def page(queryset: QuerySet, query: QueryDict, serialize: Callable[[object], dict], **limits: int) -> dict:
    """One page of ``queryset`` (in creation order) as an OpenAI list object (see ``plan``, which takes
    ``limits``)."""
    chosen = plan(query, lambda name, object_id: _cursor_seq(queryset, name, object_id), **limits)
    rows = queryset
    for op, seq in chosen.bounds:
        rows = rows.filter(**{f"seq__{op}": seq})
    items = list(rows.order_by("seq" if chosen.ascending else "-seq")[: chosen.limit + 1])
    return finish(items, chosen, lambda page_items: [serialize(item) for item in page_items])
