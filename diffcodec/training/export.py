"""``diffcodec export CKPT OUT_DIR``: a Lightning checkpoint → a hub-ready folder.

The folder is what :meth:`Codec.save_pretrained` writes (``config.json``, ``model.safetensors`` without
the frozen base weights, a ``README.md`` model card); ``diffcodec.load(OUT_DIR)`` opens it and
``Codec.push_to_hub`` (or ``--push-to-hub``) uploads it. The codec is rebuilt from the class and
constructor arguments :class:`~diffcodec.training.checkpoint.TrainableCheckpoint` stored in the
checkpoint; its trained weights are loaded with the key check of
:func:`~diffcodec.training.checkpoint.load_training_state`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from diffcodec.codecs.base import Codec
from diffcodec.training.checkpoint import CODEC_KEY, load_training_state
from diffcodec.training.init import read_lightning_checkpoint
from diffcodec.zoo.hub import (
    CheckpointError,
    decode_init_args,
    drop_training_args,
    resolve_codec_class,
    save_codec,
)


def codec_from_checkpoint(path: str | os.PathLike) -> Codec:
    """Rebuild the codec a ``diffcodec fit`` checkpoint was trained as, with its weights, in eval mode."""
    checkpoint = read_lightning_checkpoint(path)
    record = checkpoint.get(CODEC_KEY)
    if record is None:
        raise CheckpointError(
            f"{path} does not record a diffcodec codec (no {CODEC_KEY!r} entry): was it written by "
            "`diffcodec fit` with a Codec model?"
        )
    if record.get("unsaved_args"):
        raise CheckpointError(
            f"{path}: the codec's constructor argument(s) {record['unsaved_args']} are not JSON values, so "
            "the codec cannot be rebuilt (or saved as config.json)"
        )
    cls = resolve_codec_class(record["class"])
    init_args = drop_training_args(cls, record["init_args"], str(path))
    codec = cls(**decode_init_args(cls, init_args))
    prefix = record.get("prefix", "")  # "codec.": trained by a method's training module (``module.codec``)
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    load_training_state(codec, state, where=str(path), ignore=_training_only(codec, state))
    return codec.eval()


def _training_only(codec: Codec, state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """Top-level modules in ``state`` that ``codec`` does not have (checkpoints written while the codecs
    carried their training networks: ``discriminator``, ``guidance``, ``tokenizer``, …)."""
    own = {name for name, _ in codec.named_children()}
    return tuple(sorted({k.split(".", 1)[0] for k in state if "." in k} - own))


def codec_from_ladder(
    checkpoints: Sequence[str | os.PathLike], rates: Sequence[float] | None = None
) -> Codec:
    """One per-rate codec from single-λ training runs: rung k gets the weights of ``checkpoints[k]``.

    StableCodec, CADC and OneDC train one model per λ (StableCodec §4.1, CADC §4.1, OneDC §4.2); a
    :class:`~diffcodec.codecs.rungs.PerRateCodec` holds them as the rungs of one ladder. Each checkpoint
    must be a one-rung run of the same class and constructor arguments except ``lambdas`` / ``rates``,
    given in ascending rate order; the weights the rungs share (frozen base, ELIC, prompt) must be
    identical in all of them. ``rates`` are the nominal bpp of the rungs (default: placeholders).
    """
    from diffcodec.codecs.rungs import PerRateCodec

    if not checkpoints:
        raise ValueError("a ladder needs at least one checkpoint")
    singles = [codec_from_checkpoint(path) for path in checkpoints]
    first = singles[0]
    if not isinstance(first, PerRateCodec):
        raise TypeError(f"{type(first).__name__} is not a per-λ codec; its rungs are trained together")
    varying = {"lambdas", "rates"}
    shared_args = {k: v for k, v in first._diffcodec_init_args.items() if k not in varying}
    for path, codec in zip(checkpoints, singles):
        if type(codec) is not type(first) or codec.num_rungs != 1:
            raise CheckpointError(f"{path}: expected a one-rung {type(first).__name__} run")
        args = {k: v for k, v in codec._diffcodec_init_args.items() if k not in varying}
        if args != shared_args:
            different = sorted(k for k in set(args) | set(shared_args) if args.get(k) != shared_args.get(k))
            raise CheckpointError(f"{path}: constructor arguments {different} differ from {checkpoints[0]}")
    lambdas = [codec.lambdas[0] for codec in singles]
    ladder = type(first)(**decode_init_args(type(first), shared_args), lambdas=lambdas, rates=rates)
    kept = set(ladder._module_state())
    shared = {k: v for k, v in first._module_state().items() if k in kept and not first.is_rung_key(k)}
    result = ladder.load_state_dict(shared, strict=False)
    wrong = [k for k in result.missing_keys if not ladder.is_rung_key(k)] + list(result.unexpected_keys)
    if wrong:
        raise CheckpointError(f"the ladder does not take the shared weights of {checkpoints[0]}: {wrong[:5]}")
    for rung, (path, codec) in enumerate(zip(checkpoints, singles)):
        differs = [
            k for k, v in codec._module_state().items()
            if k in shared and not torch.equal(v, shared[k])
        ]  # fmt: skip
        if differs:
            raise CheckpointError(
                f"{path}: weights every rung shares differ from {checkpoints[0]} ({differs[:4]}); train the "
                "rungs from one stage-1 checkpoint with those modules frozen"
            )
        ladder.set_rung(rung)
        ladder.load_rung_state_dict(codec.rung_state_dict())
    ladder.set_rung(0)
    return ladder.eval()


def export_checkpoint(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    rates: Sequence[float] | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write the codec of ``checkpoint`` to ``out_dir`` with ``save_pretrained``; optionally upload it.

    ``checkpoint`` may be a list of one-λ runs, exported as one ladder (:func:`codec_from_ladder`).
    ``weights_dtype`` stores the parameters in that type (:func:`~diffcodec.zoo.hub.save_codec`); it is
    for local folders (upload such a folder with ``huggingface-cli upload``).
    """
    if weights_dtype is not None and push_to_hub:
        raise ValueError(
            "weights_dtype applies to the local folder only: export without --push-to-hub, then upload the "
            "folder with `huggingface-cli upload ORG/NAME OUT_DIR`"
        )
    if isinstance(checkpoint, (list, tuple)):
        codec = (
            codec_from_ladder(checkpoint, rates)
            if len(checkpoint) > 1
            else codec_from_checkpoint(checkpoint[0])
        )
    else:
        codec = codec_from_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if push_to_hub:
        codec.save_pretrained(
            out_dir,
            push_to_hub=True,
            repo_id=push_to_hub,
            private=private,
            model_card_kwargs={"repo_id": push_to_hub},
        )
    else:
        codec.save_pretrained(out_dir)
        if weights_dtype is not None:  # the mixin's save_pretrained has no dtype: rewrite the weights
            save_codec(codec, out_dir, weights_dtype=weights_dtype)
    return out_dir
