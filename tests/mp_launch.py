"""``tagpr ARGS`` as ``accelerate launch`` runs it, observed for ``tests/test_multiprocess.py`` (not a test module).

Launched once per process (``accelerate launch ... tests/mp_launch.py train sft ...``), it runs the CLI's own
``app`` with the trainers' ``callbacks`` extended by a probe, and writes ``$MP_PROBE/rank<N>.json``:

- ``writes``: every write this process made under ``$MP_WATCH`` (files opened for writing, renames, links,
  removals, directories made or removed), seen through Python's audit hooks, as ``[event, relative path]``;
- ``trained``: per trainer output directory, a digest of the weights this process held when training ended;
- ``loaded``: per output directory, a digest of the weights this process loads from the directory afterwards.

``MP_KILL=RANK:STEP``: that process kills itself (SIGKILL) at the end of that optimizer step (of the first trainer
that reaches it): the step's collectives are done, so the other processes have finished the checkpoints before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys

RANK = int(os.environ.get("RANK", "0"))
WATCH = os.path.realpath(os.environ["MP_WATCH"]) if os.environ.get("MP_WATCH") else None
KILL = tuple(int(x) for x in os.environ["MP_KILL"].split(":")) if os.environ.get("MP_KILL") else None
WRITES: list[list[str]] = []
# audit event: (number of leading path arguments, index of its dir_fd argument or None)
_PATH_EVENTS = {"os.rename": (2, 2), "os.link": (2, 2), "os.remove": (1, 1), "os.rmdir": (1, 1), "os.mkdir": (1, 2),
                "shutil.rmtree": (1, None), "os.truncate": (1, None)}


def _watched(path: object) -> str | None:
    if WATCH is None or isinstance(path, int) or path is None:
        return None
    p = os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
    full = os.path.realpath(p)
    if full == WATCH or full.startswith(WATCH + os.sep):
        return os.path.relpath(full, WATCH)
    return None


def _audit(event: str, args: tuple) -> None:
    try:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
                (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            paths = [path] if writing else []
        elif event in _PATH_EVENTS:
            n, fd = _PATH_EVENTS[event]
            if fd is not None and len(args) > fd and args[fd] not in (None, -1):
                return  # relative to a directory descriptor: inside an rmtree, recorded as that rmtree
            paths = list(args[:n])
        else:
            return
        for p in paths:
            rel = _watched(p)
            if rel is not None:
                WRITES.append([event, rel])
    except Exception:  # noqa: BLE001 - an observer never changes the run
        pass


def _digest(model: object) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):  # type: ignore[attr-defined]
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    sys.addaudithook(_audit)
    from transformers import TrainerCallback

    import tagpr.training.rl as rl
    import tagpr.training.sft as sft

    trained: dict[str, str] = {}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if KILL == (RANK, state.global_step):
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, args, state, control, model=None, **kw):  # noqa: ANN001
            trained[os.path.realpath(args.output_dir)] = _digest(model)

    def probed(fn):  # noqa: ANN001, ANN202
        def run(recipe=None, *, callbacks=(), **kw):  # noqa: ANN001, ANN202
            return fn(recipe, callbacks=[*callbacks, Probe()], **kw)
        return run

    sft.train_sft = probed(sft.train_sft)
    rl.train_rl = probed(rl.train_rl)
    from tagpr.cli import app

    code = app(args=sys.argv[1:], prog_name="tagpr", standalone_mode=False)
    from transformers import AutoModelForCausalLM

    loaded = {d: _digest(AutoModelForCausalLM.from_pretrained(d)) for d in trained}
    probe = os.environ.get("MP_PROBE")
    if probe:
        os.makedirs(probe, exist_ok=True)
        with open(os.path.join(probe, f"rank{RANK}.json"), "w") as f:
            json.dump({"writes": WRITES, "trained": trained, "loaded": loaded}, f, indent=1)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
