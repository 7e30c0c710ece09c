"""Weight-space distances and gradient alignment between parameter dicts.

Every function takes ``dict[str, Tensor]`` (parameter name -> tensor), as returned by
``dict(model.named_parameters())`` of a HookedTransformer or by the batched MLPs of
:mod:`interp.studies.mnist`, so the same measurements serve the language-model loop and the MNIST
experiment. With ``model_dim=True`` dim 0 of every tensor indexes independent models (a batch of
models trained as one tensor program) and every metric is a tensor of shape ``(n_models,)``;
otherwise every metric is a Python float.

Metrics are reported for the whole parameter vector (key ``"total"``) and for each parameter
group (see :func:`param_groups`): the vector of a group is the concatenation of its flattened
parameters. Dot products and squared norms are summed in float64 in one pass over the
parameters, without autograd.

Zero vectors: a cosine (or a projection onto a direction) involving a zero vector is defined as
0.0 (no movement has no direction), never nan, so results can be averaged and written as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Iterable, Mapping

import torch
from jaxtyping import Float
from torch import Tensor

TOTAL = "total"

Params = Mapping[str, Tensor]
Metric = float | Float[Tensor, "model"]
GroupSpec = Callable[[str], str] | Mapping[str, str] | None


def default_group(name: str) -> str:
    """The group of a parameter: its name without the last dotted component.

    ``blocks.0.attn.W_Q`` -> ``blocks.0.attn``, ``embed.W_E`` -> ``embed``,
    ``unembed.W_U`` -> ``unembed``, ``layer1.W`` -> ``layer1``; a name without a dot is its own
    group."""
    return name.rsplit(".", 1)[0] if "." in name else name


def param_groups(names: Iterable[str], mapping: GroupSpec = None) -> dict[str, str]:
    """Parameter name -> group name, by :func:`default_group` or a custom ``mapping`` (a callable
    name -> group, or a dict that must cover every name)."""
    names = list(names)
    if mapping is None:
        mapping = default_group
    if callable(mapping):
        out = {n: mapping(n) for n in names}
    else:
        missing = [n for n in names if n not in mapping]
        if missing:
            raise KeyError(f"group mapping has no group for parameter(s) {missing}")
        out = {n: mapping[n] for n in names}
    if TOTAL in out.values():
        raise ValueError(f"{TOTAL!r} is reserved for the whole parameter vector; rename that group")
    return out


def _check_keys(named: dict[str, Params]) -> list[str]:
    """The shared parameter names, in the first dict's order; a name missing from any dict is an
    error naming it and the dict."""
    (first_label, first), *rest = named.items()
    names = list(first)
    for label, params in rest:
        missing_here = [n for n in names if n not in params]
        extra_here = [n for n in params if n not in first]
        if missing_here or extra_here:
            raise KeyError(f"parameter dicts disagree: missing from {label}: {missing_here}; "
                           f"missing from {first_label}: {extra_here}")
    for n in names:
        shapes = {label: tuple(params[n].shape) for label, params in named.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"parameter {n!r} has different shapes: {shapes}")
    return names


def _flat(x: Tensor, model_dim: bool) -> Float[Tensor, "model numel"]:
    """One row per model (a single row without a model dimension), in at least float32.

    Differences of two float32 tensors are exact when the values are within a factor 2 of each
    other (Sterbenz), so only the sums need float64."""
    x = x.detach()
    x = x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    return x.reshape(x.shape[0], -1) if model_dim else x.reshape(1, -1)


def _accumulate(pairs: dict[str, tuple[int, int]], names: list[str], groups: dict[str, str],
                tensors: Callable[[str], tuple[Tensor, ...]]) -> dict[str, dict[str, Tensor]]:
    """Sum the products named in ``pairs`` (key -> (index a, index b) into ``tensors(name)``) over
    the parameters of each group and over all parameters; each sum has shape (model,)."""
    sums: dict[str, dict[str, Tensor]] = {}
    for name in names:
        vectors = tensors(name)
        products = {key: (vectors[a] * vectors[b]).sum(-1, dtype=torch.float64) for key, (a, b) in pairs.items()}  # model
        for g in (TOTAL, groups[name]):
            acc = sums.setdefault(g, {})
            for key, value in products.items():
                acc[key] = acc[key] + value if key in acc else value
    return sums


def _cosine(dot: Tensor, sq_a: Tensor, sq_b: Tensor) -> Tensor:
    denom = (sq_a * sq_b).sqrt()
    return torch.where(denom > 0, dot / denom.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(dot))


def _check_model_dim(params: Params, model_dim: bool) -> None:
    if not model_dim:
        return
    sizes = {n: t.shape[0] if t.dim() else None for n, t in params.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ValueError(f"model_dim=True needs the same leading model dimension on every parameter, got {sizes}")


def _out(x: Tensor, model_dim: bool) -> Metric:
    return x.to(torch.float32) if model_dim else float(x[0])


@dataclass(frozen=True)
class WeightMetrics:
    """Where a student sits relative to its base (initialization) and a teacher.

    With ``s = student - base`` (the student's movement) and ``t = teacher - base`` (the
    teacher's movement, "the teacher direction"):

    Attributes:
        dist_student_teacher: ``||student - teacher||``.
        dist_student_base: ``||s||``, how far the student moved.
        dist_teacher_base: ``||t||``, how far the teacher moved.
        cosine: ``cos(s, t)``. This is also the fraction of the student's movement that lies
            along the teacher direction: the projection ``<s, t/||t||>`` divided by ``||s||``.
            1 when the student moved straight towards the teacher, 0 when orthogonally (or when
            ``s`` or ``t`` is zero).
        projection: ``<s, t/||t||>``, the signed length of the student's movement along the
            teacher direction.
        progress: ``projection / ||t||``, the student's movement along the teacher direction
            relative to the teacher's own: 0 at the base, 1 when the student has come as far
            along that direction as the teacher (student == teacher gives 1).
        orthogonal: ``||s - projection * t/||t|| ||``, the length of the student's movement off
            the teacher direction.

    Each is a float, or a ``(n_models,)`` tensor when computed with ``model_dim=True``.
    """

    dist_student_teacher: Metric
    dist_student_base: Metric
    dist_teacher_base: Metric
    cosine: Metric
    projection: Metric
    progress: Metric
    orthogonal: Metric

    def to_dict(self) -> dict[str, float | list[float]]:
        """JSON-ready values: floats, or per-model lists."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(x: Metric) -> float | list[float]:
    return x.tolist() if isinstance(x, Tensor) else x


@torch.no_grad()
def weight_metrics(student: Params, base: Params, teacher: Params, groups: GroupSpec = None,
                   model_dim: bool = False) -> dict[str, WeightMetrics]:
    """Distances and alignment of ``student`` and ``teacher`` relative to ``base``, for all
    parameters (key ``"total"``) and per group. See :class:`WeightMetrics` for the definitions.

    Args:
        student, base, teacher: parameter dicts with the same names and shapes.
        groups: parameter name -> group: None for :func:`default_group`, a callable, or a dict.
        model_dim: dim 0 of every tensor indexes independent models; metrics are per model.
    """
    names = _check_keys({"student": student, "base": base, "teacher": teacher})
    _check_model_dim(student, model_dim)
    group_of = param_groups(names, groups)

    # s: student - base, t: teacher - base, and student - teacher, whose squared norm is summed
    # directly rather than expanded, to avoid cancellation when the student is near the teacher.
    def vectors(name: str) -> tuple[Tensor, Tensor, Tensor]:
        b = _flat(base[name], model_dim)
        s, t = _flat(student[name], model_dim) - b, _flat(teacher[name], model_dim) - b
        return s, t, s - t

    sums = _accumulate({"ss": (0, 0), "tt": (1, 1), "st": (0, 1), "dd": (2, 2)}, names, group_of, vectors)
    out = {}
    for g, acc in sums.items():
        t_norm = acc["tt"].sqrt()
        projection = torch.where(t_norm > 0, acc["st"] / t_norm.clamp_min(torch.finfo(torch.float64).tiny),
                                 torch.zeros_like(t_norm))
        progress = torch.where(t_norm > 0, acc["st"] / acc["tt"].clamp_min(torch.finfo(torch.float64).tiny),
                               torch.zeros_like(t_norm))
        orthogonal = (acc["ss"] - projection**2).clamp_min(0).sqrt()
        out[g] = WeightMetrics(
            dist_student_teacher=_out(acc["dd"].sqrt(), model_dim),
            dist_student_base=_out(acc["ss"].sqrt(), model_dim),
            dist_teacher_base=_out(t_norm, model_dim),
            cosine=_out(_cosine(acc["st"], acc["ss"], acc["tt"]), model_dim),
            projection=_out(projection, model_dim),
            progress=_out(progress, model_dim),
            orthogonal=_out(orthogonal, model_dim),
        )
    return out


@torch.no_grad()
def gradient_alignment(update: Params, direction: Params, groups: GroupSpec = None,
                       model_dim: bool = False) -> dict[str, Metric]:
    """Cosine between an update and a direction, for all parameters (key ``"total"``) and per
    group; 0.0 where either vector is zero.

    Typical pairs: the negative gradient or the optimizer's actual step (``params_after -
    params_before``) against ``teacher - base`` or the negative gradient of a trait loss.

    Args:
        update, direction: parameter dicts with the same names and shapes.
        groups: parameter name -> group: None for :func:`default_group`, a callable, or a dict.
        model_dim: dim 0 of every tensor indexes independent models; cosines are per model.
    """
    names = _check_keys({"update": update, "direction": direction})
    _check_model_dim(update, model_dim)
    group_of = param_groups(names, groups)

    def vectors(name: str) -> tuple[Tensor, Tensor]:
        return _flat(update[name], model_dim), _flat(direction[name], model_dim)

    sums = _accumulate({"uu": (0, 0), "dd": (1, 1), "ud": (0, 1)}, names, group_of, vectors)
    return {g: _out(_cosine(acc["ud"], acc["uu"], acc["dd"]), model_dim) for g, acc in sums.items()}


def difference(a: Params, b: Params) -> dict[str, Tensor]:
    """``a - b`` per parameter (detached), e.g. an optimizer step or a teacher direction."""
    names = _check_keys({"a": a, "b": b})
    with torch.no_grad():
        return {n: a[n].detach() - b[n].detach() for n in names}
