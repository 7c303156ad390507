"""``diffcodec convert onedc``: official OneDC release folders → one :class:`~diffcodec.codecs.onedc.OneDC`.

Each official folder (one per λ, plus the z-only "exlow" model; official code, §8, key lists in
``specs/manifests/onedc_ckpt.json``) holds two files written by accelerate ``save_state``:

========================  ===========================================================================
``model.safetensors``     the generator: DMD2 SD-1.5 U-Net base weights, LoRA (adapter ``default``), the
                          new ``conv_in`` (1,252 keys) and ``vae_reduction.*`` → ``backbone.unet.<same>``
                          and ``vae_reduction.<same>``
``model_1.safetensors``   the codec ``IntraNoAR`` (779 keys) → ``latent_codec.<same>``
========================  ===========================================================================

Several folders become the rungs of one multi-rate codec, in ascending rate order (the z-only model
first, then λ = 12.2 … 0.6); λ and the z-only flag are read from the folder names (``…lambda4.6…``,
``…exlow…``) unless given. The frozen U-Net base weights in ``model.safetensors`` must equal the DMD2
U-Net the converted model will load (they are not written into diffcodec checkpoints); with
``base_unet=None`` they are copied into a random-init backbone instead (tests, or a fully self-contained
export). Files are read with safetensors only (no pickle).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diffcodec.zoo.hub import CheckpointError

__all__ = [
    "CODEC_FILE",
    "GENERATOR_FILE",
    "codec_from_official",
    "convert",
    "parse_folder_name",
    "read_official",
]

GENERATOR_FILE = "model.safetensors"
CODEC_FILE = "model_1.safetensors"
_LAMBDA = re.compile(r"lambda[_-]?(\d+(?:\.\d+)?)", re.IGNORECASE)


#: ``diffcodec convert onedc --help``: (one-line help, plain-text description). The module docstring
#: is reStructuredText for the API reference; terminal help is written here as plain text.
HELP = (
    "official OneDC release folders (one per λ) -> one OneDC folder",
    """\
Convert the official OneDC release (CC BY-NC-SA 4.0, on OneDrive: one folder per λ plus
the z-only "exlow" model, each with model.safetensors and model_1.safetensors) into one
multi-rate diffcodec model folder.

The folders become the rungs in ascending rate order (the z-only model first, then
λ = 12.2 ... 0.6); λ and the z-only flag are read from the folder names unless given.
The frozen U-Net weights in the files must equal the DMD2 U-Net named by --base-unet.
Files are read with safetensors only (no pickle).

Then: diffcodec.load("OUTPUT_FOLDER").""",
)


def read_official(folder: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(generator state, codec state) of one official folder, as float32 tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    states = []
    for name in (GENERATOR_FILE, CODEC_FILE):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not an official OneDC folder: {name} is missing (expected {GENERATOR_FILE} "
                f"and {CODEC_FILE})"
            )
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from error
        states.append({key: value.float() for key, value in state.items()})
    return states[0], states[1]


def parse_folder_name(folder: str | os.PathLike[str]) -> tuple[float | None, bool]:
    """(λ or None, z-only) from an official folder name (``lambda4.6``, ``exlow_bpp0034``)."""
    name = Path(folder).name
    z_only = "exlow" in name.lower()
    match = _LAMBDA.search(name)
    return (float(match.group(1)) if match else None), z_only


def _rung_plan(
    folders: Sequence[Path], lambdas: Sequence[float] | None, z_only: Sequence[bool] | None,
    rates: Sequence[float] | None,
) -> list[tuple[Path, float, bool, float | None]]:  # fmt: skip
    """(folder, λ, z-only, rate) per rung, sorted by ascending rate."""
    from diffcodec.codecs.onedc import EXLOW_RATE, OFFICIAL_LAMBDAS, OFFICIAL_RATES

    parsed = [parse_folder_name(f) for f in folders]
    z_flags = list(z_only) if z_only is not None else [flag for _, flag in parsed]
    if lambdas is None:
        missing = [str(f) for f, (lam, flag), zf in zip(folders, parsed, z_flags) if lam is None and not zf]
        if missing:
            raise ValueError(f"cannot read λ from the folder name(s) {missing}: pass lambdas=")
        lambdas = [lam if lam is not None else 1.0 for lam, _ in parsed]
    if len(lambdas) != len(folders) or len(z_flags) != len(folders):
        raise ValueError(f"{len(folders)} folders need as many lambdas and z_only flags")
    official = dict(zip(OFFICIAL_LAMBDAS, OFFICIAL_RATES))
    plan = []
    for index, (folder, lam, flag) in enumerate(zip(folders, lambdas, z_flags)):
        rate = rates[index] if rates is not None else (EXLOW_RATE if flag else official.get(float(lam)))
        plan.append((folder, float(lam), bool(flag), rate))
    # ascending rate: z-only first, then larger λ first
    plan.sort(key=lambda item: (not item[2], -item[1]))
    if any(rate is None for *_, rate in plan):
        unknown = [lam for _, lam, flag, rate in plan if rate is None]
        raise ValueError(f"no published rate for λ = {unknown}: pass rates= (one per folder)")
    return plan


def _load_rung(codec: Any, generator: Mapping[str, torch.Tensor], codec_state: Mapping[str, torch.Tensor],
               compare_base: bool, where: Path) -> None:  # fmt: skip
    """Put one folder's weights into the active rung of ``codec``."""
    try:
        codec.latent_codec.load_official_state_dict(codec_state)
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"{where / CODEC_FILE} does not fit OneDC's IntraNoAR: {error}") from error
    reduction = {
        k[len("vae_reduction.") :]: v for k, v in generator.items() if k.startswith("vae_reduction.")
    }
    unet_state = {k: v for k, v in generator.items() if not k.startswith("vae_reduction.")}
    try:
        codec.vae_reduction.load_state_dict(reduction, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{where / GENERATOR_FILE}: vae_reduction does not fit: {error}") from error
    unet = codec.backbone.unet
    own = unet.state_dict()
    missing = sorted(set(own) - set(unet_state))
    unexpected = sorted(set(unet_state) - set(own))
    mismatched = [f"{k} {tuple(unet_state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in unet_state if k in own and unet_state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{where / GENERATOR_FILE} does not fit the generator U-Net: {len(missing)} missing (e.g. "
            f"{missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} shape "
            f"mismatches (e.g. {mismatched[:3]})"
        )
    trainable = {f"unet.{k}": v for k, v in unet_state.items() if not codec.backbone.is_base_key(f"unet.{k}")}
    base = {k: v for k, v in unet_state.items() if codec.backbone.is_base_key(f"unet.{k}")}
    if compare_base:
        differing = [k for k, v in base.items() if not torch.equal(own[k].float().cpu(), v)]
        if differing:
            raise CheckpointError(
                f"{len(differing)} frozen U-Net weights in {where / GENERATOR_FILE} differ from the base "
                f"U-Net (e.g. {differing[:3]}): it is not the DMD2 U-Net this model was trained on. Pass "
                "the right base_unet, or base_unet=None to take the U-Net from the checkpoint"
            )
    else:
        unet.load_state_dict({**own, **base}, strict=True)
    codec.backbone.load_trainable_state_dict(trainable, strict=True)


def codec_from_official(
    folders: Sequence[str | os.PathLike[str]],
    *,
    lambdas: Sequence[float] | None = None,
    z_only: Sequence[bool] | None = None,
    rates: Sequence[float] | None = None,
    base_unet: str | None = None,
    base_unet_revision: str | None = None,
    base_vae: str | None = None,
    base_vae_revision: str | None = None,
    name: str = "onedc",
    **codec_kwargs: Any,
) -> Any:
    """Build a :class:`~diffcodec.codecs.onedc.OneDC` (eval mode) with one rung per official folder.

    ``base_unet`` / ``base_vae`` (e.g. :data:`~diffcodec.codecs.onedc.DMD2_REPO` and
    :data:`~diffcodec.codecs.onedc.SD21_REPO`): the frozen base models; the checkpoint's U-Net base weights
    must equal the loaded ones. Without them (``None``, with ``backbone=`` configs in ``codec_kwargs``) the
    backbone is built from configs and the U-Net base weights come from the checkpoint. Every official
    tensor must land and every trained tensor must come from the files, or
    :class:`~diffcodec.zoo.hub.CheckpointError` names the keys.
    """
    from diffcodec.codecs.onedc import OneDC

    if not folders:
        raise ValueError("no official folder given")
    plan = _rung_plan([Path(f).expanduser() for f in folders], lambdas, z_only, rates)
    for folder, *_ in plan:  # fail before building anything
        missing = [name for name in (GENERATOR_FILE, CODEC_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not an official OneDC folder: {', '.join(missing)} missing (expected "
                f"{GENERATOR_FILE} and {CODEC_FILE})"
            )
    codec = OneDC(
        name=name, lambdas=[lam for _, lam, _, _ in plan], z_only=[flag for _, _, flag, _ in plan],
        rates=[rate for *_, rate in plan], base_unet=base_unet, base_unet_revision=base_unet_revision,
        base_vae=base_vae, base_vae_revision=base_vae_revision, **codec_kwargs,
    )  # fmt: skip
    for rung, (folder, *_) in enumerate(plan):
        generator, codec_state = read_official(folder)
        codec.set_rung(rung)
        # the frozen U-Net is shared: each folder must hold the loaded one (without a base: the first's)
        _load_rung(
            codec, generator, codec_state, compare_base=base_unet is not None or rung > 0, where=folder
        )
    codec.set_rung(0)
    return codec.eval()


def convert(
    folders: Sequence[str | os.PathLike[str]], output_dir: str | os.PathLike[str], **kwargs: Any
) -> Path:
    """Convert official folders and write the result with ``save_pretrained``; returns the output folder."""
    codec = codec_from_official(folders, **kwargs)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    codec.save_pretrained(output)
    return output


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from diffcodec.codecs.onedc import DMD2_REPO, SD21_REPO

    parser.add_argument(
        "folders", nargs="+", help="official release folders (model.safetensors + model_1.safetensors)"
    )
    parser.add_argument("output", help="folder to write the converted model to")
    parser.add_argument(
        "--lambdas", type=float, nargs="+", help="λ per folder (default: from the folder names)"
    )
    parser.add_argument(
        "--z-only", type=int, nargs="+", help="1 for a z-only folder, per folder (default: 'exlow')"
    )
    parser.add_argument(
        "--rates", type=float, nargs="+", help="nominal bpp per folder (default: published rates)"
    )
    parser.add_argument("--base-unet", default=DMD2_REPO, help="DMD2 SD-1.5 U-Net: hub repo, file or folder")
    parser.add_argument("--base-unet-revision", default=None)
    parser.add_argument("--base-vae", default=SD21_REPO, help="SD-2.1 hub repo or diffusers folder (vae/)")
    parser.add_argument("--base-vae-revision", default=None)
    parser.add_argument("--name", default="onedc", help="model id written into the files it codes")
    parser.add_argument(
        "--latent-codec", type=json.loads, default=None, metavar="JSON",
        help="OneDCLatentCodec arguments of checkpoints trained at another size (default: the release's)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    extra = {} if args.latent_codec is None else {"latent_codec": args.latent_codec}
    output = convert(
        args.folders, args.output, lambdas=args.lambdas,
        z_only=None if args.z_only is None else [bool(v) for v in args.z_only], rates=args.rates,
        base_unet=args.base_unet, base_unet_revision=args.base_unet_revision, base_vae=args.base_vae,
        base_vae_revision=args.base_vae_revision, name=args.name, **extra,
    )  # fmt: skip
    print(f"wrote {output}; load it with diffcodec.load({str(output)!r})")
    return 0
