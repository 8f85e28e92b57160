"""What crosses the trust boundary is plain data, decoded strictly."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from grader import wire

plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20)


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@given(plain)
def test_plain_values_round_trip_exactly(value):
    assert same(wire.loads(wire.dumps(value)), value)


def test_non_finite_floats_are_tagged_not_bare():
    message = wire.dumps([math.inf, -math.inf, math.nan])
    assert b"Infinity" not in message and b"NaN" not in message
    back = wire.loads(message)
    assert back[0] == math.inf and back[1] == -math.inf and math.isnan(back[2])


def test_long_float_lists_travel_as_raw_bytes_and_exact():
    values = [i * 0.1 for i in range(1000)] + [math.inf, 5e-324]
    message = wire.dumps(values)
    assert b"$floats" in message and len(message) < 8 * len(values) + 100
    assert wire.loads(message) == values


def test_a_frozen_list_is_sent_like_any_long_list():
    frozen = wire.Frozen([0.5] * 100)
    assert wire.loads(wire.dumps([frozen, 1])) == [[0.5] * 100, 1]


def test_lists_with_any_non_float_are_not_packed():
    values = [1.0] * 100 + [1]
    back = wire.loads(wire.dumps(values))
    assert type(back[-1]) is int


def test_subclasses_cross_as_opaque_and_equal_nothing():
    class Liar(float):
        def __eq__(self, other):
            return True

    back = wire.loads(wire.dumps([Liar(1.0)]))
    assert isinstance(back[0], wire.Opaque)
    assert back[0] != 1.0 and back[0] != back[0]
    assert "subclass of float" in back[0].describe()


def test_arrays_and_tensors_travel_as_raw_bytes():
    array = np.arange(6, dtype=np.float16).reshape(2, 3)
    tensor = torch.tensor([1.5, -0.0, float("inf")], dtype=torch.bfloat16)
    back_array, back_tensor = wire.loads(wire.dumps([array, tensor]))
    assert back_array.dtype == np.float16 and (back_array == array).all()
    assert back_tensor.dtype == torch.bfloat16
    assert torch.equal(back_tensor.view(torch.int16), tensor.view(torch.int16))


def test_numpy_scalars_keep_their_dtype():
    back = wire.loads(wire.dumps(np.float32(0.1)))
    assert back.dtype == np.float32 and back == np.float32(0.1)


def _message(text: bytes, *attachments: bytes) -> bytes:
    """A raw message: JSON length, JSON text, then each attachment with its length."""
    return b"".join([len(text).to_bytes(8, "big"), text,
                     *(len(a).to_bytes(8, "big") + a for a in attachments)])


@pytest.mark.parametrize("text, attachments", [
    (b'{"$pickle": "gASV"}', ()),
    (b'{"$float": "-nan"}', ()),
    (b"NaN", ()),
    (b'{"$floats": {"at": 0}}', (b"\x00" * 7,)),
    (b'{"$floats": {"at": 3}}', ()),
    (b'{"$array": {"kind": "ndarray", "dtype": "object", "shape": [1], "at": 0}}', (b"x",)),
    (b'{"$array": {"kind": "ndarray", "dtype": "float32", "shape": [4], "at": 0}}', (b"\x00" * 8,)),
    (b'{"$ref": "secret"}', ()),
    (b'{"$float": "inf", "extra": 1}', ()),
    (b"[" * 100 + b"]" * 100, ()),
])
def test_malformed_or_unknown_payloads_are_refused(text, attachments):
    with pytest.raises(wire.WireError):
        wire.loads(_message(text, *attachments))


def test_truncated_messages_are_refused():
    message = wire.dumps([0.5] * 100)
    with pytest.raises(wire.WireError):
        wire.loads(message[:-10])


def test_refs_are_only_accepted_in_requests():
    assert isinstance(wire.loads(_message(b'{"$ref": "model"}'), allow_refs=True), wire.Ref)


def test_e8m0_scales_travel_bit_for_bit():
    codes = torch.tensor([0, 1, 120, 127, 254, 255], dtype=torch.uint8)
    back = wire.loads(wire.dumps(codes.view(torch.float8_e8m0fnu)))
    assert back.dtype == torch.float8_e8m0fnu
    assert torch.equal(back.view(torch.uint8), codes)
