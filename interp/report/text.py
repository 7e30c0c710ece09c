"""How the reports spell an interval: one formatter for every table and headline."""

from __future__ import annotations


def fmt_ci(ci: dict | None, digits: int = 4, signed: bool = False, missing: str = "–") -> str:
    """``mean [low, high]`` of an interval dict (``mean_ci(...).to_dict()``) with ``digits``
    decimals (a sign with ``signed``), a Wilson fraction as ``k/n = f [low, high]``, or
    ``missing`` for no interval."""
    if not ci:
        return missing
    if "fraction" in ci:
        return f"{ci['k']}/{ci['n']} = {ci['fraction']:.2f} [{ci['ci_low']:.2f}, {ci['ci_high']:.2f}]"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(ci['mean'])} [{f.format(ci['ci_low'])}, {f.format(ci['ci_high'])}]"
