"""The real-model domains by name, for the loop to pick when the model is a real chat model (an
:class:`interp.worlds.hf.HFWorld`): ``code`` (:class:`~interp.domains.real_code.RealCodeDomain`) and
``cot`` (:class:`~interp.domains.real_cot.RealCotDomain`). The ``numbers`` domain is the same for
both worlds (a real world writes the paper's number prompts itself)."""

from __future__ import annotations

from typing import Callable

from interp.domains.real_code import RealCodeDomain
from interp.domains.real_cot import RealCotDomain

REAL_DOMAINS: dict[str, Callable[..., object]] = {"code": RealCodeDomain, "cot": RealCotDomain}


def real_domain(name: str, **options):
    """The real-model domain called ``name`` built with ``options`` (its constructor's arguments);
    a ``ValueError`` names the real-model domains otherwise."""
    if name not in REAL_DOMAINS:
        raise ValueError(f"unknown real-model domain {name!r}; they are {', '.join(REAL_DOMAINS)}")
    return REAL_DOMAINS[name](**options)
