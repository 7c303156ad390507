"""Training plumbing: schedules, manual gradient accumulation, exact resume, checkpoints without frozen base
weights, stage initialisation and freezing, the LightningCLI entry point."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from diffcodec.codecs.base import BaseModelRef, Codec
from diffcodec.data import ImageFolderDataModule
from diffcodec.nn.base_weights import record_base_weights
from diffcodec.training import (
    Cosine,
    GradientAccumulation,
    HyperparameterSchedule,
    InitFrom,
    LearningRateSchedule,
    LinearWarmup,
    Piecewise,
    TrainableCheckpoint,
    freeze_modules,
)
from diffcodec.training.cli import run_argv
from diffcodec.training.init import read_lightning_checkpoint
from diffcodec.training.module import CodecTraining
from diffcodec.zoo.hub import CheckpointError


def digest(batch: torch.Tensor) -> str:
    return hashlib.sha1(batch.detach().cpu().numpy().tobytes()).hexdigest()[:12]


class TinyModule(L.LightningModule):
    """A small real model trained with manual optimisation through GradientAccumulation."""

    def __init__(
        self, accumulate_grad_batches: int = 1, lr: float = 0.05, warmup_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 3, padding=1))
        self.accumulate_grad_batches = accumulate_grad_batches
        self.accumulation = GradientAccumulation(accumulate_grad_batches)
        self.warmup_weight = warmup_weight
        self.seen: list[tuple[int, str, float, float]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = self.warmup_weight * F.mse_loss(self.net(batch), batch)
        self.accumulation.backward(self, loss, batch_idx)
        self.accumulation.step(self, optimizer, batch_idx, clip_norm=10.0)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.seen.append((self.trainer.current_epoch, digest(batch), lr, self.warmup_weight))
        self.log("train/loss", loss.detach())
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/mse", F.mse_loss(self.net(batch), batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


# --------------------------------------------------------------------------------------------- schedules
def test_schedules() -> None:
    stablecodec = Piecewise([5000, 10000, 15000], [5e-5, 2e-5, 1e-5, 1e-6])  # spec §8.3
    values = [stablecodec(s) for s in (0, 4999, 5000, 12000, 15000, 10**6)]
    assert values == [5e-5, 5e-5, 2e-5, 1e-5, 1e-6, 1e-6]
    warm = LinearWarmup(1.0, steps=10, start=0.5, delay=5)
    assert [warm(s) for s in (0, 5, 10, 15, 100)] == [0.5, 0.5, 0.75, 1.0, 1.0]
    cosine = Cosine(1.0, steps=110, final=0.1, warmup=10)
    assert cosine(4) == pytest.approx(0.5) and cosine(10) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.55) and cosine(500) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Piecewise([10], [1.0])
    with pytest.raises(ValueError):
        Piecewise([10, 5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        GradientAccumulation(0)


# ------------------------------------------------------------------------------------------ accumulation
def test_manual_accumulation_equals_the_large_batch(tmp_path: Path) -> None:
    data = torch.rand(8, 3, 8, 8)
    torch.manual_seed(0)
    accumulated = TinyModule(accumulate_grad_batches=2)
    large = TinyModule(accumulate_grad_batches=1)
    large.load_state_dict(accumulated.state_dict())
    trainer(tmp_path, max_epochs=1).fit(accumulated, DataLoader(data, batch_size=2))
    run = trainer(tmp_path, max_epochs=1)
    run.fit(large, DataLoader(data, batch_size=4))
    for a, b in zip(accumulated.parameters(), large.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert run.global_step == 2 and len(accumulated.seen) == 4
    # an odd number of batches: the last partial group still steps at the end of the epoch
    odd = TinyModule(accumulate_grad_batches=2)
    run = trainer(tmp_path, max_epochs=1)
    run.fit(odd, DataLoader(data[:6], batch_size=2))
    assert run.global_step == 2


# -------------------------------------------------------------------------------------------------- resume
def _fit(
    tmp_path: Path,
    folder: Path,
    max_steps: int,
    ckpt_path: str | None = None,
    workers: int = 0,
    limit: int | None = None,
) -> TinyModule:
    torch.manual_seed(0)
    module = TinyModule()
    data = ImageFolderDataModule(
        folder, crops=[16, {"size": 32, "batch_fraction": 0.5}], batch_size=2, num_workers=workers, seed=3
    )
    callbacks = [
        ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}"),
        LearningRateSchedule(Piecewise([4, 7], [0.1, 0.01, 0.001])),
        HyperparameterSchedule("warmup_weight", LinearWarmup(1.0, steps=8)),
        TrainableCheckpoint(),
    ]
    run = trainer(tmp_path, max_steps=max_steps, callbacks=callbacks, limit_train_batches=limit)
    run.fit(module, data, ckpt_path=ckpt_path)
    return module


def test_resume_continues_with_the_exact_batches_and_schedules(tmp_path: Path, small_folder: Path) -> None:
    full = _fit(tmp_path / "full", small_folder, max_steps=10).seen  # 6 batches per epoch: crosses an epoch
    assert [epoch for epoch, *_ in full] == [0] * 6 + [1] * 4
    assert len({d for _, d, *_ in full}) == 10
    assert [lr for _, _, lr, _ in full][3:5] == [0.1, 0.01]
    for step in (4, 6):  # mid-epoch, and at the end of the first epoch
        ckpt = tmp_path / "full" / "ckpt" / f"step={step}.ckpt"
        resumed = _fit(tmp_path / f"resumed{step}", small_folder, max_steps=10, ckpt_path=str(ckpt)).seen
        assert resumed == full[step:]
    with_worker = _fit(
        tmp_path / "worker",
        small_folder,
        max_steps=10,
        workers=1,
        ckpt_path=str(tmp_path / "full" / "ckpt" / "step=4.ckpt"),
    ).seen
    assert with_worker == full[4:]  # the same with a DataLoader worker process
    final = _fit(tmp_path / "again", small_folder, max_steps=10).seen
    assert final == full  # and the whole run is reproducible
    # epochs shortened by limit_train_batches: resuming at the end of one starts the next
    short = _fit(tmp_path / "short", small_folder, max_steps=8, limit=4).seen
    assert [epoch for epoch, *_ in short] == [0] * 4 + [1] * 4
    ckpt = tmp_path / "short" / "ckpt" / "step=4.ckpt"
    resumed = _fit(tmp_path / "short2", small_folder, max_steps=8, limit=4, ckpt_path=str(ckpt)).seen
    assert resumed == short[4:]


# ----------------------------------------------------------------------------------- checkpoint contents
class BaseBuiltCodec(Codec):
    """A codec 'built on a base model': ``base.*`` is frozen and re-loaded from its base model."""

    method = "test-base-built"

    def __init__(self, width: int = 4, with_base_ref: bool = True) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)  # stands in for the pretrained weights
        self.base = nn.Conv2d(3, width, 1)
        with torch.no_grad():
            for p in self.base.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        record_base_weights(self.base)  # as if loaded from "test/base"
        self.base.requires_grad_(False)
        self.adapter = nn.Conv2d(width, 3, 1)
        self.with_base_ref = with_base_ref

    @property
    def rates(self) -> tuple[float, ...]:
        return (0.1,)

    def base_model_ref(self) -> BaseModelRef | None:
        return BaseModelRef("test/base", "0" * 40) if self.with_base_ref else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.adapter(self.base(x))


class BaseBuiltTraining(CodecTraining):
    """Its training module (the shape of every method's): the codec under ``codec``."""

    stages = (1,)

    def __init__(self, width: int = 4, with_base_ref: bool = True) -> None:
        super().__init__(BaseBuiltCodec(width, with_base_ref), learning_rate=0.1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.optimize(F.mse_loss(self.codec(batch), batch), batch_idx)  # automatic optimisation

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_checkpoints_leave_out_frozen_base_weights(tmp_path: Path) -> None:
    data = DataLoader(torch.rand(4, 3, 8, 8), batch_size=2)
    module = BaseBuiltTraining()
    saver = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer(tmp_path, max_steps=2, callbacks=[saver, TrainableCheckpoint()]).fit(module, data)
    checkpoint = read_lightning_checkpoint(tmp_path / "last.ckpt")
    assert sorted(checkpoint["state_dict"]) == ["codec.adapter.bias", "codec.adapter.weight"]
    assert checkpoint["diffcodec"]["class"].endswith(":BaseBuiltCodec")
    assert checkpoint["diffcodec"]["init_args"] == {"width": 4, "with_base_ref": True}
    resumed = BaseBuiltTraining()
    run = trainer(tmp_path, max_steps=3, callbacks=[TrainableCheckpoint()])
    run.fit(resumed, data, ckpt_path=tmp_path / "last.ckpt")
    assert run.global_step == 3
    # a codec without a base-model reference keeps everything
    plain = BaseBuiltTraining(with_base_ref=False)
    trainer(
        tmp_path / "plain",
        max_steps=1,
        callbacks=[ModelCheckpoint(dirpath=tmp_path / "plain"), TrainableCheckpoint()],
    ).fit(plain, data)
    (saved,) = (tmp_path / "plain").glob("*.ckpt")
    assert "codec.base.weight" in read_lightning_checkpoint(saved)["state_dict"]
    # anything else missing is refused on resume
    del checkpoint["state_dict"]["codec.adapter.bias"]
    torch.save(checkpoint, tmp_path / "broken.ckpt")
    with pytest.raises(CheckpointError, match=r"1 missing key.*adapter\.bias"):
        trainer(tmp_path, max_steps=4, callbacks=[TrainableCheckpoint()]).fit(
            BaseBuiltTraining(), data, ckpt_path=tmp_path / "broken.ckpt"
        )


# ----------------------------------------------------------------------------------------- init_from
class StageTwo(TinyModule):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 3, 1)


def test_init_from_loads_stage_one_and_freezes(tmp_path: Path) -> None:
    data = DataLoader(torch.rand(4, 3, 8, 8), batch_size=2)
    stage1 = TinyModule()
    trainer(
        tmp_path,
        max_steps=2,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, filename="s1"), TrainableCheckpoint()],
    ).fit(stage1, data)
    stage2 = StageTwo()
    init = InitFrom(str(tmp_path / "s1.ckpt"), freeze=["net.0"], new_modules=["head"])
    trainer(tmp_path, max_steps=2, callbacks=[init]).fit(stage2, data)
    torch.testing.assert_close(stage2.net[0].weight, stage1.net[0].weight)  # loaded, then frozen
    assert not stage2.net[0].weight.requires_grad and stage2.net[2].weight.requires_grad
    assert not torch.equal(stage2.net[2].weight, stage1.net[2].weight)  # still trained
    with pytest.raises(CheckpointError, match=r"missing key.*head"):
        trainer(tmp_path, max_steps=1, callbacks=[InitFrom(str(tmp_path / "s1.ckpt"))]).fit(StageTwo(), data)
    with pytest.raises(ValueError, match="no parameters under 'nett'"):
        freeze_modules(StageTwo(), ["nett"])


# -------------------------------------------------------------------------------------------------- CLI
def test_cli_fit_validate_and_resume(tmp_path: Path, small_folder: Path) -> None:
    recipe = {
        "seed_everything": 0,
        "model": {"class_path": "test_training.TinyModule", "init_args": {"accumulate_grad_batches": 2}},
        "data": {
            "class_path": "diffcodec.data.ImageFolderDataModule",
            "init_args": {
                "train_dir": str(small_folder),
                "val_dir": str(small_folder),
                "crops": 16,
                "batch_size": 2,
                "num_workers": 0,
                "val_max_images": 2,
                "val_pad_multiple": 16,
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 2,
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
            "val_check_interval": 4,
            "num_sanity_val_steps": 0,
            "logger": [
                {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": str(tmp_path)},
                }
            ],
        },
        "init_from": {"freeze": ["net.0"]},
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert run_argv("fit", ["-c", str(config)]) == 0
    (checkpoint,) = tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt")
    assert (tmp_path / "lightning_logs/version_0/config.yaml").is_file()
    state = read_lightning_checkpoint(checkpoint)
    assert state["global_step"] == 2  # 4 batches with accumulation 2
    resume = ["-c", str(config), "--trainer.max_steps", "3", "--ckpt_path", str(checkpoint)]
    assert run_argv("fit", resume) == 0
    assert run_argv("validate", ["-c", str(config), "--ckpt_path", str(checkpoint)]) == 0
    metrics = (tmp_path / "lightning_logs/version_2/metrics.csv").read_text()
    assert "val/mse" in metrics
    with pytest.raises(ValueError, match="unknown training command"):
        run_argv("train", [])


# ------------------------------------------------------------------- schedules count optimiser steps
class LearningRates(L.Callback):
    """Records the main optimiser's learning rate at every micro-batch."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def _reference_module() -> CodecTraining:
    from diffcodec.codecs.reference import LatentHyperprior
    from diffcodec.codecs.reference.training import LatentHyperpriorTraining

    codec = LatentHyperprior(channels=8, latent_channels=8, hyper_channels=4)
    return LatentHyperpriorTraining(codec, accumulate_grad_batches=4)


def _oscar_stage1_module() -> CodecTraining:
    from diffcodec.codecs.oscar import OSCAR
    from diffcodec.codecs.oscar.training import OSCARTraining

    codec = OSCAR(hyper_channels=8, hyper_latent_channels=8, codebook_dim=4, embedding_length=4)
    return OSCARTraining(codec, stage=1, accumulate_grad_batches=4)


@pytest.mark.parametrize(
    ("build", "size", "automatic"),
    [(_reference_module, 128, False), (_oscar_stage1_module, 64, True)],
    ids=["reference-manual", "oscar-stage1-automatic"],
)
def test_lr_schedule_of_a_real_codec_counts_optimiser_steps_under_accumulation(
    tmp_path: Path, build, size: int, automatic: bool
) -> None:  # type: ignore[no-untyped-def]
    """A small real codec trained with 4 micro-batches per step, under manual optimisation (two optimisers)
    and automatic optimisation (one): the LR changes at optimiser steps 2 and 3 (micro-batches 8 and 12),
    not at micro-batches 2 and 3 (the bug when the step counted batches)."""
    torch.manual_seed(0)
    module = build()
    assert module.accumulate_grad_batches == 4 and module.automatic_optimization is automatic
    rates = LearningRates()
    schedule = LearningRateSchedule(Piecewise([2, 3], [1e-3, 1e-4, 1e-5]))
    run = trainer(tmp_path, max_epochs=1, callbacks=[schedule, rates])
    run.fit(module, DataLoader(torch.rand(16, 3, size, size), batch_size=1))
    assert rates.seen == [1e-3] * 8 + [1e-4] * 4 + [1e-5] * 4
    main = run.optimizers[0]
    assert {int(state["step"]) for state in main.state.values()} == {4}  # 16 micro-batches, 4 steps
