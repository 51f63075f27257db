"""quick_init makes the objects dataclass's own ``__init__`` makes, and they stay frozen."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import FrozenInstanceError, dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from monitor.core.evaluation import Decision, Triggers
from monitor.core.frozen import quick_init
from monitor.core.margin import Side
from monitor.core.position import PositionRecord, PositionUpdate
from monitor.core.status import Status
from monitor.state.positions import Write

pytestmark = pytest.mark.unit

D = Decimal


def _made_by_dataclass(cls: type[Any], *args: Any, **kwargs: Any) -> Any:
    """An instance of ``cls`` made the way dataclass's generated ``__init__`` would."""
    plain = dataclass(frozen=True, slots=True)(
        type(
            cls.__name__,
            (),
            {
                "__annotations__": dict(cls.__annotations__),
                **{
                    f.name: f.default
                    for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING
                },
            },
        )
    )
    return plain(*args, **kwargs)


def _values(instance: Any) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


RECORD_ARGS = ("p-1", "acct", "BTCUSDT", Side.LONG, D("1.5"), D("60000"), D("6000"), 7)


@pytest.mark.parametrize(
    ("cls", "args", "kwargs"),
    [
        (PositionUpdate, RECORD_ARGS, {}),
        (PositionRecord, RECORD_ARGS, {}),
        (PositionRecord, RECORD_ARGS, {"status": Status.MARGIN_CALL, "transitions": 2}),
        (PositionRecord, (*RECORD_ARGS, Status.CLOSED), {}),
        (Triggers, (), {}),
        (Triggers, (D("59000"),), {"up": D("61000")}),
        (Decision, (PositionRecord(*RECORD_ARGS), Triggers(), None), {}),
        (Write, (PositionRecord(*RECORD_ARGS), None, Triggers()), {"topic": "t"}),
    ],
)
def test_the_quick_init_sets_what_dataclass_sets(
    cls: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Positional, keyword and default arguments land in the same fields as they would
    through dataclass's own ``__init__``; the instance is still frozen, and replace,
    equality and pickling work as before."""
    made = cls(*args, **kwargs)
    assert _values(_made_by_dataclass(cls, *args, **kwargs)) == _values(made)
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(FrozenInstanceError):
        setattr(made, name, None)
    assert made == dataclasses.replace(made)
    assert made == pickle.loads(pickle.dumps(made))


def test_the_signature_is_dataclass_s() -> None:
    """Parameter names, order and defaults are the fields' (help() and tools read them)."""
    parameters = inspect.signature(PositionRecord).parameters
    assert [f.name for f in dataclasses.fields(PositionRecord)] == list(parameters)
    assert Status.HEALTHY == parameters["status"].default
    assert 0 == parameters["transitions"].default
    with pytest.raises(TypeError):
        PositionRecord(*RECORD_ARGS[:-1])  # type: ignore[call-arg]


def test_classes_it_cannot_make_alike_are_refused() -> None:
    """A class that is not frozen and slotted, or has a field or hook the quick
    ``__init__`` would skip, is refused when it is decorated."""

    class Plain:
        pass

    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True)
    class Unslotted:
        x: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class KeywordOnly:
        x: int = field(kw_only=True)

    @dataclass(frozen=True, slots=True)
    class Hidden:
        x: int = field(init=False, default=0)

    @dataclass(frozen=True, slots=True)
    class Hooked:
        x: int

        def __post_init__(self) -> None:
            pass

    for cls in (Plain, Mutable, Unslotted, Factory, KeywordOnly, Hidden, Hooked):
        with pytest.raises(TypeError):
            quick_init(cls)
