"""One training run's folder and bookkeeping, shared by every trainer (``talker train dae``,
``s2l``, ``distill``, ``refiner``).

A run folder holds ``train_config.json`` (what defines the run), ``train_log.jsonl`` (one line per
logged step), ``checkpoints/step_N`` (the newest three: weights as safetensors, optimizer and RNG
states, EMA weights), ``figures.json`` (the final figures) and what the trainer exports.

:class:`TrainingRun` opens a run (a new one, or ``resume``: the newest complete checkpoint and
the configuration saved with it), owns the accelerator (devices, processes, mixed precision),
draws each step's random numbers from (seed, step, process) so that a resumed run sees exactly
the batches it would have seen, and does what every step ends with: backward, gradient
clipping, optimizer and EMA steps, the loss average, the progress bar, the log line and the
checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TalkerError

CHECKPOINTS = "checkpoints"
#: the fields a resumed run takes from the command line; every other one from the saved config
RUN_LENGTH_FIELDS = ("max_steps", "checkpoint_every", "sample_every", "eval_every")
LOG_EVERY = 50  # steps between the loss lines of train_log.jsonl (and the last step)


class TrainingRun:
    """A training run in ``run_dir`` with config ``cfg`` (a dataclass with ``seed``,
    ``mixed_precision``, ``max_steps`` and ``checkpoint_every``). ``run.cfg`` is the config in
    force (the saved one when resumed), ``run.accelerator`` the accelerator, ``run.step`` the
    steps done.

    The trainer's loop::

        model, optimizer = run.start(model, optimizer, ema)
        for g in run.steps():            # a torch.Generator seeded by (seed, step, process)
            loss = ...
            run.update(loss, model, optimizer)
            if run.due(cfg.eval_every): run.note(**scores)
            run.end_step()               # the log line and, when due, the checkpoint
        return run.finish(figures, export)
    """

    def __init__(self, run_dir: str | Path, cfg, resume: bool = False, desc: str = "train", progress: bool = True):
        from accelerate.utils import set_seed

        self.path = Path(run_dir)
        self.checkpoint = latest_checkpoint(self.path) if resume else None
        self.cfg = resumed_config(self.path, cfg) if self.checkpoint is not None else cfg
        self.accelerator = make_accelerator(self.cfg.mixed_precision)
        if resume and self.checkpoint is None:
            self.accelerator.print(f"no checkpoint in {self.path / CHECKPOINTS}; starting from step 0")
        set_seed(self.cfg.seed)
        self.desc, self.progress = desc, progress
        self.step, self.steps_timed, self.train_time = 0, 0, 0.0
        self.loss, self.loss_avg = None, None
        self.ema, self.bar, self._entry, self._tic = None, None, {}, 0.0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def start(self, model, optimizer, ema=None, *others):
        """Prepare ``model`` and ``optimizer`` (and ``others``: further models and optimizers the
        run trains and checkpoints, e.g. a discriminator and its optimizer) for the accelerator,
        then restore the checkpoint (weights, optimizers, RNG and ``ema``) of a resumed run or
        save a new run's config. Returns the prepared objects in the order given."""
        prepared = self.accelerator.prepare(model, optimizer, *others)
        self.ema = ema
        if ema is not None:
            ema.to(self.device)
        if self.checkpoint is not None:
            self.step = load_checkpoint(self.accelerator, self.checkpoint, ema)
        else:
            self.save_config()
        return prepared

    def save_config(self) -> None:
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "train_config.json").write_text(json.dumps(dataclasses.asdict(self.cfg), indent=1) + "\n")

    def steps(self) -> Iterator[torch.Generator]:
        """The steps left, each with its own generator (seeded by seed, step and process)."""
        self.bar = _progress_bar(self.cfg.max_steps, self.step, self.desc, self.progress and self.is_main)
        while self.step < self.cfg.max_steps:
            self._tic = time.perf_counter()
            yield torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step * 101 + self.accelerator.process_index)
        self.bar.close()

    def rng(self) -> np.random.Generator:
        """This step's numpy generator (seed, step, process), for trainers that draw with numpy."""
        return np.random.default_rng([self.cfg.seed, self.step, self.accelerator.process_index])

    def update(self, loss: torch.Tensor, model, optimizer, max_grad_norm: float = 1.0) -> float:
        """Backward, clip, optimizer step (and EMA step), then the bookkeeping: the step count,
        the time spent training, the loss averaged over processes and its running mean."""
        accelerator = self.accelerator
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.step(accelerator.unwrap_model(model).parameters())
        self.step += 1
        self.steps_timed += 1
        self.train_time += time.perf_counter() - self._tic  # training alone: no evaluation or checkpoints
        self.loss = accelerator.gather(loss.detach()[None]).mean().item()
        self.loss_avg = self.loss if self.loss_avg is None else 0.98 * self.loss_avg + 0.02 * self.loss
        self.bar.update()
        self.bar.set_postfix(loss=f"{self.loss_avg:.4f}")
        if self.due(LOG_EVERY):
            self.note(loss=self.loss, loss_avg=self.loss_avg)
        return self.loss

    def due(self, every: int) -> bool:
        """Whether this step is one of every ``every`` (or the last)."""
        return self.step % every == 0 or self.step == self.cfg.max_steps

    def note(self, **fields: Any) -> None:
        """Add ``fields`` to this step's line of train_log.jsonl."""
        self._entry.update(fields)

    def end_step(self) -> None:
        """Write this step's log line (main process) and, when due, the checkpoint."""
        if self._entry and self.is_main:
            with open(self.path / "train_log.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, **self._entry}) + "\n")
        self._entry = {}
        if self.due(self.cfg.checkpoint_every):
            save_checkpoint(self.accelerator, self.path, self.step, self.ema)

    def figures(self, **extra: Any) -> dict:
        """The figures every trainer reports, and ``extra``; a run resumed at its end (nothing left
        to train) reports the loss it last logged."""
        rate = self.steps_timed / self.train_time if self.train_time else math.nan
        loss_avg = self.loss_avg if self.loss_avg is not None else self.last_logged("loss_avg")
        return {"steps": self.step, "loss_avg": loss_avg, "steps_per_s": rate, **extra}

    def finish(self, figures: dict, export=None) -> dict:
        """End the run: ``export()`` on the main process (the trained weights into the run
        folder), figures.json written (a resumed run with nothing left to train keeps the one it
        has), the accelerator's end; returns the figures in force."""
        self.accelerator.wait_for_everyone()
        if self.is_main:
            if export is not None:
                export()
            path = self.path / "figures.json"
            if self.steps_timed or not path.is_file():
                path.write_text(json.dumps(figures, indent=1) + "\n")
            else:
                figures = json.loads(path.read_text())
        self.accelerator.end_training()
        return figures

    def last_logged(self, key: str):
        """The newest value of ``key`` in train_log.jsonl (e.g. the loss of a run resumed at its end)."""
        log = self.path / "train_log.jsonl"
        values = [e[key] for e in map(json.loads, log.read_text().splitlines()) if key in e] if log.is_file() else []
        return values[-1] if values else None


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled)


def make_accelerator(mixed_precision: str):
    """An Accelerator; with no GPU it is told so, which is what turns a torchrun/accelerate
    launch of several CPU processes into gloo data parallelism (MULTI_CPU)."""
    from accelerate import Accelerator

    no_gpu = not torch.cuda.is_available() and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    return Accelerator(mixed_precision=_mixed_precision(mixed_precision), cpu=no_gpu)


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint (one a killed run was still writing is never picked)."""
    ckpts = sorted((p for p in (run / CHECKPOINTS).glob("step_*") if (p / "trainer_state.json").is_file()),
                   key=lambda p: int(p.name.split("_")[1]))
    return ckpts[-1] if ckpts else None


def resumed_config(run: Path, cfg, print_fn=print):
    """The configuration a resumed run continues with: the one saved in RUN/train_config.json
    (architecture, learning rate, loss weighting, batch, seed), with only the run-length fields
    (``RUN_LENGTH_FIELDS``) taken from ``cfg``. Settings given now that differ from the saved
    ones are named, since they are not applied."""
    path = run / "train_config.json"
    if not path.is_file():
        raise TalkerError(f"{run} has checkpoints but no train_config.json; cannot resume it")
    saved = json.loads(path.read_text())
    values = {}
    for f in dataclasses.fields(cfg):
        now = getattr(cfg, f.name)
        if f.name in RUN_LENGTH_FIELDS or f.name not in saved:
            values[f.name] = now
            continue
        value = saved[f.name]
        if isinstance(now, tuple) and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    differ = [f"{k} {values[k]!r} (not {getattr(cfg, k)!r})" for k in values  # (None: not given)
              if k != "extra" and getattr(cfg, k) is not None and values[k] != getattr(cfg, k)]
    if differ:
        print_fn(f"resuming with the run's saved settings: {', '.join(differ)}")
    return type(cfg)(**values)


def prune_checkpoints(run: Path, keep: int = 3) -> None:
    """Delete all but the newest ``keep`` checkpoints of a run."""
    for old in sorted((run / CHECKPOINTS).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(accelerator, run: Path, step: int, ema=None) -> None:
    """RUN/checkpoints/step_N: ``accelerator.save_state`` (weights as safetensors, optimizer and RNG
    states), the EMA weights as safetensors (when ``ema`` is given) and the step; older checkpoints
    beyond the newest three are deleted. It is written as ``.partial-step_N`` and renamed once
    complete, so a run killed while saving resumes from the checkpoint before."""
    from safetensors.torch import save_file

    folder = run / CHECKPOINTS
    out = folder / f"step_{step:07d}"
    staging = folder / f".partial-step_{step:07d}"
    if accelerator.is_main_process:
        for stale in folder.glob(".partial-step_*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    if accelerator.is_main_process:
        if ema is not None:
            state = ema.state_dict()
            shadow = state.pop("shadow_params")
            save_file({f"{i:05d}": p.detach().contiguous().cpu() for i, p in enumerate(shadow)},
                      staging / "ema.safetensors")
            (staging / "ema.json").write_text(json.dumps(state))
        (staging / "trainer_state.json").write_text(json.dumps({"step": step}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        prune_checkpoints(run)


def moving_average(parameters, decay: float):
    """diffusers' ``EMAModel`` of ``parameters`` at ``decay``, warmed up (power 3/4: the average
    follows the first steps closely), or None at ``decay`` 0: the weights as trained."""
    from diffusers.training_utils import EMAModel

    return EMAModel(parameters, decay=decay, use_ema_warmup=True, power=3 / 4) if decay else None


@contextmanager
def ema_weights(ema, parameters):
    """Within the block the parameters hold ``ema``'s moving average (diffusers' ``EMAModel``),
    after it their trained values again; with ``ema`` None they stay as they are."""
    if ema is None:
        yield
        return
    parameters = list(parameters)
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


def load_checkpoint(accelerator, ckpt: Path, ema=None) -> int:
    """Restore what :func:`save_checkpoint` wrote (weights-only loads); returns its step."""
    from safetensors.torch import load_file

    accelerator.load_state(str(ckpt))
    if ema is not None:
        if not (ckpt / "ema.safetensors").is_file():
            raise TalkerError(f"{ckpt} holds no moving average of the weights, which this run keeps; resume it "
                              "with the moving average off (for `train gate`: --ema-decay 0) or start a new run")
        ema.load_state_dict({**json.loads((ckpt / "ema.json").read_text()),
                             "shadow_params": list(load_file(ckpt / "ema.safetensors").values())})
    step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    if accelerator.is_main_process:
        _forget_log_after(ckpt.parent.parent / "train_log.jsonl", step)
    accelerator.print(f"resumed from {ckpt} at step {step}")
    return step


def _forget_log_after(log: Path, step: int) -> None:
    """Drop the log entries of steps after ``step`` (and a last line cut short): a killed run
    logged steps its resumed run trains again, and the log keeps one entry per step."""
    if not log.is_file():
        return

    def keep(line: str) -> bool:
        try:
            return json.loads(line).get("step", 0) <= step
        except json.JSONDecodeError:  # a line cut short by the kill
            return False

    lines = log.read_text().splitlines()
    kept = [line for line in lines if keep(line)]
    if len(kept) != len(lines):
        tmp = log.with_name(log.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(log)


def to_model(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images → the models' [-1, 1] floats."""
    return x_uint8.float() / 127.5 - 1.0


def save_grid(path: Path, rows: list[torch.Tensor]) -> None:
    """Rows of (B, 3, R, R) images in [-1, 1] → one PNG."""
    from PIL import Image

    grid = torch.cat([torch.cat(list(r.clamp(-1, 1)), dim=2) for r in rows], dim=1)
    img = ((grid + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
