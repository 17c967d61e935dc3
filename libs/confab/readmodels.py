"""The read models the command line can rebuild and verify, found by entry point.

A service declares its read model in its ``pyproject.toml``::

    [project.entry-points."confab.projections"]
    messaging = "confab_messaging.projections:read_model"

``read_model(schema, keys=None)`` returns the projections that write the tables
of one PostgreSQL schema, built on ``schema`` (the live one by default; a
scratch one for a rebuild) and revealing personal fields with ``keys``. A read
model is rebuilt and swapped as a whole, because its schema is what is swapped.
The library never imports a service: the entry point is loaded only when the
command line asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

from confab.personal import KeyRing
from confab.projection import Projection

GROUP = "confab.projections"

Factory = Callable[..., Sequence[Projection]]


class UnknownReadModel(LookupError):
    pass


@dataclass(frozen=True)
class ReadModel:
    name: str
    factory: Factory

    def projections(
        self, schema: str | None = None, keys: KeyRing | None = None
    ) -> list[Projection]:
        built = list(self.factory(keys=keys) if schema is None else self.factory(schema, keys=keys))
        schemas = {p.metadata.schema for p in built}
        if len(schemas) != 1 or None in schemas:
            raise ValueError(f"read model {self.name}: its projections must share one schema")
        return built

    @property
    def schema(self) -> str:
        schema = self.projections()[0].metadata.schema
        assert schema is not None
        return schema


def read_models() -> dict[str, ReadModel]:
    found: dict[str, ReadModel] = {}
    for entry in entry_points(group=GROUP):
        found[entry.name] = ReadModel(entry.name, entry.load())
    return dict(sorted(found.items()))


def find(name: str) -> ReadModel:
    """By read model name (``messaging``) or by the name of one of its projections."""
    models = read_models()
    if name in models:
        return models[name]
    for model in models.values():
        if any(p.name == name for p in model.projections()):
            return model
    known = ", ".join(models) or "none installed"
    raise UnknownReadModel(f"no read model {name!r} (known: {known})")
