"""
The readable parts of the ``data`` entry that SB3's ``save`` writes, decoded without unpickling.

SB3 (``save_util.data_to_json``) stores each attribute that is not plain JSON as
``{":type:": ..., ":serialized:": <base64 cloudpickle>, ...}`` followed by the object's first-level
attributes: as JSON when they are JSON, else as their ``str()``. The pickle is never read here; what
a model needs is rebuilt from those readable attributes:

* spaces from their shape, dtype, bounds, ``n``, ``nvec`` and ``start`` (:func:`space_from_data`), the
  subspaces of a ``Dict`` from their ``repr`` (:func:`space_from_repr`);
* classes (policy, rollout buffer, the classes in ``policy_kwargs``) from their module and the
  qualified name their readable attributes show, resolved through the allow-list of
  :func:`~sb3_trpo_plugin.serialization.description.decode_class`;
* schedules as the numbers or SB3 schedule classes their readable attributes describe
  (:mod:`sb3_trpo_plugin.loading.sb3_schedules`).

Numbers printed by NumPy are read back only when the text is exact: an array summarised with ``...``
or an element printed with NumPy's full 8 fractional digits (possibly rounded) makes the value unreadable.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_trpo_plugin.compat.spaces import discrete_space
from sb3_trpo_plugin.serialization.description import SPACE_DTYPES, UnsupportedValueError, decode_class

#: The key SB3 gives the base64 pickle of a value that is not JSON.
SERIALIZED = ":serialized:"
#: The key SB3 gives the type of that value.
TYPE = ":type:"
#: NumPy's default print precision: an element printed with this many fractional digits may be rounded.
NUMPY_PRINT_PRECISION = 8

_CLASS_TEXT = re.compile(r"<class '([A-Za-z_][\w.<>]*)'>")
_FUNCTION_TEXT = re.compile(r"<function ([A-Za-z_][\w.]*)\.__init__ at 0x[0-9a-f]+>")
#: A number as NumPy and Python print it.
NUMBER_TEXT = r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)"


class UnreadableValueError(UnsupportedValueError):
    """A value of SB3's ``data`` entry that exists only as a pickle (or as text that does not fix it exactly)."""


class PartlyReadableSpaceError(UnreadableValueError):
    """
    A space whose shape and dtype are readable but whose bounds are not (an array NumPy summarised with ``...``).

    :param message: what is unreadable
    :param space_type: the space's class name
    :param shape: its shape
    :param dtype: its dtype name
    """

    def __init__(self, message: str, space_type: str, shape: tuple[int, ...], dtype: str) -> None:
        super().__init__(message)
        self.space_type, self.shape, self.dtype = space_type, shape, dtype

    def matches(self, space: spaces.Space) -> bool:
        """
        :param space: a space (the environment's)
        :return: whether it has this space's type, shape and dtype
        """
        return (
            type(space).__name__ == self.space_type and space.shape == self.shape and np.dtype(space.dtype).name == self.dtype
        )


def is_serialized(entry: Any) -> bool:
    """
    :param entry: a value of the ``data`` JSON
    :return: whether SB3 stored it as a pickle (with readable attributes next to it)
    """
    return isinstance(entry, dict) and SERIALIZED in entry


def readable_attributes(entry: Mapping[str, Any]) -> dict[str, Any]:
    """
    :param entry: a serialized ``data`` value
    :return: its readable attributes (everything but the pickle and the type)
    """
    return {key: value for key, value in entry.items() if key not in (SERIALIZED, TYPE)}


def type_name(entry: Mapping[str, Any]) -> str:
    """
    :param entry: a serialized ``data`` value
    :return: the qualified name in its ``:type:`` text (``"gymnasium.spaces.box.Box"``), or ``""``
    """
    match = _CLASS_TEXT.fullmatch(str(entry.get(TYPE, "")))
    return match.group(1) if match else ""


def _dtype(name: Any, where: str) -> str:
    if name not in SPACE_DTYPES:
        raise UnreadableValueError(f"{where}: dtype {name!r} is not one safe loading rebuilds")
    return str(name)


def _check_exact(token: str, dtype: str, where: str) -> None:
    """
    Refuse a printed number that NumPy may have rounded to another value of ``dtype``.

    NumPy prints the shortest text that reads back exactly, but at most 8 fractional digits (of the number,
    or of the mantissa with an exponent). With fewer the text is exact; with 8 it is still exact when the
    rounding it may hide (half a unit of the last digit) is below half the gap to the neighbouring values
    of ``dtype`` (float32 CartPole bounds like -0.41887903: yes; float64 0.12345679: no).
    """
    mantissa, _, exponent = token.lower().partition("e")
    _, _, fraction = mantissa.partition(".")
    if len(fraction) < NUMPY_PRINT_PRECISION or not math.isfinite(float(token)):
        return
    rounding = 0.5 * 10.0 ** (int(exponent or 0) - len(fraction))
    value = np.asarray(float(token), dtype=dtype)
    # The directions in ``dtype`` too: NumPy 1.x would otherwise step a 0-d float32 in float64 (value-based casting)
    up, down = np.asarray(np.inf, dtype=dtype), np.asarray(-np.inf, dtype=dtype)
    gaps = (np.nextafter(value, up) - value, value - np.nextafter(value, down))
    if not rounding < min(float(gap) for gap in gaps) / 2:
        raise UnreadableValueError(
            f"{where}: {token} is printed with NumPy's {NUMPY_PRINT_PRECISION} digits and may be rounded"
        )


def parse_array_text(text: str, dtype: str, shape: tuple[int, ...] | None, where: str) -> np.ndarray:
    """
    Read an array from the text ``str(array)`` gives (``"[ -1.   0. -inf]"``, nested brackets, or one number).

    :param text: the text
    :param dtype: the array's dtype name
    :param shape: its shape (``None``: one dimension, as many elements as the text has)
    :param where: the field, for error messages
    :return: the array
    :raises UnreadableValueError: for summarised arrays (``...``), possibly rounded or malformed numbers
    """
    if "..." in text:
        raise UnreadableValueError(f"{where}: NumPy printed it summarised with '...', so its elements are unknown")
    tokens = text.replace("[", " ").replace("]", " ").replace(",", " ").split()
    floating = np.dtype(dtype).kind == "f"
    values: list[float | int] = []
    for token in tokens:
        if not re.fullmatch(NUMBER_TEXT, token, flags=re.IGNORECASE):
            raise UnreadableValueError(f"{where}: {token!r} is not a number")
        if floating:
            _check_exact(token, dtype, where)
            values.append(float(token))
        else:
            number = float(token)
            if not number.is_integer():
                raise UnreadableValueError(f"{where}: {token!r} is not an integer")
            values.append(int(number))
    if shape is None:
        shape = (len(values),)
    if len(values) != math.prod(shape):
        raise UnreadableValueError(f"{where}: {len(values)} numbers for shape {shape}")
    return np.asarray(values, dtype=dtype).reshape(shape)


def nested_integers(text: str, where: str) -> np.ndarray:
    """
    An integer array of any shape from ``str(array)`` (``"[[2 3]\\n [4 5]]"``), its shape read from the brackets.

    :param text: the text
    :param where: the field, for error messages
    :return: the ``int64`` array
    :raises UnreadableValueError: for summarised or malformed text
    """
    if "..." in text or not re.fullmatch(r"[\s\d\[\]-]+", text):
        raise UnreadableValueError(f"{where}: {text[:80]!r} is not a readable integer array")
    literal = re.sub(r"(?<=[\d\]])\s+(?=[-\d\[])", ",", text.strip())
    try:
        return np.asarray(ast.literal_eval(literal), dtype=np.int64)
    except (ValueError, SyntaxError) as error:
        raise UnreadableValueError(f"{where}: {text[:80]!r} is not a readable integer array") from error


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not (isinstance(value, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)):
        raise UnreadableValueError(f"{where}: shape {value!r} is not readable")
    return tuple(value)


def _integer(value: Any, where: str) -> int:
    try:
        return int(str(value))
    except ValueError as error:
        raise UnreadableValueError(f"{where}: {value!r} is not an integer") from error


def _box_bound(attributes: Mapping[str, Any], name: str, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A Box bound: gymnasium's short repr (one number for a uniform bound) when it was kept, else the printed array."""
    short = attributes.get(f"{name}_repr")
    if isinstance(short, str) and not short.lstrip().startswith("["):
        return np.full(shape, parse_array_text(short, dtype, (), f"{where}.{name}_repr").item(), dtype=dtype)
    return parse_array_text(str(attributes.get(name)), dtype, shape, f"{where}.{name}")


def space_from_data(entry: Any, where: str) -> spaces.Space:
    """
    Rebuild a space from the readable attributes SB3 stored next to its pickle.

    :param entry: the ``data`` value (``observation_space`` or ``action_space``)
    :param where: the field name, for error messages
    :return: the space
    :raises PartlyReadableSpaceError: for a Box whose bounds NumPy summarised
    :raises UnreadableValueError: for other spaces, or attributes that do not fix the space
    """
    if not is_serialized(entry):
        raise UnreadableValueError(f"{where} is not a serialized space")
    attributes = readable_attributes(entry)
    kind = type_name(entry).rpartition(".")[2]
    try:
        if kind == "Box":
            dtype = _dtype(attributes.get("dtype"), where)
            shape = _shape(attributes.get("_shape"), where)
            try:
                low = _box_bound(attributes, "low", dtype, shape, where)
                high = _box_bound(attributes, "high", dtype, shape, where)
            except UnreadableValueError as error:
                if "summarised" in str(error):
                    raise PartlyReadableSpaceError(str(error), "Box", shape, dtype) from error
                raise
            return spaces.Box(low, high, shape, np.dtype(dtype))
        if kind == "Discrete":
            dtype = _dtype(attributes.get("dtype", "int64"), where)
            first = _integer(attributes.get("start", 0), f"{where}.start")
            return discrete_space(_integer(attributes.get("n"), f"{where}.n"), start=first, dtype=dtype)
        if kind == "MultiDiscrete":
            dtype = _dtype(attributes.get("dtype"), where)
            shape = _shape(attributes.get("_shape"), where)
            nvec = parse_array_text(str(attributes.get("nvec")), dtype, shape, f"{where}.nvec")
            starts = parse_array_text(str(attributes.get("start")), dtype, shape, f"{where}.start")
            return spaces.MultiDiscrete(nvec, dtype=np.dtype(dtype).type, start=starts)
        if kind == "MultiBinary":
            size = attributes.get("n")
            if isinstance(size, list):
                return spaces.MultiBinary([_integer(k, f"{where}.n") for k in size])
            return spaces.MultiBinary(_integer(size, f"{where}.n"))
        if kind == "Dict":
            subspaces = space_from_repr(str(attributes.get("spaces")), where)
            if not isinstance(subspaces, list):
                raise UnreadableValueError(f"{where}.spaces is not a dict of spaces")
            return spaces.Dict(subspaces)
    except (TypeError, ValueError, AssertionError) as error:
        if isinstance(error, UnreadableValueError):
            raise
        raise UnreadableValueError(f"{where}: its readable attributes do not make a valid {kind} ({error})") from error
    raise UnreadableValueError(f"{where} is a {type_name(entry) or 'value'} that safe loading does not rebuild")


class _ReprReader:
    """A reader of the ``repr`` gymnasium gives its spaces (the subspaces of a ``Dict`` exist only as that text)."""

    def __init__(self, text: str, where: str) -> None:
        self.text, self.position, self.where = text, 0, where

    def fail(self, what: str) -> UnreadableValueError:
        return UnreadableValueError(f"{self.where}: cannot read {what} at {self.text[self.position : self.position + 30]!r}")

    def skip(self) -> None:
        while self.position < len(self.text) and self.text[self.position].isspace():
            self.position += 1

    def accept(self, literal: str) -> bool:
        self.skip()
        if self.text.startswith(literal, self.position):
            self.position += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.accept(literal):
            raise self.fail(repr(literal))

    def balanced(self, opening: str, closing: str) -> str:
        """The text from ``opening`` to its matching ``closing``, both included."""
        self.skip()
        if not self.text.startswith(opening, self.position):
            raise self.fail(opening)
        depth, start = 0, self.position
        while self.position < len(self.text):
            character = self.text[self.position]
            self.position += 1
            depth += (character == opening) - (character == closing)
            if depth == 0:
                return self.text[start : self.position]
        raise self.fail(f"a closing {closing!r}")

    def token(self) -> str:
        """A number, a name or an array in brackets."""
        self.skip()
        if self.text.startswith("[", self.position):
            return self.balanced("[", "]")
        match = re.compile(r"[-+\w.]+").match(self.text, self.position)
        if match is None:
            raise self.fail("a value")
        self.position = match.end()
        return match.group(0)

    def key(self) -> str:
        self.skip()
        match = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"").match(self.text, self.position)
        if match is None:
            raise self.fail("a key")
        self.position = match.end()
        return str(ast.literal_eval(match.group(0)))

    def keyword(self, name: str) -> bool:
        return self.accept(f", {name}=") or self.accept(f",{name}=")

    def space(self, where: str) -> spaces.Space:
        kind = self.token()
        self.expect("(")
        if kind == "Dict":
            items = self.items(")", where)
            return spaces.Dict(items)
        if kind == "Box":
            low = self.token()
            self.expect(",")
            high = self.token()
            self.expect(",")
            shape = tuple(int(n) for n in re.findall(r"\d+", self.balanced("(", ")")))
            self.expect(",")
            dtype = _dtype(self.token(), where)
            self.expect(")")
            return spaces.Box(
                self.bound(low, dtype, shape, where), self.bound(high, dtype, shape, where), shape, np.dtype(dtype)
            )
        if kind == "Discrete":
            size, first, dtype = _integer(self.token(), where), 0, "int64"
            if self.keyword("start"):
                first = _integer(self.token(), where)
            if self.keyword("dtype"):
                dtype = _dtype(self.token(), where)
            self.expect(")")
            return discrete_space(size, start=first, dtype=dtype)
        if kind == "MultiDiscrete":
            nvec = nested_integers(self.token(), where)
            starts = nested_integers(self.token(), where) if self.keyword("start") else np.zeros_like(nvec)
            self.expect(")")
            return spaces.MultiDiscrete(nvec, start=starts)
        if kind == "MultiBinary":
            shape_text = self.balanced("(", ")") if self.text.startswith("(", self.position) else self.token()
            self.expect(")")
            numbers = [int(n) for n in re.findall(r"\d+", shape_text)]
            return spaces.MultiBinary(numbers[0] if not shape_text.startswith(("(", "[")) else numbers)
        raise self.fail(f"a space ({kind!r} is not one safe loading rebuilds)")

    def bound(self, text: str, dtype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
        if text.startswith("["):
            return parse_array_text(text, dtype, shape, where)
        return np.full(shape, parse_array_text(text, dtype, (), where).item(), dtype=dtype)

    def items(self, closing: str, where: str) -> list[tuple[str, spaces.Space]]:
        items: list[tuple[str, spaces.Space]] = []
        while not self.accept(closing):
            if items:
                self.expect(",")
            key = self.key()
            self.expect(":")
            items.append((key, self.space(f"{where}[{key!r}]")))
        return items

    def pairs(self, where: str) -> list[tuple[str, spaces.Space]]:
        """``[('a', Box(...)), ...])``: the list form of an ``OrderedDict``'s ``str`` (Python ≤ 3.11)."""
        items: list[tuple[str, spaces.Space]] = []
        while not self.accept("])"):
            if items:
                self.expect(",")
            self.expect("(")
            key = self.key()
            self.expect(",")
            items.append((key, self.space(f"{where}[{key!r}]")))
            self.expect(")")
        return items


def space_from_repr(text: str, where: str) -> spaces.Space | list[tuple[str, spaces.Space]]:
    """
    Rebuild a space from its ``repr`` (``"Box(0, 255, (2, 2), uint8)"``), or the items of a dict of spaces
    from the dict's ``str`` (``"{'a': Box(...), 'b': Discrete(2)}"``; gymnasium 0.29 keeps them in an
    ``OrderedDict``, printed ``"OrderedDict([('a', Box(...)), ...])"`` before Python 3.12 and
    ``"OrderedDict({'a': Box(...), ...})"`` since).

    :param text: the text
    :param where: the field, for error messages
    :return: the space, or the ``(key, space)`` pairs in their order
    :raises UnreadableValueError: when the text does not fix a space exactly
    """
    reader = _ReprReader(text, where)
    try:
        result: spaces.Space | list[tuple[str, spaces.Space]]
        if reader.accept("OrderedDict(["):
            result = reader.pairs(where)
        elif reader.accept("OrderedDict({"):
            result = reader.items("}", where)
            reader.expect(")")
        else:
            result = reader.items("}", where) if reader.accept("{") else reader.space(where)
    except (TypeError, ValueError, AssertionError, SyntaxError) as error:
        if isinstance(error, UnreadableValueError):
            raise
        raise UnreadableValueError(f"{where}: {text[:80]!r} does not describe a valid space ({error})") from error
    reader.skip()
    if reader.position != len(text):
        raise reader.fail("the end")
    return result


def class_from_data(entry: Any, role: str) -> type:
    """
    A class SB3 stored as a pickle, resolved from the module and qualified name its readable attributes show.

    The name comes from the class's own ``__init__`` (``"<function ActorCriticPolicy.__init__ at 0x...>"``) and
    the module from ``__module__``; :func:`decode_class` then allows only its fixed modules and base class.

    :param entry: the ``data`` value
    :param role: the role (``"policy_class"``, ``"rollout_buffer_class"``)
    :return: the class
    :raises UnreadableValueError: when the attributes do not name a class, or it is not allowed
    """
    if not is_serialized(entry):
        raise UnreadableValueError(f"{role} is not a serialized class")
    module = entry.get("__module__")
    match = _FUNCTION_TEXT.fullmatch(str(entry.get("__init__", "")))
    if not isinstance(module, str) or match is None or "." in match.group(1):
        raise UnreadableValueError(f"{role}: its readable attributes do not name a class")
    cls = decode_class(f"{module}:{match.group(1)}", role)
    if cls.__dict__.get("__init__") is None:  # the name came from an __init__ the class must define itself
        raise UnreadableValueError(f"{role}: {cls.__qualname__} defines no __init__ of its own")
    return cls


def class_from_text(text: str, role: str) -> type:
    """
    :param text: ``str(cls)``, ``"<class 'torch.nn.modules.activation.ReLU'>"``
    :param role: its role, which fixes the allowed modules and base class
    :return: the class
    :raises UnreadableValueError: for other text, or a class outside the allow-list
    """
    match = _CLASS_TEXT.fullmatch(text)
    if match is None:
        raise UnreadableValueError(f"{role}: {text[:80]!r} does not name a class")
    module, _, name = match.group(1).rpartition(".")
    return decode_class(f"{module}:{name}", role)


#: ``policy_kwargs`` entries that hold a class, by the role that fixes their allow-list.
CLASS_KWARGS = ("activation_fn", "optimizer_class", "features_extractor_class")


def policy_kwargs_from_data(entry: Any) -> dict[str, Any]:
    """
    ``policy_kwargs``: plain JSON as is; a pickled dict from its readable first-level items, the classes
    among them resolved by :func:`class_from_text`.

    :param entry: the ``data`` value
    :return: the keyword arguments
    :raises UnreadableValueError: for an item readable only as text (a function, a dict holding classes, ...)
    """
    if entry is None:
        return {}
    if isinstance(entry, dict) and not is_serialized(entry):
        return dict(entry)
    if not is_serialized(entry) or type_name(entry) != "dict":
        raise UnreadableValueError("policy_kwargs is not a dict")
    decoded = {}
    for key, value in readable_attributes(entry).items():
        if key in CLASS_KWARGS:
            decoded[key] = class_from_text(str(value), key)
        elif isinstance(value, str):  # a JSON item would have kept the dict plain: this is the str() of an object
            raise UnreadableValueError(f"policy_kwargs[{key!r}] is readable only as the text {value[:80]!r}")
        else:
            decoded[key] = value
    return decoded
