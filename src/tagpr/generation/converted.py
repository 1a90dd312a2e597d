"""Engine copies of a Hugging Face model (CTranslate2, OpenVINO): where they live and when they are made again.

A hub id or the embedded model is converted once into ``$TAGPR_CACHE/<engine>/<key>``; a local directory's key
covers its weights files' path, size and mtime, so a retrained checkpoint is converted again.  The conversion
is serialised by a file lock and renamed into place only when complete.  Local checkpoints (SFT, RL stages) are
converted per use into a memory-backed temporary directory instead (:func:`fast_tmp`), so evaluating many
checkpoints does not fill the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def engine_module(module: str, backend: str, package: str, check_only: bool = False) -> Any:
    """An engine's Python package: ``module`` imported (a one-line ``ValueError`` naming ``pip install
    <package>`` for ``--backend <backend>`` when it is missing), or with ``check_only`` whether it is importable."""
    import importlib
    import importlib.util

    if check_only:
        return importlib.util.find_spec(module) is not None
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ValueError(f"the {backend} backend needs the {package} package: pip install {package}") from e


def weights_key(model_dir: str, variant: str) -> str:
    """Identity of a model's weights (for a local directory: path, size and mtime of each weights file; else
    the id) and the engine's variant (e.g. its compute type)."""
    if not os.path.isdir(model_dir):
        return hashlib.sha1(f"{model_dir}|{variant}".encode()).hexdigest()[:16]
    parts = [os.path.abspath(model_dir), variant]
    for p in sorted(Path(model_dir).glob("*.safetensors")) + sorted(Path(model_dir).glob("*.bin")):
        st = p.stat()
        parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def cached_conversion(engine: str, model_dir: str, variant: str, done_file: str,
                      convert: Callable[[Path], None], label: str | None = None) -> Path:
    """``$TAGPR_CACHE/<engine>/<key>``, made once by ``convert(dest)`` (which writes the engine's files into a
    new directory ``dest``; the directory counts as complete when ``done_file`` exists in it)."""
    from tagpr.embedded import _file_lock, cache_dir

    root = cache_dir() / engine
    key = weights_key(model_dir, variant)
    dest = root / key
    if (dest / done_file).exists():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{key}.lock"):
        if (dest / done_file).exists():
            return dest
        log.info("converting %s to %s (%s) in %s (once)", model_dir, label or engine, variant, dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            convert(tmp / "m")
            (tmp / "m").rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fast_tmp(model: Any = None) -> str | None:
    """A memory-backed temporary directory for a small model's converted copy (~4 bytes a parameter in
    float32) when there is one; the default temporary directory for models over ~500M parameters."""
    if isinstance(model, str):
        size = sum(p.stat().st_size for p in Path(model).glob("*.safetensors")) if os.path.isdir(model) else 1 << 40
    else:
        size = 4 * sum(p.numel() for p in model.parameters()) if model is not None else 0
    small = size < 2 << 30
    return "/dev/shm" if small and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
