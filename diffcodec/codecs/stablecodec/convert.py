"""``diffcodec convert stablecodec``: official ``stablecodec_ft{λ}.pkl`` files + ``elic_official.pth`` → one
:class:`~diffcodec.codecs.stablecodec.StableCodec` with one rung per λ.

The official release (LuizScarlet/StableCodec, MIT; on Google Drive, not the hub) has one file per λ, each
a ``torch.save`` dict with exactly three entries (official code, the manifest
``stablecodec_ckpt.json``):

- ``state_dict_vae``: the VAE-encoder LoRA (adapter ``vae_skip``, 62 tensors) → ``backbone.vae.<key>``;
- ``state_dict_unet``: the U-Net LoRA (adapter ``default``) and the new ``conv_in`` (516 tensors) →
  ``backbone.unet.<key>``;
- ``state_dict_codec``: the complete ``LatentCodec`` (507 tensors) → ``latent_codec.<key>``, renamed by
  ``LatentCodec.official_to_diffcodec_keys``: the quadtree parts go under ``context_model`` and the
  compressai ≤ 1.2.6 EntropyBottleneck names ``_matrix0`` … become ``matrices.0`` … (upstream issue #5).

Every tensor must land in the rung and every weight of the rung must come from the file: any missing,
unexpected or mis-shaped key raises :class:`~diffcodec.zoo.hub.CheckpointError` (the official loader is
non-strict and silently keeps random weights). ``elic_official.pth`` supplies the frozen E_Aux (its 138
``g_a.*`` tensors, loaded strictly). The SD-Turbo base (VAE, U-Net, and the text encoder for the fixed
prompt) comes from ``base_model``. Entropy-model CDF tables are rebuilt on first use (the files store
them empty; the EntropyBottleneck's stored quantiles are used as they are).

Rates: the official Kodak results give 0.00579 bpp for λ = 32 and 0.03413 bpp for λ = 2; the nominal rates
of the other rungs are interpolated log-linearly in λ (:func:`nominal_kodak_bpp`). Pass ``rates=`` with
measured values to replace them.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diffcodec.zoo.hub import CheckpointError, load_checkpoint_file

__all__ = [
    "OFFICIAL_ENTRIES",
    "convert",
    "convert_stablecodec",
    "lambda_from_filename",
    "load_official_rung",
    "nominal_kodak_bpp",
    "official_rung_state",
    "read_official",
]

OFFICIAL_ENTRIES = ("state_dict_vae", "state_dict_unet", "state_dict_codec")
_PREFIXES = {"state_dict_vae": "backbone.vae.", "state_dict_unet": "backbone.unet."}
_FILENAME = re.compile(r"^stablecodec_(?:ft(?P<lam>\d+(?:\.\d+)?)|(?P<base>base))\.pkl$")
#: λ of ``stablecodec_base.pkl`` (stage 1, paper §4.1).
BASE_LAMBDA = 0.5
#: Official Kodak bpp at the two ends of the ladder (LuizScarlet/StableCodec:results/results.txt).
_KODAK_ENDS = ((32.0, 0.00579), (2.0, 0.03413))


#: ``diffcodec convert stablecodec --help``: (one-line help, plain-text description). The module docstring
#: is reStructuredText for the API reference; terminal help is written here as plain text.
HELP = (
    "official stablecodec_ft{λ}.pkl files + elic_official.pth -> one StableCodec folder",
    """\
Convert the official StableCodec release (LuizScarlet/StableCodec, MIT, on Google Drive)
into one diffcodec model folder with one rung per λ.

Pass every stablecodec_ft{λ}.pkl you want as a rung and the frozen auxiliary encoder
elic_official.pth (--elic). Every tensor must find its place and every weight must come
from the files: a missing, unexpected or mis-shaped key is an error. The SD-Turbo base
model comes from --base-model (a hub id or a local diffusers folder).

Nominal rates: 0.00579 bpp at λ = 32 and 0.03413 bpp at λ = 2 (official Kodak results),
the rungs between interpolated log-linearly in λ; --rates replaces them.

Then: diffcodec.load("OUTPUT_FOLDER").""",
)


def lambda_from_filename(path: str | os.PathLike[str]) -> float:
    """λ of an official file name: ``stablecodec_ft{λ}.pkl`` → λ, ``stablecodec_base.pkl`` → 0.5."""
    match = _FILENAME.match(Path(path).name)
    if match is None:
        raise ValueError(
            f"cannot tell λ from the file name {Path(path).name!r} (expected stablecodec_ft<λ>.pkl or "
            "stablecodec_base.pkl); pass lambdas= explicitly"
        )
    return BASE_LAMBDA if match.group("base") else float(match.group("lam"))


def nominal_kodak_bpp(lam: float) -> float:
    """Nominal Kodak rate of the model trained with ``lam``: log-linear in λ through the official ends."""
    (l0, r0), (l1, r1) = _KODAK_ENDS
    slope = math.log(r1 / r0) / math.log(l1 / l0)
    return r0 * (lam / l0) ** slope


def read_official(path: str | os.PathLike[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Load one official ``.pkl`` (tensors only, ``weights_only``) and check its three entries."""
    checkpoint = load_checkpoint_file(path)
    if not isinstance(checkpoint, Mapping) or set(checkpoint) != set(OFFICIAL_ENTRIES):
        found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: expected a dict with entries {list(OFFICIAL_ENTRIES)}, found {found}")
    for entry in OFFICIAL_ENTRIES:
        if not all(isinstance(v, torch.Tensor) for v in checkpoint[entry].values()):
            raise CheckpointError(f"{path}: {entry} must map names to tensors")
    return {entry: dict(checkpoint[entry]) for entry in OFFICIAL_ENTRIES}


def official_rung_state(checkpoint: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One official checkpoint as a StableCodec rung state dict (diffcodec keys)."""
    from diffcodec.codecs.stablecodec import LatentCodec

    state: dict[str, torch.Tensor] = {}
    for entry, prefix in _PREFIXES.items():
        state.update({prefix + key: value for key, value in checkpoint[entry].items()})
    codec_state = LatentCodec.official_to_diffcodec_keys(checkpoint["state_dict_codec"])
    state.update({"latent_codec." + key: value for key, value in codec_state.items()})
    return state


def load_official_rung(
    codec: Any, checkpoint: Mapping[str, Mapping[str, torch.Tensor]], where: str = ""
) -> None:
    """Load one official checkpoint into the codec's *active* rung; exact key and shape match or
    :class:`CheckpointError` (entropy-model table buffers may differ in shape: they are rebuilt)."""
    state = official_rung_state(checkpoint)
    expected = codec.rung_state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    resizable = ("._offset", "._quantized_cdf", "._cdf_length", ".scale_table")
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in state.keys() & expected.keys()
        if state[key].shape != expected[key].shape and not key.endswith(resizable)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{where or 'the official checkpoint'} does not fit StableCodec: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(mismatched)} shape mismatches (e.g. {sorted(mismatched)[:3]})"
        )
    codec.load_rung_state_dict(state)


def convert_stablecodec(
    checkpoints: Sequence[str | os.PathLike[str]],
    elic_checkpoint: str | os.PathLike[str],
    output_dir: str | os.PathLike[str] | None = None,
    *,
    lambdas: Sequence[float] | None = None,
    rates: Sequence[float] | None = None,
    name: str = "stablecodec",
    base_model: str | None = "stabilityai/sd-turbo",
    base_revision: str | None = None,
    **codec_kwargs: Any,
) -> Any:
    """Convert official checkpoints (one per λ) into one :class:`StableCodec`, rungs in ascending rate
    (descending λ) order; write it with ``save_pretrained`` when ``output_dir`` is given. Returns the codec.

    ``lambdas`` defaults to the λ in each file name; ``rates`` to :func:`nominal_kodak_bpp`. ``base_model``
    supplies SD-Turbo (hub id at ``base_revision``, or a local diffusers folder); ``base_model=None`` with
    ``backbone=``, ``latent_codec=``, ``elic=`` in ``codec_kwargs`` builds a small random-init codec (tests).
    """
    from diffcodec.codecs.stablecodec import StableCodec

    if not checkpoints:
        raise ValueError("no official checkpoint given")
    paths = [Path(p) for p in checkpoints]
    lams = [float(v) for v in lambdas] if lambdas is not None else [lambda_from_filename(p) for p in paths]
    if len(lams) != len(paths) or len(set(lams)) != len(lams):
        raise ValueError(f"need one distinct λ per checkpoint, got {lams} for {len(paths)} files")
    order = sorted(range(len(paths)), key=lambda i: -lams[i])  # ascending rate
    lams = [lams[i] for i in order]
    paths = [paths[i] for i in order]
    if rates is None:
        rates = [nominal_kodak_bpp(lam) for lam in lams]
    elif len(rates) != len(paths):
        raise ValueError(f"need one rate per checkpoint, got {len(rates)} for {len(paths)}")
    else:
        rates = [float(rates[i]) for i in order]
    elic = load_checkpoint_file(elic_checkpoint)  # read (weights_only) before building anything
    codec = StableCodec(
        name=name,
        lambdas=lams,
        rates=rates,
        base_model=base_model,
        base_revision=base_revision,
        **codec_kwargs,
    )
    if not isinstance(elic, Mapping):
        raise CheckpointError(f"{elic_checkpoint}: expected a flat state dict, got {type(elic).__name__}")
    try:
        codec.aux_encoder.load_official_state_dict(elic)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{elic_checkpoint}: {error}") from error
    for rung, path in enumerate(paths):
        codec.set_rung(rung)
        load_official_rung(codec, read_official(path), where=str(path))
    codec.set_rung(0)
    codec.eval()
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        codec.save_pretrained(output)
    return codec


def convert(
    checkpoints: Sequence[str | os.PathLike[str]],
    elic_checkpoint: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    **kwargs: Any,
) -> Path:
    """:func:`convert_stablecodec` into ``output_dir``; returns the folder."""
    convert_stablecodec(checkpoints, elic_checkpoint, output_dir, **kwargs)
    return Path(output_dir)


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoints", nargs="+", help="official stablecodec_ft<λ>.pkl / stablecodec_base.pkl"
    )
    parser.add_argument("--elic", required=True, help="elic_official.pth (the frozen auxiliary encoder)")
    parser.add_argument("-o", "--output", required=True, help="folder to write the converted model to")
    parser.add_argument(
        "--base-model", default="stabilityai/sd-turbo", help="SD-Turbo hub id or local folder"
    )
    parser.add_argument("--base-revision", default=None, help="revision of the base model")
    parser.add_argument("--rates", type=float, nargs="+", default=None,
                        help="nominal bpp per file, in the order given (default: interpolated)")  # fmt: skip
    parser.add_argument("--name", default="stablecodec", help="model id written into the files it codes")


def run(args: argparse.Namespace) -> int:
    output = convert(
        args.checkpoints, args.elic, args.output, rates=args.rates, name=args.name,
        base_model=args.base_model, base_revision=args.base_revision,
    )  # fmt: skip
    print(f"wrote {output}; load it with diffcodec.load({str(output)!r})")
    return 0
