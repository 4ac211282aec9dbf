"""The one training loop (HF Accelerate: DDP, mixed precision, gradient accumulation) for every task.

Run layout (``output_dir``)::

    config.yaml                  the resolved config of the run
    run_info.json                world size, effective batch, precision, ... (written by rank 0)
    train_log.jsonl              one line per optimiser step: step, lr, stage, loss terms (+ validation lines)
    logs/                        TensorBoard event files
    checkpoints/step_XXXXXX/     the model folder (apdepth: a complete pipeline) + state/ (resumable)
    checkpoints/latest           name of the newest complete checkpoint
    best/                        apdepth: the pipeline with the lowest validation AbsRel
    pipeline/ | vae/ | prior/    the final model
    weights_checksum_rank{R}.txt SHA-256 of the trained weights on each process (replicas must agree)

Checkpoints are written into a temporary folder and renamed when complete, so a killed run leaves
either a whole checkpoint or none; ``latest`` is replaced atomically after the rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from apdepth.image_io import atomic_write
from apdepth.training.config import (
    ConfigError,
    TrainConfig,
    check_size_multiple,
    check_stage_losses,
    to_yaml,
    total_steps,
)
from apdepth.training.data import StepBatches, build_dataset, sample_seed
from apdepth.training.schedule import lr_lambda, stage_index
from apdepth.training.tasks import TASK_CLASSES

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE = "state"


class TrainState:
    """Loop counters saved with accelerate's state (``register_for_checkpointing``)."""

    def __init__(self):
        self.step = 0
        self.best = None  # best validation value so far (apdepth: AbsRel)

    def state_dict(self) -> dict:
        """The counters saved with a checkpoint."""
        return {"step": self.step, "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters saved by :meth:`state_dict`."""
        self.step = int(state["step"])
        self.best = state.get("best")


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(text.encode("utf-8"))


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path:
    """``latest`` -> the checkpoint named in ``<output_dir>/checkpoints/latest``; a run folder -> its latest;
    a checkpoint folder -> itself."""
    path = Path(output_dir) / CHECKPOINTS if resume == LATEST else Path(resume)
    if (path / LATEST).is_file():
        path = path / (path / LATEST).read_text().strip()
    elif (path / CHECKPOINTS / LATEST).is_file():
        path = path / CHECKPOINTS / (path / CHECKPOINTS / LATEST).read_text().strip()
    if not (path / STATE).is_dir():
        raise ConfigError(f"--resume {resume}: no resumable checkpoint at {path} (expected a {STATE}/ folder inside)")
    return path


def weights_checksum(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names and float32 values), to compare weights across processes."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Trainer:
    """Builds the task, optimiser, schedule and data from a :class:`TrainConfig`, then :meth:`train`.

    ``resume``: a checkpoint folder, a run folder, or ``"latest"`` (in ``cfg.output_dir``).
    """

    def __init__(self, cfg: TrainConfig, resume: str | None = None):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.resume_dir = resolve_resume(resume, self.out) if resume else None
        task_cls = TASK_CLASSES[cfg.model.task]
        check_stage_losses(cfg, task_cls.loss_names)
        self.acc = Accelerator(
            mixed_precision=cfg.mixed_precision,
            log_with="tensorboard" if cfg.logging.tensorboard else None,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=task_cls.find_unused_parameters)],
        )
        acc = self.acc
        with contextlib.suppress(Exception):  # per-save progress bars would flood the training log
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        set_seed(cfg.seed)  # model initialisation; data and noise use their own seeded generators
        weight_dtype = torch.float32
        if acc.device.type != "cpu":
            weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)
        self.task = task_cls(cfg, acc.device, weight_dtype)
        model = self.task.build()
        check_size_multiple(cfg, self.task.size_multiple)
        self.params = [p for p in model.parameters() if p.requires_grad]
        o = cfg.optim
        self.total = total_steps(cfg)
        optimizer = torch.optim.Adam(self.params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
        # Not passed through accelerate.prepare: its scheduler wrapper steps once per process, while the
        # schedule here is defined per optimiser step.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(o.warmup_steps, o.decay_steps or self.total, o.final_lr_ratio)
        )
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.state = TrainState()
        acc.register_for_checkpointing(self.scheduler, self.state)
        self.effective_batch = o.micro_batch * o.grad_accum * acc.num_processes
        self.val_dataset = None
        if cfg.validation.dataset is not None and acc.is_main_process:
            self.val_dataset = build_dataset(cfg.validation.dataset, seed=cfg.seed, for_validation=True)

    # ---------------------------------------------------------------- bookkeeping

    def _log(self, record: dict) -> None:
        if not self.acc.is_main_process:
            return
        with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _print(self, msg: str) -> None:
        if self.acc.is_main_process:
            print(msg, flush=True)

    def _start_run(self) -> None:
        acc, cfg = self.acc, self.cfg
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            _write_text(self.out / "config.yaml", to_yaml(cfg))
            for stale in (self.out / CHECKPOINTS).glob(".tmp-*") if (self.out / CHECKPOINTS).is_dir() else []:
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
            log = self.out / "train_log.jsonl"
            if log.is_file():
                # Steps after the resumed checkpoint were lost with the killed run: drop their lines.
                keep = [
                    ln for ln in log.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= self.state.step
                ]
                _write_text(log, "".join(ln + "\n" for ln in keep))
            info = {
                "task": cfg.model.task,
                "num_processes": acc.num_processes,
                "world_size": acc.num_processes,
                "distributed_type": str(acc.distributed_type),
                "device": str(acc.device),
                "mixed_precision": cfg.mixed_precision,
                "micro_batch": cfg.optim.micro_batch,
                "grad_accum": cfg.optim.grad_accum,
                "effective_batch": self.effective_batch,
                "total_steps": self.total,
                "start_step": self.state.step,
                "resumed_from": str(self.resume_dir) if self.resume_dir else None,
                "trainable_parameters": sum(p.numel() for p in self.params),
                "torch": torch.__version__,
            }
            _write_text(self.out / "run_info.json", json.dumps(info, indent=2) + "\n")
        if cfg.logging.tensorboard:
            acc.init_trackers("tb")
        self._print(
            f"[train] task={cfg.model.task} processes={acc.num_processes} micro_batch={cfg.optim.micro_batch} "
            f"grad_accum={cfg.optim.grad_accum} effective_batch={self.effective_batch} steps={self.state.step}->{self.total} "
            f"precision={cfg.mixed_precision} device={acc.device}"
        )

    # ---------------------------------------------------------------- checkpoints

    def _export_atomic(self, final: Path) -> None:
        """Main process: write the task's model folder to ``final`` via a temporary sibling."""
        tmp = final.parent / f".tmp-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.task.export(tmp)
        old = final.parent / f".old-{final.name}"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_NNNNNN`` atomically (model, optimiser, scheduler, RNG, counters) and prune old ones."""
        acc, step = self.acc, self.state.step
        root = self.out / CHECKPOINTS
        name = f"step_{step:06d}"
        tmp, final = root / f".tmp-{name}", root / name
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp / STATE))  # every process writes its RNG state; rank 0 the rest
        if acc.is_main_process:
            self.task.export(tmp)
            meta = {
                "step": step,
                "data_position": step * self.cfg.optim.grad_accum,
                "world_size": acc.num_processes,
                "micro_batch": self.cfg.optim.micro_batch,
                "grad_accum": self.cfg.optim.grad_accum,
                "seed": self.cfg.seed,
                "best": self.state.best,
            }
            _write_text(tmp / "trainer_state.json", json.dumps(meta, indent=2) + "\n")
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _write_text(root / LATEST, name + "\n")
            done = sorted(p for p in root.glob("step_*") if p.is_dir())
            for old in done[: max(0, len(done) - self.cfg.checkpointing.keep_last)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Resume from a checkpoint folder; warns when the process count or batch sizes differ from the saved run's."""
        meta_path = path / "trainer_state.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            now = (self.acc.num_processes, self.cfg.optim.micro_batch, self.cfg.optim.grad_accum)
            then = (meta.get("world_size"), meta.get("micro_batch"), meta.get("grad_accum"))
            if now != then:
                self._print(
                    f"[train] warning: resuming with (processes, micro_batch, grad_accum)={now} but the "
                    f"checkpoint was written with {then}: the data order will differ from an uninterrupted run"
                )
        self.acc.load_state(str(path / STATE))
        self._print(f"[train] resumed from {path} at step {self.state.step}")

    # ---------------------------------------------------------------- validation

    def validate(self) -> None:
        """Run the task's validation on the main process, log its metrics and image, and update ``best/``."""
        acc = self.acc
        if acc.is_main_process and self.val_dataset is not None:
            t0 = time.perf_counter()
            metrics, image = self.task.validate(self.val_dataset, acc)
            step = self.state.step
            self._log({"step": step, "validation": metrics, "seconds": round(time.perf_counter() - t0, 3)})
            self._print(f"[val] step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            if self.cfg.logging.tensorboard:
                acc.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
                if image is not None:
                    writer = acc.get_tracker("tensorboard", unwrap=True)
                    writer.add_image("val/rgb|pred|gt", image, step, dataformats="HWC")
            key = self.task.best_metric
            if key is not None and key in metrics:
                value = metrics[key]
                best = self.state.best
                if best is None or (value < best if self.task.lower_is_better else value > best):
                    self.state.best = float(value)
                    self._export_atomic(self.out / "best")
                    _write_text(self.out / "best" / "best.json", json.dumps({"step": step, key: value}) + "\n")
        # Every process must hold the same ``best`` so that the next checkpoint's state agrees.
        best = [self.state.best]
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(best, from_process=0)
        self.state.best = best[0]
        acc.wait_for_everyone()

    # ---------------------------------------------------------------- loop

    def _loader(self):
        from torch.utils.data import DataLoader

        cfg, acc = self.cfg, self.acc
        batches = StepBatches(
            cfg.data.datasets,
            cfg.optim.micro_batch,
            cfg.seed,
            acc.process_index,
            acc.num_processes,
            hflip=cfg.data.hflip,
            normalize_depth=self.task.normalize_depth,
            photometric=cfg.data.photometric,
        )
        accum = cfg.optim.grad_accum
        start, stop = self.state.step * accum, self.total * accum
        return DataLoader(
            batches,
            batch_size=None,
            sampler=range(start, stop),
            num_workers=cfg.data.num_workers,
            persistent_workers=False,
            pin_memory=acc.device.type == "cuda",
        )

    def train(self) -> dict:
        """Run to ``total_steps``; returns the last logged record."""
        acc, cfg = self.acc, self.cfg
        if self.resume_dir is not None:
            self.load_checkpoint(self.resume_dir)
        self._start_run()
        accum = cfg.optim.grad_accum
        batches = iter(self._loader())
        record: dict = {}
        t_last = time.perf_counter()
        if cfg.validation.at_start and self.state.step == 0 and cfg.validation.dataset is not None:
            self.validate()
        while self.state.step < self.total:
            step = self.state.step
            stage_i = stage_index(cfg.stages, step)
            weights = {k: float(v) for k, v in cfg.stages[stage_i].losses.items()}
            sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=acc.device))
            for micro in range(accum):
                batch = next(batches)
                sync = micro == accum - 1
                with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                    with acc.autocast():
                        seed = sample_seed(cfg.seed, step, micro, acc.process_index, 0x7015E)
                        terms = self.task.losses(self.model, batch, weights, seed)
                        loss = sum(weights[n] * terms[n] for n in weights)
                    acc.backward(loss / accum)
                for n, v in terms.items():
                    sums[n] += v.detach().float() / accum
                sums["loss"] += loss.detach().float() / accum
            grad_norm = None
            if cfg.optim.max_grad_norm:
                grad_norm = acc.clip_grad_norm_(self.params, cfg.optim.max_grad_norm)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step = step + 1

            names = sorted(sums)
            values = acc.reduce(torch.stack([sums[n] for n in names]), reduction="mean")
            record = {
                "step": self.state.step,
                "stage": stage_i,
                "lr": lr,
                **{n: float(v) for n, v in zip(names, values)},
            }
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            self._log(record)
            if cfg.logging.tensorboard:
                acc.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=self.state.step)
            if self.state.step % max(1, cfg.logging.every) == 0 or self.state.step == self.total:
                now = time.perf_counter()
                terms_txt = " ".join(f"{n}={record[n]:.4f}" for n in names)
                self._print(
                    f"[train] step {self.state.step}/{self.total} stage {stage_i} lr {lr:.3g} {terms_txt} "
                    f"({(now - t_last) / max(1, cfg.logging.every):.2f}s/step)"
                )
                t_last = now
            if cfg.validation.every and self.state.step % cfg.validation.every == 0:
                self.validate()
            if (
                cfg.checkpointing.every and self.state.step % cfg.checkpointing.every == 0
            ) or self.state.step == self.total:
                self.save_checkpoint()
            # The model as it stands at the end of every stage but the last is kept (never pruned): the
            # ablation compares "after stage 1" with the final model.
            ends = [int(st.until) for st in cfg.stages[:-1]]
            if self.state.step in ends and acc.is_main_process:
                self._export_atomic(self.out / f"{self.task.export_name}_stage{ends.index(self.state.step) + 1}")

        acc.wait_for_everyone()
        unwrapped = acc.unwrap_model(self.model)
        _write_text(self.out / f"weights_checksum_rank{acc.process_index}.txt", weights_checksum(unwrapped) + "\n")
        if acc.is_main_process:
            self._export_atomic(self.out / self.task.export_name)
            self._print(f"[train] done: {self.out / self.task.export_name}")
        acc.wait_for_everyone()
        acc.end_training()
        return record


def train(cfg: TrainConfig, resume: str | None = None) -> dict:
    """Build a :class:`Trainer` and run it; returns the last step's logged record."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.train()
    finally:
        sys.stdout.flush()
