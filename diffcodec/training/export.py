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
from pathlib import Path

from diffcodec.codecs.base import Codec
from diffcodec.training.checkpoint import CODEC_KEY, load_training_state
from diffcodec.training.init import read_lightning_checkpoint
from diffcodec.zoo.hub import CheckpointError, decode_init_args, resolve_codec_class


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
    codec = cls(**decode_init_args(cls, record["init_args"]))
    load_training_state(codec, checkpoint["state_dict"], where=str(path))
    return codec.eval()


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    push_to_hub: str | None = None,
    private: bool = False,
) -> Path:
    """Write the codec of ``checkpoint`` to ``out_dir`` with ``save_pretrained``; optionally upload it."""
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
    return out_dir
