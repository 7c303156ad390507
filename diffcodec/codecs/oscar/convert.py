"""``diffcodec convert oscar``: the official ``oscar.pkl`` (hub ``jinpeig/OSCAR``) → a diffcodec OSCAR.

The official file (official code; key list in ``specs/manifests/oscar_ckpt.json``) is a ``torch.save``
dict written by jp-guo/OSCAR's ``OSCAR.save_model``:

=============================  ======================================================================
``hyper_encoders``             state dict of the 8 hyper-encoders, ``{r}.backbone.*`` / ``quantizer.*`` /
                               ``proj.*`` → ``hyper_encoders.{r}.*`` (same names below the index)
``embeddings``                 (77, 1024) learned prompt embedding → ``backbone.conditioning.embedding``
``state_dict_unet``            U-Net entries with "lora" or "conv_in": the LoRA tensors
                               ``<module>.lora_{A,B}.default_{encoder,decoder,others}.weight`` →
                               ``backbone.unet.<same>``; ``conv_in.base_layer.*`` (SD-2.1 values) are
                               copied over the base model's (they must be equal; a warning says if not)
``unet_lora_*_modules``        the three target lists; they must equal the official scan of the U-Net
``rank_unet``                  the LoRA rank (16)
=============================  ======================================================================

The rung table (latent stride, codebook size) is read from the tensor shapes; the timesteps are the
official ones unless given. Checkpoints of the legacy generation are refused (see
:func:`~diffcodec.codecs.oscar.check_generation`). The file is read with ``torch.load(weights_only=True)``:
tensors and plain containers only, never arbitrary pickled objects.
"""

from __future__ import annotations

import argparse
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diffcodec.zoo.hub import CheckpointError, fetch, load_checkpoint_file

__all__ = [
    "OFFICIAL_FILENAME",
    "codec_from_official",
    "convert",
    "load_official",
    "official_codec_kwargs",
    "official_state_dict",
    "read_official",
]

OFFICIAL_FILENAME = "oscar.pkl"
OFFICIAL_HUB_ID = "jinpeig/OSCAR"
_TOP_LEVEL = (
    "hyper_encoders", "embeddings", "unet_lora_encoder_modules", "unet_lora_decoder_modules",
    "unet_lora_others_modules", "rank_unet", "state_dict_unet",
)  # fmt: skip
_RUNG_KEY = re.compile(r"^(\d+)\.")


#: ``diffcodec convert oscar --help``: (one-line help, plain-text description). The module docstring
#: is reStructuredText for the API reference; terminal help is written here as plain text.
HELP = (
    "official oscar.pkl (hub jinpeig/OSCAR) -> an OSCAR folder",
    """\
Convert the official OSCAR checkpoint (oscar.pkl: a file, its folder, or the hub repo
jinpeig/OSCAR, the default) into a diffcodec model folder.

The rung table is read from the tensor shapes; the pseudo-timesteps are the official
ones. Checkpoints of the legacy generation are refused. The file is read with
torch.load(weights_only=True): tensors and plain containers only. The SD 2.1 (768-v)
base model comes from --base-model (a hub id or a local diffusers folder).

diffcodec.load("oscar") does the same conversion at load time; converting once saves
it on every later load. Then: diffcodec.load("OUTPUT_FOLDER").""",
)


def read_official(source: str | os.PathLike[str], *, revision: str | None = None) -> dict[str, Any]:
    """Load an official checkpoint: a ``.pkl`` file, a folder holding ``oscar.pkl``, or a hub repo id."""
    path = Path(source).expanduser()
    if not path.is_file():
        path = fetch(os.fspath(source), OFFICIAL_FILENAME, revision=revision)
    checkpoint = load_checkpoint_file(path)  # weights_only: a CheckpointError, never code run
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not the official checkpoint dict")
    missing = [key for key in _TOP_LEVEL if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path} is not an official OSCAR checkpoint: missing {missing} (has {sorted(checkpoint)})"
        )
    return dict(checkpoint)


def _hyper_encoders(checkpoint: Mapping[str, Any]) -> dict[int, dict[str, torch.Tensor]]:
    from diffcodec.codecs.oscar import check_generation

    state = checkpoint["hyper_encoders"]
    check_generation(state, "the official checkpoint")
    per_rung: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _RUNG_KEY.match(key)
        if match is None:
            raise CheckpointError(f"unexpected hyper-encoder key {key!r} (expected '<rung>.<name>')")
        per_rung.setdefault(int(match.group(1)), {})[key[match.end() :]] = value
    if sorted(per_rung) != list(range(len(per_rung))):
        raise CheckpointError(f"hyper-encoder indices must be 0…n−1, got {sorted(per_rung)}")
    return per_rung


def official_codec_kwargs(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~diffcodec.codecs.oscar.OSCAR` arguments that the checkpoint's shapes determine."""
    rungs = []
    widths = set()
    for rung, state in sorted(_hyper_encoders(checkpoint).items()):
        try:
            first, embed = state["backbone.0.weight"], state["quantizer._codebook.embed"]
            strided = sum(state[f"backbone.{i}.weight"].shape[-1] == 5 for i in (0, 4, 9))
            widths.add((first.shape[0], state["backbone.13.weight"].shape[0], embed.shape[-1]))
        except KeyError as error:
            raise CheckpointError(f"hyper-encoder {rung} lacks {error}") from error
        rungs.append({"latent_stride": 2**strided, "codebook_size": int(embed.shape[1])})
    if len(widths) != 1:
        raise CheckpointError(f"the hyper-encoders differ in width (N, M, codebook_dim): {sorted(widths)}")
    ((channels, latent_channels, codebook_dim),) = widths
    embedding = checkpoint["embeddings"]
    return {
        "rungs": rungs,
        "hyper_channels": int(channels),
        "hyper_latent_channels": int(latent_channels),
        "codebook_dim": int(codebook_dim),
        "lora_rank": int(checkpoint["rank_unet"]),
        "embedding_length": int(embedding.shape[0]),
    }


def official_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under diffcodec's OSCAR state-dict keys (float32)."""
    state: dict[str, torch.Tensor] = {}
    for rung, entries in _hyper_encoders(checkpoint).items():
        for key, value in entries.items():
            state[f"hyper_encoders.{rung}.{key}"] = value
    state["backbone.conditioning.embedding"] = torch.as_tensor(checkpoint["embeddings"]).detach()
    for key, value in checkpoint["state_dict_unet"].items():
        if "lora" not in key and not key.startswith("conv_in."):
            raise CheckpointError(f"state_dict_unet holds {key!r}, neither a LoRA tensor nor conv_in")
        state[f"backbone.unet.{key}"] = value
    return {key: value.detach().float().contiguous() for key, value in state.items()}


def _check_lora_lists(codec: Any, checkpoint: Mapping[str, Any]) -> None:
    from diffcodec.codecs.oscar import ADAPTER_GROUPS, adapter_name

    adapters = codec.backbone.lora_adapters
    for group in ADAPTER_GROUPS:
        stored = list(checkpoint[f"unet_lora_{group}_modules"])
        ours = (
            list(adapters[adapter_name(group)][1].target_modules) if adapter_name(group) in adapters else []
        )
        if sorted(stored) != sorted(ours):
            extra, absent = sorted(set(stored) - set(ours)), sorted(set(ours) - set(stored))
            raise CheckpointError(
                f"the checkpoint's {group} LoRA targets differ from the U-Net's official scan: "
                f"{len(extra)} only in the checkpoint (e.g. {extra[:3]}), {len(absent)} only here "
                f"(e.g. {absent[:3]}); was it trained on another U-Net?"
            )


def load_official(
    source: str | os.PathLike[str] = OFFICIAL_HUB_ID, *, revision: str | None = None, **kwargs: Any
) -> Any:
    """Read an official checkpoint (file, folder or hub repo), then :func:`codec_from_official`."""
    return codec_from_official(read_official(source, revision=revision), **kwargs)


def codec_from_official(
    checkpoint: Mapping[str, Any],
    *,
    base_model: str | None = "stabilityai/stable-diffusion-2-1",
    base_revision: str | None = None,
    backbone: Mapping[str, Any] | None = None,
    timesteps: Sequence[int] | None = None,
    name: str = "oscar",
    **codec_kwargs: Any,
) -> Any:
    """Build an :class:`~diffcodec.codecs.oscar.OSCAR` from an official checkpoint dict, in eval mode.

    ``base_model`` (hub id or folder of SD 2.1 768-v) supplies the frozen VAE and U-Net; pass
    ``base_model=None, backbone=<configs>`` for a random-init backbone of another size (tests).
    Every official tensor must land in the codec and every codec entry that is not a frozen base
    weight must come from the file, or :class:`~diffcodec.zoo.hub.CheckpointError` lists the keys.
    """
    from diffcodec.codecs.oscar import OFFICIAL_TIMESTEPS, OSCAR

    kwargs = official_codec_kwargs(checkpoint)
    if timesteps is None:
        if len(kwargs["rungs"]) != len(OFFICIAL_TIMESTEPS):
            raise CheckpointError(f"{len(kwargs['rungs'])} rungs: pass timesteps= (the official table has 8)")
        timesteps = OFFICIAL_TIMESTEPS
    codec = OSCAR(
        name=name, timesteps=list(timesteps), base_model=base_model, base_revision=base_revision,
        backbone=None if backbone is None else dict(backbone), **kwargs, **codec_kwargs,
    )  # fmt: skip
    _check_lora_lists(codec, checkpoint)
    state = official_state_dict(checkpoint)
    own = codec.state_dict()
    conv_in_keys = [key for key in state if key.startswith("backbone.unet.conv_in.base_layer.")]
    base_conv_in = dict(codec.backbone.unet.conv_in.get_base_layer().named_parameters())
    for key in conv_in_keys:
        current = base_conv_in.get(key.rsplit(".", 1)[-1])
        if current is None or current.shape != state[key].shape:
            raise CheckpointError(f"{key} {tuple(state[key].shape)} does not fit the U-Net's conv_in")
        if base_model is not None and not torch.equal(current, state[key]):
            warnings.warn(
                f"{key} in the checkpoint differs from {base_model}'s; using the checkpoint's value "
                "(saving the converted model writes it, as every tensor that differs from the base)",
                stacklevel=2,
            )
    unexpected = sorted(key for key in state if key not in own and key not in conv_in_keys)
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in state
        if key in own and state[key].shape != own[key].shape
    ]
    backbone = "backbone."  # LoRA and the learned embedding are trained; the SD U-Net and VAE are not
    trained = [
        k for k in own if not (k.startswith(backbone) and codec.backbone.is_base_key(k[len(backbone) :]))
    ]
    missing = sorted(key for key in trained if key not in state)
    if unexpected or mismatched or missing:
        raise CheckpointError(
            f"the official checkpoint does not fit OSCAR: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} shape mismatches "
            f"(e.g. {mismatched[:3]})"
        )
    codec.backbone.persist_base = True  # so that conv_in.base_layer loads by name
    try:
        result = codec.load_state_dict(state, strict=False)
    finally:
        codec.backbone.persist_base = base_model is None
    if result.unexpected_keys:
        raise CheckpointError(f"unexpected keys after loading: {result.unexpected_keys[:5]}")
    return codec.eval()


def convert(
    source: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> Path:
    """Convert an official checkpoint and write it with ``save_pretrained`` (config.json +
    model.safetensors without the base weights + model card); returns the folder."""
    codec = load_official(source, **kwargs)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    codec.save_pretrained(output)
    return output


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", default=OFFICIAL_HUB_ID,
                        help=f"oscar.pkl, its folder, or a hub repo (default {OFFICIAL_HUB_ID})")  # fmt: skip
    parser.add_argument("output", help="folder to write the converted model to")
    parser.add_argument("--revision", default=None, help="hub revision of the official checkpoint")
    parser.add_argument("--base-model", default="stabilityai/stable-diffusion-2-1",
                        help="SD 2.1 (768-v) hub id or local diffusers folder")  # fmt: skip
    parser.add_argument("--base-revision", default=None, help="revision of the base model")
    parser.add_argument("--name", default="oscar", help="model id written into the files it codes")


def run(args: argparse.Namespace) -> int:
    output = convert(
        args.source, args.output, revision=args.revision, base_model=args.base_model,
        base_revision=args.base_revision, name=args.name,
    )  # fmt: skip
    print(f"wrote {output}; load it with diffcodec.load({str(output)!r})")
    return 0
