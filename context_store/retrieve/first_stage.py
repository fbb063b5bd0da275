"""The first stage of the two-stage dense search: the best ``pool`` rows of a projected matrix
for a batch of queries, as one ONNX Runtime call.

The stage projects each query (``queries @ projection``), scores it against every row of the
projected snapshot and keeps the top ``pool``. With numpy that was the largest cost of a
request after the model: OpenBLAS multiplies a few queries by a 100,000 x 96 matrix poorly
(one query 2.2 ms, four 15.5 ms on this machine, one thread), and ``argpartition`` adds
~0.3 ms a query, all of it holding the GIL. ONNX Runtime's MatMul and TopK run the same
pass in C++ with the GIL released. The projected rows are stored transposed, ``(dims, rows)``,
the layout both libraries read fastest.

The pass is memory-bound (float32 rows: 38 MB read per pass at 100k x 96), so the rows are
held as int8 (``int8=True``, the default): one scale for the whole matrix, each query
quantized on its own to 8 bits (its scale is a positive factor of all its scores, so it
changes no ranking, and a query's pool never depends on which queries share its batch).
``MatMulInteger`` + ``TopK`` on int32 then cost 0.85 / 1.28 / 1.94 ms for 1 / 4 / 8 queries
against 1.65 / 2.20 / 3.45 ms in float32 (100k x 96, pool 256, one thread, measured side by
side). Only which rows enter the pool is approximate: the second stage scores the pool
exactly in float32. Recall@10 against exact search on the 100k bench home: 0.986 with int8
rows against 0.987 in float32 (``bench/latency.py``'s ``recall_vs_exact``).

Which rows come back is decided by the same scores either way (the numpy fallback computes
the same integer products in floating point, exactly); only their order within the pool
differs (the second stage ranks it). Without ``onnx`` the numpy path answers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["ProjectedTopK"]

log = logging.getLogger(__name__)

_ZERO_POINT = 128  # a query's int8 value v travels as uint8 v + 128 (MLAS's fast path is uint8 x int8)


class ProjectedTopK:
    """Top-``pool`` rows by projected score for a batch of queries; built once per snapshot, thread-safe."""

    def __init__(self, projection: np.ndarray, projected_t: np.ndarray, *, int8: bool = True) -> None:
        self.projection = np.ascontiguousarray(projection, dtype=np.float32)  # (dim, dims)
        self.int8 = int8
        self.rows = int(projected_t.shape[1])
        matrix = _quantize_rows(projected_t) if int8 else np.ascontiguousarray(projected_t, dtype=np.float32)  # (dims, rows)
        self._session: Any = None
        self._matrix: np.ndarray | None = None  # the numpy path's copy
        try:
            self._session = _session(self.projection, matrix)
        except Exception as exc:  # onnx or onnxruntime missing or refusing: numpy answers the same
            log.warning("dense index first stage: ONNX Runtime unavailable (%s); using numpy", exc)
            # Integer products are exact in float32 up to 2**24: 127 * 127 * 1040 dimensions.
            exact = np.float32 if matrix.shape[0] * 127 * 127 < 2**24 else np.float64
            self._matrix = matrix.astype(exact if int8 else np.float32)

    @property
    def engine(self) -> str:
        return "onnxruntime" if self._session is not None else "numpy"

    def top(self, queries: np.ndarray, pool: int) -> np.ndarray:
        """Row indices, (queries, min(pool, rows)), unordered within each row of the result."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        pool = min(pool, self.rows)
        if pool >= self.rows:
            return np.tile(np.arange(self.rows, dtype=np.int64), (queries.shape[0], 1))
        if self.int8:
            feed = _quantize_queries(queries @ self.projection)
        else:
            feed = queries
        if self._session is not None:
            _, rows = self._session.run(None, {"queries": feed, "pool": np.array([pool], dtype=np.int64)})
            return rows
        assert self._matrix is not None
        if self.int8:
            rough = (feed.astype(self._matrix.dtype) - _ZERO_POINT) @ self._matrix
        else:
            rough = (queries @ self.projection) @ self._matrix  # (queries, rows)
        return np.argpartition(-rough, pool - 1, axis=1)[:, :pool]


def _quantize_rows(projected_t: np.ndarray) -> np.ndarray:
    """int8 rows, one scale for the matrix: the rows are unit vectors projected, so no row needs its own."""
    top = float(np.abs(projected_t).max()) if projected_t.size else 0.0
    scaled = np.asarray(projected_t, dtype=np.float32) * np.float32(127.0 / top if top > 0 else 1.0)
    return np.ascontiguousarray(np.clip(np.rint(scaled), -127, 127).astype(np.int8))


def _quantize_queries(projected: np.ndarray) -> np.ndarray:
    """Each projected query to 8 bits on its own scale, as uint8 around ``_ZERO_POINT``."""
    top = np.abs(projected).max(axis=1, keepdims=True)
    scaled = projected * (np.float32(127.0) / np.where(top > 0, top, np.float32(1.0)))
    return (np.rint(scaled) + _ZERO_POINT).astype(np.uint8)


def _session(projection: np.ndarray, matrix: np.ndarray) -> Any:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    dim, dims = projection.shape
    if matrix.dtype == np.int8:  # queries arrive projected and quantized (``_quantize_queries``)
        nodes = [helper.make_node("MatMulInteger", ["queries", "matrix", "zero_point"], ["scores"])]
        inputs = [helper.make_tensor_value_info("queries", TensorProto.UINT8, ["batch", dims])]
        initializers = [numpy_helper.from_array(np.array(_ZERO_POINT, dtype=np.uint8), "zero_point")]
        values = TensorProto.INT32
    else:
        nodes = [helper.make_node("MatMul", ["queries", "projection"], ["projected"]),
                 helper.make_node("MatMul", ["projected", "matrix"], ["scores"])]
        inputs = [helper.make_tensor_value_info("queries", TensorProto.FLOAT, ["batch", dim])]
        initializers = [numpy_helper.from_array(projection, "projection")]
        values = TensorProto.FLOAT
    graph = helper.make_graph(
        [*nodes, helper.make_node("TopK", ["scores", "pool"], ["values", "rows"], axis=1, largest=1, sorted=0)],
        "first_stage",
        [*inputs, helper.make_tensor_value_info("pool", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("values", values, ["batch", "pool"]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, ["batch", "pool"])],
        [*initializers, numpy_helper.from_array(matrix, "matrix")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    # One thread, as the query encoder: the API's workers already fill the cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
