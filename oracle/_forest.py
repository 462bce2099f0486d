"""Few-row prediction for fitted HistGradientBoostingRegressors, without sklearn's per-call overhead.

scikit-learn walks each tree in its own call (about 5 µs each) and, with categorical features, re-encodes
the input through a ColumnTransformer first, so one row through three 300-tree models costs ~5 ms. Here
every tree of every model is flattened into arrays and all (row, tree) pairs advance one level per numpy
step. The walk follows sklearn's `_predict_one_from_raw_data`: numbers go left when `value <= threshold`,
NaN takes the node's missing-value branch, and a category goes left when the split's bitset holds it,
right when it is otherwise known, else (unseen, negative, not an integer) the missing-value branch.
sklearn's re-encoding (categories to their rank among the seen values, categorical columns moved first)
is folded into the node arrays, so the walk reads the caller's columns and codes directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

# Beyond this many (row, tree) pairs sklearn's compiled, threaded loop is the faster one.
MAX_PAIRS = 200_000
# Category codes outside 0-255 cannot be in a split's bitset; this slot of each table is "missing".
_MISSING = 256


class CompiledForest:
    """Several regressors' trees as flat node arrays; leaves point to themselves, so walks may overrun.

    The regressors must have been fitted on the same columns (the same categorical mask).
    """

    def __init__(self, models: Sequence[HistGradientBoostingRegressor]) -> None:
        self.models = tuple(models)
        self.n_features = int(models[0].n_features_in_)
        self.categorical_columns = np.flatnonzero(_categorical_mask(models[0]))
        self.baselines = np.array([float(model._baseline_prediction.ravel()[0]) for model in models])
        parts: list[dict[str, np.ndarray]] = []
        tables = [np.zeros(_MISSING + 1, dtype=bool)]  # row 0 serves numeric nodes and leaves
        self.roots: list[np.ndarray] = []
        offset, depth = 0, 0
        for model in models:
            layout = _Layout(model, self.categorical_columns)
            roots = []
            for (predictor,) in model._predictors:
                parts.append(layout.flatten(predictor, offset, tables))
                roots.append(offset)
                depth = max(depth, int(predictor.nodes["depth"].max()))
                offset += len(predictor.nodes)
            self.roots.append(np.array(roots, dtype=np.intp))
        joined = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        self.column = joined["column"]
        self.threshold = joined["threshold"]
        self.children = np.stack([joined["right"], joined["left"]], axis=1).ravel()
        self.value = joined["value"]
        self.category_slot = joined["slot"]
        self.is_categorical = joined["table"] > 0
        self.table_start = joined["table"] * (_MISSING + 1)
        self.tables = np.stack(tables).ravel()
        self.depth = depth

    def trees(self, models: Sequence[int]) -> int:
        return sum(len(self.roots[model]) for model in models)

    def predict(self, X: np.ndarray, models: Sequence[int]) -> np.ndarray:
        """Predictions (len(models), rows) of the chosen models, as `model.predict(X)` gives them."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] * self.trees(models) > MAX_PAIRS:
            return np.stack([self.models[model].predict(X) for model in models])
        if X.shape[0] == 0:
            return np.zeros((len(models), 0))
        return self._walk(X, models)

    def _walk(self, X: np.ndarray, models: Sequence[int]) -> np.ndarray:
        missing = np.isnan(X)
        both = np.concatenate([X, np.where(missing, -np.inf, X)], axis=1)
        codes = _codes(X[:, self.categorical_columns])
        has_categorical = bool(self.categorical_columns.size)
        roots = np.concatenate([self.roots[model] for model in models])
        node = np.broadcast_to(roots, (X.shape[0], roots.size))
        # Flat positions into the row-major inputs: one `take` per step instead of 2-D fancy indexing.
        row_start = np.arange(X.shape[0])[:, None] * both.shape[1]
        both = both.ravel()
        if has_categorical:
            code_start = np.arange(X.shape[0])[:, None] * codes.shape[1]
            codes = codes.ravel()
        for _ in range(self.depth):
            go_left = both.take(row_start + self.column.take(node)) <= self.threshold.take(node)
            if has_categorical:  # only the pairs at a categorical split read its table
                at = np.flatnonzero(self.is_categorical.take(node))
                if at.size:
                    split = node.take(at)
                    slot = codes.take(code_start.take(at // node.shape[1]) + self.category_slot.take(split))
                    go_left.ravel()[at] = self.tables.take(self.table_start.take(split) + slot)
            node = self.children.take(2 * node + go_left)
        sizes = [len(self.roots[model]) for model in models]
        sums = np.add.reduceat(self.value.take(node), np.cumsum([0, *sizes[:-1]]), axis=1)
        return sums.T + self.baselines[list(models)][:, None]


def _categorical_mask(model: HistGradientBoostingRegressor) -> np.ndarray:
    mask = getattr(model, "is_categorical_", None)
    return np.zeros(model.n_features_in_, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def _codes(values: np.ndarray) -> np.ndarray:
    """Category codes as table indices; anything that cannot be a seen category takes the missing slot."""
    valid = np.isfinite(values) & (values >= 0) & (values < _MISSING) & (values == np.floor(values))
    return np.where(valid, np.nan_to_num(values), _MISSING).astype(np.intp)


class _Layout:
    """How one fitted model reads its input: sklearn's column order and category encoding, undone."""

    def __init__(self, model: HistGradientBoostingRegressor, categorical_columns: np.ndarray) -> None:
        self.width = int(model.n_features_in_)
        self.known, self.f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        columns = np.arange(self.width)
        self.column_of = columns
        self.seen: dict[int, np.ndarray] = {}
        if model._preprocessor is not None:
            mask = _categorical_mask(model)
            self.column_of = np.concatenate([columns[mask], columns[~mask]])
            encoder = model._preprocessor.named_transformers_["encoder"]
            for position, values in enumerate(encoder.categories_):
                values = np.asarray(values, dtype=np.float64)
                self.seen[position] = values[~np.isnan(values)]
        self.slot = {int(column): position for position, column in enumerate(categorical_columns)}

    def flatten(self, predictor: Any, offset: int, tables: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One tree's nodes as arrays indexed from `offset`; its categorical splits append to `tables`."""
        nodes = predictor.nodes
        own = np.arange(offset, offset + len(nodes))
        leaf = nodes["is_leaf"].astype(bool)
        categorical = nodes["is_categorical"].astype(bool) & ~leaf
        missing_left = nodes["missing_go_to_left"].astype(bool)
        source = self.column_of[nodes["feature_idx"]]
        table = np.zeros(len(nodes), dtype=np.intp)
        slot = np.zeros(len(nodes), dtype=np.intp)
        for node in np.flatnonzero(categorical):
            encoded = int(nodes["feature_idx"][node])
            table[node] = len(tables)
            slot[node] = self.slot[int(source[node])]
            bitset = predictor.raw_left_cat_bitsets[nodes["bitset_idx"][node]]
            known = self.known[self.f_idx_map[encoded]]
            tables.append(_left_table(self.seen[encoded], bitset, known, bool(missing_left[node])))
        return {
            # Columns [0, width) keep NaN, which fails every `<=` and so goes right; columns
            # [width, 2 width) hold it as -inf, which goes left. (+inf would not do: a split that
            # separates missing from present values has an infinite threshold.)
            "column": np.where(leaf, 0, source + self.width * missing_left).astype(np.intp),
            "threshold": np.where(leaf | categorical, np.inf, nodes["num_threshold"]),
            "left": np.where(leaf, own, nodes["left"].astype(np.intp) + offset),
            "right": np.where(leaf, own, nodes["right"].astype(np.intp) + offset),
            "value": np.where(leaf, nodes["value"], 0.0),
            "table": table,
            "slot": slot,
        }


def _left_table(
    seen: np.ndarray, left_bitset: np.ndarray, known_bitset: np.ndarray, missing_left: bool
) -> np.ndarray:
    """Go-left per raw code 0-255 (and the missing slot): a seen code's encoded rank decides."""
    table = np.full(_MISSING + 1, missing_left)
    for encoded, raw in enumerate(seen):
        if raw.is_integer() and 0 <= raw < _MISSING:
            if (left_bitset[encoded // 32] >> (encoded % 32)) & 1:
                table[int(raw)] = True
            elif (known_bitset[encoded // 32] >> (encoded % 32)) & 1:
                table[int(raw)] = False
    return table
