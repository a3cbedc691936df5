"""Nested units: a group whose units come in equal-size *blocks* (GQA's query heads per KV head).

Why: union-find can only say "these positions go together".  A broadcast copy says something weaker:
GQA's ``repeat_kv`` (``Expand``/``Tile`` then ``Reshape``, or ``GroupQueryAttention``'s own layout) makes
``n_rep`` copies of every KV head, one per query head.  A query head may go alone — the copy count
``n_rep`` is one integer for every KV head, so *each KV head must keep the same number of copies* — and a
KV head goes when its last query head goes.  Rules report such relations as ``Effects.nests``
(parent position ↔ child position, :mod:`onnxprune.analysis.rules.base`).

Here the walk's nest pairs become *blocks*: the components (union-find roots) joined by nest pairs form
a super-component; it is *regular* when no root is both parent and child, every child has the same
parents, and there are at least two children.  A regular super-component is one block: its children are
units, its parents are *block atoms* (removed exactly when every unit of the block is removed).  An
irregular one is merged into a single unit, which is the old all-together behaviour and always sound.

Legal plans keep, in every block of a group, either nothing or the same number ``k`` of units
(:func:`onnxprune.planning.block_units.keep_units` chooses them; the plan check refuses anything else).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxprune.analysis.unionfind import UnionFind


@dataclass
class Nesting:
    """Final atom roots and the blocks: per block, its parent roots and child roots (in root order)."""

    roots: np.ndarray
    blocks: list[tuple[list[int], list[int]]] = field(default_factory=list)

    def parents(self) -> set[int]:
        return {r for parents, _ in self.blocks for r in parents}


def resolve_nesting(uf: UnionFind, nests: list[tuple[np.ndarray, np.ndarray]]) -> Nesting:
    """Blocks from the walk's nest pairs; irregular super-components are unified in ``uf`` first."""
    roots = uf.roots()
    if not nests:
        return Nesting(roots)
    supers = _super_components(roots, nests)
    irregular = [members for members, regular in supers if not regular]
    for parents, children in irregular:
        everything = np.array(parents + children, dtype=np.int64)
        uf.union_many(np.full(len(everything) - 1, everything[0]), everything[1:])
    if irregular:
        roots = uf.roots()
        supers = _super_components(roots, nests)
    order = {int(r): i for i, r in enumerate(_first_order(roots))}
    blocks = [members for members, regular in supers if regular]
    blocks = [(sorted(p, key=order.get), sorted(c, key=order.get)) for p, c in blocks]
    blocks.sort(key=lambda pc: min(order[r] for r in pc[0] + pc[1]))
    return Nesting(roots, blocks)


def _first_order(roots: np.ndarray) -> np.ndarray:
    _, first = np.unique(roots, return_index=True)
    return roots[np.sort(first)]


def _super_components(roots: np.ndarray, nests: list[tuple[np.ndarray, np.ndarray]]
                      ) -> list[tuple[tuple[list[int], list[int]], bool]]:
    """((parent roots, child roots), regular) of every component that nest pairs join."""
    pairs: set[tuple[int, int]] = set()
    for parent_atoms, child_atoms in nests:
        pairs.update((p, c) for p, c in zip(roots[parent_atoms].tolist(), roots[child_atoms].tolist()) if p != c)
    index: dict[int, int] = {}
    for p, c in sorted(pairs):
        index.setdefault(p, len(index))
        index.setdefault(c, len(index))
    joined = UnionFind()
    joined.add(len(index))
    for p, c in pairs:
        joined.union(index[p], index[c])
    comp = joined.roots()
    found: dict[int, tuple[set[int], set[int], dict[int, set[int]]]] = {}
    for p, c in pairs:
        parents, children, of_child = found.setdefault(int(comp[index[p]]), (set(), set(), {}))
        parents.add(p)
        children.add(c)
        of_child.setdefault(c, set()).add(p)
    out = []
    for key in sorted(found):
        parents, children, of_child = found[key]
        regular = not (parents & children) and len(children) >= 2 and all(s == parents for s in of_child.values())
        out.append(((sorted(parents), sorted(children)), regular))
    return out


def check_blocks(blocks: tuple[tuple[int, ...], ...], kept: list[int], fixed: list | tuple = ()) -> str | None:
    """Why ``kept`` is not legal for a group with these blocks (None when it is); ``fixed``: the freezes
    that keep every block (its parents may not change)."""
    chosen = set(kept)
    counts = {sum(u in chosen for u in block) for block in blocks}
    if fixed and 0 in counts:
        return f"removes a whole block, which must stay: {fixed[0].reason}"
    if len(counts - {0}) > 1:
        return f"keeps {sorted(counts - {0})} units in different blocks (every block keeps none or the same number)"
    return None
