"""A Merkle tree over a period's transactions, as in RFC 6962 / RFC 9162 (Certificate
Transparency): leaves hashed with a 0x00 prefix, interior nodes with 0x01, and an odd node at the
end of a level promoted unchanged (the same tree as the RFC's split at the largest power of two).

A run's tree has two levels of trees: one per merchant over its transactions in
(created_at, transaction_id) order, and a top tree over the merchants' subtree roots in merchant
id order. A merchant's inclusion proof is the path in its own subtree plus its subtree's path in
the top tree, so it reveals nothing of other merchants but hashes. Pure; no I/O.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALLIANCE_BUCKET = ""  # expiry transactions have no merchant: they sit in the alliance's subtree


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def epoch_microseconds(instant: datetime) -> int:
    return (instant - EPOCH) // timedelta(microseconds=1)


def transaction_leaf_data(
    *,
    transaction_id: str,
    kind: str,
    merchant_id: str | None,
    member_id: str,
    currency: str,
    points: int,
    created_at: datetime,
    settlement_value: int,
    balance_after: int,
    reverses: str | None,
) -> bytes:
    """The bytes a transaction's leaf hashes; settlement/repository.py builds the same in SQL."""
    fields = (
        "alliance-txn-v1",
        transaction_id,
        kind,
        merchant_id or "",
        member_id,
        currency,
        str(points),
        str(epoch_microseconds(created_at)),
        str(settlement_value),
        str(balance_after),
        reverses or "",
    )
    return "|".join(fields).encode()


def merchant_leaf_data(merchant_id: str, transactions: int, subtree_root: bytes) -> bytes:
    """A top-tree leaf: one merchant's subtree."""
    return f"alliance-merchant-v1|{merchant_id}|{transactions}|".encode() + subtree_root


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree hash over leaf hashes (not leaf data)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _parent_level(level)
    return level[0]


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up to the root."""
    assert 0 <= index < len(leaves), "index within the tree"
    path: list[bytes] = []
    level = list(leaves)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level = _parent_level(level)
        position //= 2
    return path


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that `path` proves `leaf` at `index` of a `size`-leaf tree under; None if the
    path has the wrong length for that position."""
    if not 0 <= index < size:
        return None
    node, position, width, remaining = leaf, index, size, list(path)
    while width > 1:
        if position % 2 == 1:
            if not remaining:
                return None
            node = node_hash(remaining.pop(0), node)
        elif position + 1 < width:
            if not remaining:
                return None
            node = node_hash(node, remaining.pop(0))
        position //= 2
        width = (width + 1) // 2
    return node if not remaining else None


CHUNK = 1024
"""Leaves `StreamingRoot.extend` hashes at once (a power of two)."""


def _complete_root(leaves: Sequence[bytes]) -> bytes:
    """The root of a complete tree (a power-of-two number of leaves), level by level."""
    sha256 = hashlib.sha256
    level = list(leaves)
    while len(level) > 1:
        level = [
            sha256(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
        ]
    return level[0]


def _parent_level(level: list[bytes]) -> list[bytes]:
    parents = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


class StreamingRoot:
    """The same root as `root()`, fed one leaf at a time in O(log n) memory.

    Keeps the roots of complete subtrees of decreasing size; the final fold from the right
    joins them as the RFC's split at the largest power of two does.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        self.size += 1
        self._push(1, leaf)

    def extend(self, leaves: Sequence[bytes]) -> None:
        """`add` each leaf in order; aligned runs of CHUNK leaves are hashed as one complete
        subtree, level by level, which is the same tree without the per-leaf bookkeeping."""
        position, count = 0, len(leaves)
        while position < count:
            if self.size % CHUNK == 0 and count - position >= CHUNK:
                # Every complete subtree on the stack is at least CHUNK wide: push this one.
                self.size += CHUNK
                self._push(CHUNK, _complete_root(leaves[position : position + CHUNK]))
                position += CHUNK
            else:
                self.add(leaves[position])
                position += 1

    def _push(self, width: int, node: bytes) -> None:
        while self._stack and self._stack[-1][0] == width:
            _, left = self._stack.pop()
            width, node = width * 2, node_hash(left, node)
        self._stack.append((width, node))

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def top_leaves(
    merchants: Sequence[tuple[str, int, bytes]], alliance: tuple[bytes, int]
) -> list[bytes]:
    """The top tree's leaf hashes: each merchant's subtree in id order, then the alliance's."""
    leaves = [leaf_hash(merchant_leaf_data(m, count, sub)) for m, count, sub in merchants]
    leaves.append(leaf_hash(merchant_leaf_data(ALLIANCE_BUCKET, alliance[1], alliance[0])))
    return leaves


def top_root(merchants: Sequence[tuple[str, int, bytes]], alliance: tuple[bytes, int]) -> bytes:
    return root(top_leaves(merchants, alliance))


def subtree(trees: dict[str, StreamingRoot], bucket: str) -> tuple[bytes, int]:
    """(root, leaves) of one bucket's subtree; an empty one for a bucket with no transactions."""
    tree = trees.get(bucket)
    return (tree.root(), tree.size) if tree else (EMPTY_ROOT, 0)


def extend_subtrees(trees: dict[str, StreamingRoot], rows: Sequence[Sequence[Any]]) -> None:
    """Add (bucket, leaf hash, ...) rows, in tree order, to their buckets' subtrees."""
    for bucket, group in itertools.groupby(rows, key=itemgetter(0)):
        trees.setdefault(bucket, StreamingRoot()).extend([row[1] for row in group])
