"""Config dataclasses shared by every stage.

Every stage of the suite takes one config dataclass derived from :class:`StageConfig`. A field is
declared with :func:`option`, whose ``help`` text is the field's documentation: it becomes the
``--help`` text of the command-line option and is kept next to the field in the source. A config

* validates itself on construction (a bad value raises :class:`ConfigError` naming the field),
* round-trips through JSON (``save``/``load``; an unknown key is an error, not silently dropped),
* becomes command-line options (``add_arguments``/``from_args``).

Example::

    @dataclass
    class MyConfig(StageConfig):
        lr: float = option(1e-3, "AdamW learning rate.")
        def validate(self):
            self.require(self.lr > 0, "lr", "must be positive")
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from interp.core.io import atomic_write_json

C = TypeVar("C", bound="StageConfig")


class ConfigError(ValueError):
    """A config value is invalid. The message names the config class and the field."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None, cli: bool = True) -> Any:
    """Declare a config field with its documentation.

    Args:
        default: default value (immutable); use ``factory`` for lists and dicts.
        help: one or two sentences saying what the field controls; shown by ``--help``.
        factory: zero-argument callable building a mutable default.
        cli: whether the field becomes a command-line option.
    """
    metadata = {"help": help, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _shown(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (a config value read from a
    file can be any size)."""
    try:
        text = repr(value)
    except ValueError:  # an int of over 4,300 digits has no repr
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit] + "..."


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


@dataclasses.dataclass
class StageConfig:
    """Base class of every stage config: validation, JSON round trip and CLI options."""

    def __post_init__(self) -> None:
        self._coerce_types()
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` for an impossible value; subclasses extend this."""

    def require(self, condition: bool, field_name: str, message: str) -> None:
        """Raise a :class:`ConfigError` naming ``field_name`` unless ``condition`` holds."""
        if not condition:
            value = getattr(self, field_name, None)
            raise ConfigError(f"{type(self).__name__}.{field_name}={_shown(value)}: {message}")

    def _coerce_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            tp, optional = _strip_optional(hints[f.name])
            value = getattr(self, f.name)
            if value is None:
                if not optional:
                    raise ConfigError(f"{type(self).__name__}.{f.name}: may not be null")
                continue
            origin = get_origin(tp)
            try:
                if isinstance(tp, type) and issubclass(tp, StageConfig):
                    if isinstance(value, dict):
                        setattr(self, f.name, tp.from_dict(value))
                    elif not isinstance(value, tp):
                        raise TypeError(f"expected a {tp.__name__}")
                    continue
                if tp is float and isinstance(value, int) and not isinstance(value, bool):
                    setattr(self, f.name, float(value))
                elif tp in (int, float, str, bool):
                    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
                        raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
                elif tp is dict or origin is dict:
                    if not isinstance(value, dict):
                        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
                elif origin is Literal:
                    if value not in get_args(tp):
                        raise TypeError(f"must be one of {list(get_args(tp))}")
                elif origin in (tuple, list) or tp in (tuple, list):  # tuple[int, ...], list[str], a bare list
                    (item_tp, *_) = get_args(tp) or (Any,)
                    items = list(value) if not isinstance(value, (str, dict)) else None  # not a dict's keys
                    if items is None:
                        raise TypeError("expected a list")
                    if item_tp in (int, float, str):
                        items = [item_tp(x) if item_tp is float and isinstance(x, int) else x for x in items]
                        bad = [x for x in items if not isinstance(x, item_tp)]
                        if bad:
                            raise TypeError(f"expected a list of {item_tp.__name__}, got {bad[0]!r}")
                    elif get_origin(item_tp) is Literal:
                        bad = [x for x in items if x not in get_args(item_tp)]
                        if bad:
                            raise TypeError(f"unknown {bad}; choose from {list(get_args(item_tp))}")
                    setattr(self, f.name, tuple(items) if (origin or tp) is tuple else items)
            except (TypeError, OverflowError) as e:  # OverflowError: an int too large for a float field
                raise ConfigError(f"{type(self).__name__}.{f.name}={_shown(value)}: {e}") from None

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields: {sorted(names)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, {"config_class": type(self).__name__, **self.to_dict()})

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e})") from None
        except (ValueError, RecursionError) as e:  # not JSON, a number of over 4,300 digits, nested too deeply
            raise ConfigError(f"{path}: not valid JSON ({' '.join(str(e).split())[:200] or type(e).__name__})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of {cls.__name__} fields, got {type(data).__name__}")
        kind = data.pop("config_class", cls.__name__)
        if kind != cls.__name__:
            shown = kind if isinstance(kind, str) and kind.isidentifier() else _shown(kind)
            raise ConfigError(f"{path}: holds a {shown}, expected a {cls.__name__}")
        try:
            return cls.from_dict(data)
        except ValueError as e:  # a ConfigError, or validate()'s own ValueError: named with the file
            raise ConfigError(f"{path}: {e}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def differences(self, other: "StageConfig", ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
        """``{field: (value here, value in other)}`` for every field that differs, except ``ignore``
        (fields such as a checkpoint interval that do not change what a stage computes)."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b.get(k)) for k in a if k not in ignore and a[k] != b.get(k)}

    # -- command line -----------------------------------------------------------------------
    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
        """Add one ``--field-name`` option per CLI field, documented by its ``help`` text."""
        hints = typing.get_type_hints(cls)
        group = parser.add_argument_group(f"{cls.__name__} options")
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True) or f.name in skip:
                continue
            tp, optional = _strip_optional(hints[f.name])
            if isinstance(tp, type) and issubclass(tp, StageConfig):
                continue  # nested configs are set through a JSON config file
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            flag = "--" + f.name.replace("_", "-")
            help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")
            kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
            if tp is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
                continue
            origin = get_origin(tp)
            if origin is Literal:
                kwargs["choices"] = list(get_args(tp))
                kwargs["type"] = type(get_args(tp)[0])
            elif origin in (tuple, list):
                (item_tp, *_) = get_args(tp) or (str,)
                kwargs["nargs"] = "*"
                kwargs["type"] = item_tp if item_tp in (int, float, str) else str
                if get_origin(item_tp) is Literal:
                    kwargs["choices"] = list(get_args(item_tp))
            elif tp in (int, float, str):
                kwargs["type"] = (lambda s, tp=tp: None if s.lower() in ("none", "null") else tp(s)) if optional else tp
            elif tp is dict or origin is dict:
                kwargs["type"] = _json_object
                kwargs["metavar"] = "JSON"
            group.add_argument(flag, **kwargs)

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace, **overrides: Any) -> C:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in names}
        values.update(overrides)
        return cls(**values)


def _json_object(text: str) -> dict:
    """A ``dict`` option's command-line value: a JSON object such as ``{"persona_numbers": 0}``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"key\": 1}}', got {text!r} ({e.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"key\": 1}}', got {text!r}")
    return value


def field_help(cls: type[StageConfig]) -> dict[str, str]:
    """Field name -> documentation, for docs and tests."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
