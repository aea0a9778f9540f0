"""`StreamingRoot.extend` (what a run feeds its leaves through, a batch at a time) builds the same
tree as `merkle.root` over the whole list, wherever the batches start and end."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings, strategies as st

from settlement import merkle


def leaves(count: int) -> list[bytes]:
    return [merkle.leaf_hash(str(n).encode()) for n in range(count)]


ALL = leaves(3 * merkle.CHUNK + 5)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=len(ALL)),
    cuts=st.lists(st.integers(min_value=0, max_value=len(ALL)), max_size=6),
    singles=st.booleans(),
)
def test_extend_in_any_batches_is_the_tree_of_all_the_leaves(
    size: int, cuts: list[int], singles: bool
) -> None:
    data = ALL[:size]
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    tree = merkle.StreamingRoot()
    for number, (start, stop) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if singles and number % 2:
            for leaf in data[start:stop]:
                tree.add(leaf)
        else:
            tree.extend(data[start:stop])
    assert tree.size == size
    assert tree.root() == merkle.root(data)


def test_a_complete_chunk_is_hashed_as_rfc_6962_nodes() -> None:
    data = ALL[: 2 * merkle.CHUNK + 1]
    tree = merkle.StreamingRoot()
    tree.extend(data)
    left = merkle.root(data[: merkle.CHUNK])
    right = merkle.root(data[merkle.CHUNK : 2 * merkle.CHUNK])
    two_chunks = hashlib.sha256(b"\x01" + left + right).digest()
    assert tree.root() == hashlib.sha256(b"\x01" + two_chunks + data[-1]).digest()
