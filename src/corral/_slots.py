"""Latest-value slots in shared memory, read and written without locks (seqlocks).

A control loop declares its inputs and outputs as class attributes, each
name with a default value that fixes its type and size: a ``float``, ``int``
or ``bool``, or a tuple of them of fixed length. :class:`Layout` turns the
declarations into offsets in one shared region (see ``_region``).

Each slot is a sequence word followed by its packed value. The one writer
makes the word odd, copies the value in, then stores the next even number
last; a reader that sees an odd word, or a word that changed while it read,
keeps the last good value it read instead of spinning. The host writes
inputs and reads outputs; the loop does the opposite. Python offers no
memory fences, so this relies on the store order of x86-64 (TSO), where
stores are not reordered with stores nor loads with loads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, final

# A float, int or bool, or a tuple of them; typed Any because the declaration, not
# the type checker, knows which (as with a dict of settings).
Value = Any
Direction = Literal["input", "output"]
MAX_ITEMS: Final = 4096  # elements in one slot: a slot is a value, not a buffer

_CODES: Final = {bool: "?", int: "q", float: "d"}
_NAMES: Final = {"?": "bool", "q": "int", "d": "float"}


@final
@dataclass(frozen=True, slots=True)
class SlotSpec:
    """Where one slot lives in the region and how its value is packed."""

    name: str
    direction: Direction
    code: str  # struct code of one element: "d", "q" or "?"
    count: int  # 0 for a scalar, else the tuple's length
    word: int  # index of the sequence word (in 8-byte words)

    @property
    def offset(self) -> int:
        """Byte offset of the packed value."""
        return (self.word + 1) * 8

    @property
    def format(self) -> str:
        return f"={max(self.count, 1)}{self.code}"

    @property
    def words(self) -> int:
        """8-byte words taken: the sequence word and the value rounded up."""
        return 1 + (struct.calcsize(self.format) + 7) // 8

    def describe(self) -> str:
        kind = _NAMES[self.code]
        return kind if not self.count else f"a tuple of {self.count} {kind}s"


@final
class Layout:
    """The slots of one control loop class: names, directions, offsets."""

    def __init__(self, inputs: Mapping[str, Any], outputs: Mapping[str, Any], first: int) -> None:
        specs: dict[str, SlotSpec] = {}
        defaults: dict[str, Value] = {}
        word = first
        for direction, declared in (("input", inputs), ("output", outputs)):
            if not isinstance(declared, Mapping):
                raise TypeError(
                    f"{direction}s must be a dict of slot names to default values, "
                    f"e.g. {{'setpoint': 0.0}}; got {declared!r}"
                )
            for name, default in declared.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise TypeError(f"slot names must be identifiers (str), got {name!r}")
                if name in specs:
                    raise ValueError(
                        f"slot {name!r} is declared as both an input and an output; "
                        "give each its own name"
                    )
                code, count = _shape(name, default)
                spec = SlotSpec(name, direction, code, count, word)  # type: ignore[arg-type]
                specs[name] = spec
                defaults[name] = check_value(spec, default)
                word += spec.words
        self.specs = specs
        self.defaults = defaults
        self.end = word  # first word after the slots

    def __repr__(self) -> str:
        return f"<Layout {', '.join(f'{s.direction} {s.name}' for s in self.specs.values())}>"

    def spec(self, name: str, direction: Direction | None = None) -> SlotSpec:
        """The slot called ``name``, or a :class:`ValueError` listing the declared ones."""
        spec = self.specs.get(name) if isinstance(name, str) else None
        if spec is not None and direction is not None and spec.direction != direction:
            raise ValueError(
                f"{name!r} is an {spec.direction} slot, not an {direction} one: the host "
                "sets inputs (`await rt.set(...)`) and the loop sets outputs"
            )
        if spec is None:
            wanted = f"{direction} " if direction else ""
            listed = ", ".join(
                s.name for s in self.specs.values() if direction in (None, s.direction)
            )
            raise ValueError(
                f"no {wanted}slot named {name!r}; declared: {listed or 'none'} "
                "(declare slots in the class's `inputs` / `outputs` dicts)"
            )
        return spec


def _shape(name: str, default: Any) -> tuple[str, int]:
    if type(default) in _CODES:
        return _CODES[type(default)], 0
    if isinstance(default, tuple | list) and 0 < len(default) <= MAX_ITEMS:
        kinds = {type(item) for item in default}
        if kinds <= {int, float} and kinds:
            return ("d" if float in kinds else "q"), len(default)
        if kinds == {bool}:
            return "?", len(default)
    raise TypeError(
        f"slot {name!r}: declare a float, int or bool, or a tuple of 1 to {MAX_ITEMS} of "
        f"them (fixed length), as the default value; got {default!r} ({type(default).__name__})"
    )


def check_value(spec: SlotSpec, value: Any) -> Value:
    """``value`` as the slot stores it, or a clear TypeError/ValueError."""
    items = struct.unpack(spec.format, pack(spec, struct.Struct(spec.format), value))
    return items if spec.count else items[0]


def pack(spec: SlotSpec, packer: struct.Struct, value: Any) -> bytes:
    """``value`` packed for the slot, or a TypeError/ValueError that names the slot."""
    if spec.count and type(value) not in (tuple, list) and not _is_sequence(value):
        raise _bad_value(spec, value, None)  # a dict or a set would give up its keys
    try:
        data = packer.pack(*value) if spec.count else packer.pack(value)
    except (struct.error, TypeError, OverflowError) as error:
        raise _bad_value(spec, value, error) from None
    # "?" would take anything by its truth: a bool slot takes bools (and ints)
    items = value if spec.count else [value]
    if spec.code == "?" and not all(isinstance(item, int) for item in items):
        raise _bad_value(spec, value, None)
    return data


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _bad_value(spec: SlotSpec, value: Any, error: BaseException | None) -> Exception:
    shown = f"{value!r} ({type(value).__name__})"
    if spec.count and isinstance(value, tuple | list) and len(value) != spec.count:
        return ValueError(
            f"slot {spec.name!r} holds {spec.describe()}; got {len(value)} items: {shown}"
        )
    why = f" ({error})" if error is not None else ""
    return TypeError(f"slot {spec.name!r} holds {spec.describe()}; got {shown}{why}")


class SlotWriter:
    """Writes and reads slots in a region's memory (either side uses one)."""

    def __init__(self, layout: Layout, memory: memoryview) -> None:
        self.layout = layout
        self._memory = memory
        self._words = memory.cast("q")
        self._structs = {name: struct.Struct(spec.format) for name, spec in layout.specs.items()}

    def release(self) -> None:
        self._words.release()

    def write(self, spec: SlotSpec, value: Any) -> None:
        """Store ``value`` (checked) in the slot: the only writer of that slot."""
        self.store(spec, self.encode(spec, value))

    def encode(self, spec: SlotSpec, value: Any) -> bytes:
        """``value`` packed for the slot (checked)."""
        return pack(spec, self._structs[spec.name], value)

    def decode(self, spec: SlotSpec, data: bytes) -> Value:
        items = self._structs[spec.name].unpack(data)
        return items if spec.count else items[0]

    def store(self, spec: SlotSpec, data: bytes) -> None:
        """Store packed ``data`` in the slot, a seqlock write."""
        words, word = self._words, spec.word
        sequence = words[word]
        words[word] = sequence | 1  # odd: a write is under way
        self._memory[spec.offset : spec.offset + len(data)] = data
        words[word] = (sequence | 1) + 1  # even, stored last

    def read(self, spec: SlotSpec) -> tuple[int, Value] | None:
        """``(sequence, value)``, or None when a write is under way or raced the read."""
        words, word = self._words, spec.word
        sequence = words[word]
        if sequence & 1:
            return None
        items = self._structs[spec.name].unpack_from(self._memory, spec.offset)
        if words[word] != sequence:
            return None
        return sequence, (items if spec.count else items[0])

    def read_own(self, spec: SlotSpec) -> bytes:
        """The slot's packed value, read by its writer (nobody else can be writing it)."""
        return bytes(self._memory[spec.offset : spec.offset + self._structs[spec.name].size])

    def sequence(self, spec: SlotSpec) -> int:
        return int(self._words[spec.word])

    def reset(self, values: Mapping[str, Value]) -> None:
        """Store ``values`` (startup: nobody else writes yet)."""
        for name, value in values.items():
            self.write(self.layout.specs[name], value)


@final
class Inputs(Mapping[str, Value]):
    """``self.inputs`` inside a control loop: the latest value the host set, per name.

    Reading never waits: a value being written at that instant reads as the
    previous one.
    """

    def __init__(self, slots: SlotWriter) -> None:
        self._slots = slots
        self._specs = {n: s for n, s in slots.layout.specs.items() if s.direction == "input"}
        self._seen = dict.fromkeys(self._specs, -1)
        self._values: dict[str, Value] = {n: slots.layout.defaults[n] for n in self._specs}

    def __getitem__(self, name: str) -> Value:
        try:
            spec = self._specs[name]
        except KeyError:
            raise KeyError(_missing(name, "input", self._specs)) from None
        if self._slots._words[spec.word] != self._seen[name]:  # changed (or being written)
            read = self._slots.read(spec)
            if read is not None:
                self._seen[name], self._values[name] = read
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"<inputs {dict(self.items())!r}>"


@final
class Outputs(MutableMapping[str, Value]):
    """``self.outputs`` inside a control loop: what the host reads with ``rt.get(name)``.

    Writing the value a slot already holds (bit for bit) does not count as a
    change: watchers are not woken.
    """

    def __init__(self, slots: SlotWriter) -> None:
        self._slots = slots
        self._specs = {n: s for n, s in slots.layout.specs.items() if s.direction == "output"}
        for name, spec in self._specs.items():
            if slots.sequence(spec) & 1:  # the loop before this one died writing it
                slots.write(spec, slots.layout.defaults[name])
        self._packed = {name: slots.read_own(spec) for name, spec in self._specs.items()}
        self._values = {n: slots.decode(self._specs[n], d) for n, d in self._packed.items()}
        self.changed = False

    def __getitem__(self, name: str) -> Value:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(_missing(name, "output", self._specs)) from None

    def __setitem__(self, name: str, value: Value) -> None:
        try:
            spec = self._specs[name]
        except KeyError:
            raise KeyError(_missing(name, "output", self._specs)) from None
        slots = self._slots
        data = slots.encode(spec, value)
        if data == self._packed[name]:  # bytes, not ==: -0.0 and 0.0 differ, nan equals itself
            return
        slots.store(spec, data)
        self._packed[name] = data
        self._values[name] = slots.decode(spec, data)
        self.changed = True

    def __delitem__(self, name: str) -> None:
        raise TypeError("outputs are fixed by the class's declaration; they cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"<outputs {self._values!r}>"


def _missing(name: object, direction: str, specs: Mapping[str, SlotSpec]) -> str:
    return (
        f"no {direction} slot named {name!r}; declared: {', '.join(specs) or 'none'} "
        f"(add it to the class's `{direction}s` dict)"
    )
