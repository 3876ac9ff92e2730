"""How the analytics pages print durations, rates and counts."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def ms(value: float | None) -> str:
    """812 ms, 1.24 s, 2 min 5 s; a dash for nothing."""
    if value is None:
        return "–"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        return f"{value / 1000:.2f} s"
    minutes, seconds = divmod(value / 1000, 60)
    return f"{minutes:.0f} min {seconds:.0f} s"


@register.filter
def percent(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.2f} %"


@register.filter
def rate(value: float | None) -> str:
    """1,234 / 12.3 / 0.04: small rates keep two decimals, so 31 requests in 15 min is not 0."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


@register.filter
def count(value: int | None) -> str:
    """12,345 with thin grouping, so wide numbers stay readable in narrow columns."""
    return "–" if value is None else f"{value:,}"


@register.filter
def quantile(quantiles: dict[str, float | None], name: str) -> float | None:
    return quantiles.get(name)
