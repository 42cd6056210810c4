"""Frozen, slotted record classes without the ``dataclasses`` module.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis`` and
``tokenize``): about 20 ms, most of what the ``aunshare`` command would
spend importing before it starts anything. The records here need a small
part of it: fields from annotations with defaults, frozen instances,
``__slots__``, ``__eq__``/``__hash__``/``__repr__``, ``__post_init__``,
and :func:`replace`. Type checkers see them as frozen dataclasses
(``dataclass_transform``).

:class:`NamedTuple` is the same idea for named tuples: ``typing.NamedTuple``
compiles every field's annotation (a string, with postponed annotations)
into a ``ForwardRef``, about 0.4 ms a class at start-up; the named tuple
made here is ``collections.namedtuple``'s, with the class body's methods
and docstrings. Modules import ``typing.NamedTuple`` for type checkers and
this one at run time.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

__all__ = ["record", "field", "replace", "fields", "FrozenInstanceError", "NamedTuple"]

TYPE_CHECKING = False  # not typing's: type checkers treat any such constant as true
if TYPE_CHECKING:
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:  # typing costs the command's start-up ~5 ms, for type checkers only
    def dataclass_transform(**_: object) -> Callable[[type], type]:
        return lambda cls: cls

_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a record (they are immutable)."""


class Field:
    """How one field of a record is made, compared and shown."""

    __slots__ = ("name", "default", "default_factory", "init", "repr", "compare")

    def __init__(self, default: Any, default_factory: Any, init: bool, repr: bool,
                 compare: bool) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] = _MISSING,
          init: bool = True, repr: bool = True, compare: bool = True) -> Any:
    """A field with a default made by ``default_factory``, or left out of
    ``__init__``, ``repr`` or comparisons."""
    return Field(default, default_factory, init, repr, compare)


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r} of "
                              f"{type(self).__name__}: records are immutable")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen record with ``__slots__`` (see the module doc).

    A ``__hash__`` defined in the class body is kept (a record may cache its
    hash); otherwise the hash is that of the compared fields.
    """
    annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 (no inspect)
    specs: list[Field] = []
    for name in annotations:
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(value, _MISSING, True, True, True)
        spec.name = name
        specs.append(spec)
    body = {k: v for k, v in cls.__dict__.items()
            if k not in annotations and k not in ("__dict__", "__weakref__")}
    body["__slots__"] = tuple(annotations)
    body["__record_fields__"] = tuple(specs)
    new = type(cls.__name__, cls.__bases__, body)
    new.__qualname__ = cls.__qualname__
    _install(new, specs, "__hash__" in cls.__dict__)
    return new


def _install(cls: type, specs: list[Field], own_hash: bool) -> None:
    names = [s.name for s in specs]
    compared = [s.name for s in specs if s.compare]
    shown = [s.name for s in specs if s.repr]
    # __init__ is generated, like dataclasses does, so that creating a
    # record costs one plain call (records are made on every spawn).
    args, lines, env = [], [], {"_MISSING": _MISSING}
    # Each field is stored through its slot's own setter: a third cheaper
    # than object.__setattr__, which looks the name up on every call.
    for s in specs:
        env[f"_s_{s.name}"] = cls.__dict__[s.name].__set__
        if s.init:
            if s.default is not _MISSING:
                env[f"_d_{s.name}"] = s.default
                args.append(f"{s.name}=_d_{s.name}")
            elif s.default_factory is not _MISSING:
                env[f"_f_{s.name}"] = s.default_factory
                args.append(f"{s.name}=_MISSING")
                lines.append(f"if {s.name} is _MISSING: {s.name} = _f_{s.name}()")
            else:
                args.append(s.name)
            lines.append(f"_s_{s.name}(self, {s.name})")
        else:
            default = (f"_f_{s.name}()" if s.default_factory is not _MISSING
                       else f"_d_{s.name}")
            env[f"_f_{s.name}" if s.default_factory is not _MISSING
                else f"_d_{s.name}"] = (s.default_factory if s.default_factory is not _MISSING
                                        else s.default)
            lines.append(f"_s_{s.name}(self, {default})")
    if hasattr(cls, "__post_init__"):
        lines.append("self.__post_init__()")
    src = f"def __init__(self, {', '.join(args)}):\n    " + "\n    ".join(lines or ["pass"])
    exec(src, env)  # the source is made from the class's own field names
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    methods: dict[str, object] = {
        "__init__": init, "__setattr__": _frozen_setattr, "__delattr__": _frozen_setattr,
        "__match_args__": tuple(s.name for s in specs if s.init),
    }

    # __eq__ and __hash__ are generated too: a spec is compared and hashed
    # on every spawn (the plan cache), and attribute tuples built in place
    # cost a fraction of a generator over the field names. They are
    # compiled at their first use: most records are never compared in a
    # run, and compiling costs the command's start-up ~0.1 ms per class.
    mine = "(" + "".join(f"self.{n}, " for n in compared) + ")"
    theirs = "(" + "".join(f"other.{n}, " for n in compared) + ")"
    src = ("def __eq__(self, other):\n"
           "    if other.__class__ is not self.__class__:\n"
           "        return NotImplemented\n"
           f"    return self is other or {mine} == {theirs}\n"
           "def __hash__(self):\n"
           f"    return hash({mine})\n")

    def compiled() -> tuple[Any, Any]:
        if "__eq__" not in env:
            exec(src, env)  # the source is made from the class's own field names
            cls.__eq__ = env["__eq__"]  # type: ignore[method-assign]
            if not own_hash:
                cls.__hash__ = env["__hash__"]  # type: ignore[method-assign]
        return env["__eq__"], env["__hash__"]

    def __eq__(self: object, other: object) -> Any:
        return compiled()[0](self, other)

    def __hash__(self: object) -> int:
        h: int = compiled()[1](self)
        return h

    def __repr__(self: object) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in shown)
        return f"{type(self).__qualname__}({inner})"

    def __getstate__(self: object) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in names)

    def __setstate__(self: object, state: tuple[object, ...]) -> None:
        for n, v in zip(names, state):
            object.__setattr__(self, n, v)

    methods.update(__eq__=__eq__, __getstate__=__getstate__, __setstate__=__setstate__)
    if not own_hash:
        methods["__hash__"] = __hash__
    if "__repr__" not in cls.__dict__:
        methods["__repr__"] = __repr__
    for name, method in methods.items():
        setattr(cls, name, method)


def fields(obj: object) -> tuple[Field, ...]:
    """The fields of a record (or record class), in order."""
    cls = obj if isinstance(obj, type) else type(obj)
    out: tuple[Field, ...] = getattr(cls, "__record_fields__")  # noqa: B009 (set by record)
    return out


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record ``obj`` with some fields changed (and
    ``__post_init__`` run again, as for any new record)."""
    kwargs = {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}
    unknown = set(changes) - set(kwargs)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(unknown)}")
    kwargs.update(changes)
    return type(obj)(**kwargs)


# What a class body holds besides its fields and methods: not copied over.
_CLASS_KEYS = frozenset({"__annotations__", "__module__", "__qualname__", "__dict__",
                         "__weakref__", "__orig_bases__", "__static_attributes__",
                         "__firstlineno__", "__annotate__"})


class _NamedTupleMeta(type):
    def __new__(mcls, name: str, bases: tuple[type, ...], body: dict[str, Any]) -> Any:
        if not bases:  # the base class itself
            return super().__new__(mcls, name, bases, body)
        names = list(body.get("__annotations__", {}))
        defaults = [body[n] for n in names if n in body]
        if any(n not in body for n in names[len(names) - len(defaults):]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        make: Any = collections.namedtuple  # (a checker wants literal arguments)
        cls = make(name, names, defaults=defaults or None, module=body.get("__module__"))
        cls.__qualname__ = body.get("__qualname__", name)
        for key, value in body.items():
            if key not in _CLASS_KEYS and key not in names:
                setattr(cls, key, value)
        return cls


class NamedTuple(metaclass=_NamedTupleMeta):
    """Base of a class-syntax named tuple made at run time by
    ``collections.namedtuple`` (see the module doc)."""
