"""The model zoo: one :class:`ZooEntry` per named model, registered below.

An entry says where the weights live (a hub repo at a pinned revision, or a folder bundled with the
package), what they were trained from (the base model and its licence), the rate ladder and the paper.
:func:`diffcodec.load` turns a name into a codec; ``diffcodec zoo`` prints this table.

Entries whose method is not implemented in this version are listed (so the zoo is honest about what
exists upstream) but ``load`` refuses them with a message that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ZooEntry", "get_entry", "list_models", "register"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class ZooEntry:
    """A named model.

    ``rates`` are the nominal bits per pixel of each rung, ascending (``quality=k`` is ``rates[k]``);
    empty when not yet measured in diffcodec. ``hub_id`` / ``revision`` locate the weights on the Hugging
    Face Hub (``revision`` should be a commit hash for reproducibility); ``bundled_path`` is a folder
    inside the ``diffcodec`` package (relative), used before the hub when present. ``weights_file`` is
    the file whose presence in the local cache means the weights are on this machine (an official
    checkpoint may use its own name until converted). ``official_loader`` (``"module:function"`` inside
    ``diffcodec.zoo``) reads an official, unconverted checkpoint from ``hub_id`` at load time.
    ``implemented`` is False for methods this version lists but cannot run yet.
    """

    name: str
    method: str
    rates: tuple[float, ...]
    hub_id: str | None
    revision: str | None
    base_model: str | None
    base_revision: str | None
    licence: str
    paper: str
    bundled_path: str | None = None
    notes: str = ""
    base_licence: str | None = None
    implemented: bool = True
    weights_file: str = "model.safetensors"
    official_loader: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"zoo names are lower-case [a-z0-9._-], got {self.name!r}")
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        if any(r <= 0 for r in self.rates) or list(self.rates) != sorted(self.rates):
            raise ValueError(f"{self.name}: rates must be positive and ascending, got {self.rates}")
        if self.hub_id is not None and self.hub_id.count("/") != 1:
            raise ValueError(f"{self.name}: hub_id must look like 'org/name', got {self.hub_id!r}")


_REGISTRY: dict[str, ZooEntry] = {}


def register(entry: ZooEntry, *, replace: bool = False) -> ZooEntry:
    """Add ``entry`` to the zoo (``replace=True`` to overwrite an entry of the same name)."""
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"a zoo entry named {entry.name!r} exists; pass replace=True to overwrite it")
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[ZooEntry]:
    """Every registered entry, in registration order."""
    return list(_REGISTRY.values())


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no zoo model named {name!r}; known: {', '.join(_REGISTRY) or 'none'}") from None


# ---------------------------------------------------------------------------------------------- entries
# Official releases (specs/*.md). Converted diffcodec checkpoints and the bundled small models are added
# by later issues; until then these entries document what exists upstream and under which licence.

register(ZooEntry(
    name="oscar", method="oscar",
    rates=(0.0019, 0.0098, 0.0313, 0.0430, 0.0625, 0.0781, 0.0937, 0.1250),  # nominal, one model
    hub_id="jinpeig/OSCAR", revision=None, weights_file="oscar.pkl",
    base_model="stabilityai/stable-diffusion-2-1", base_revision=None, base_licence="openrail++",
    licence="unspecified",
    paper="OSCAR: One-Step Diffusion Codec Across Multiple Bit-rates (Guo et al., NeurIPS 2025, "
          "arXiv:2505.16091)",
    official_loader="diffcodec.zoo.convert_oscar:load_official",
    notes="official oscar.pkl (jp-guo/OSCAR has no licence file), converted at load time; revision not "
          "pinned (unverified offline)",
))
register(ZooEntry(
    name="stablecodec", method="stablecodec",
    # λ 32 … 2: the official Kodak ends (0.00579, 0.03413 bpp) with the rungs between log-linear in λ
    rates=(0.00579, 0.00696, 0.00902, 0.01085, 0.01406, 0.0169, 0.0219, 0.02633, 0.03413),
    hub_id=None, revision=None, weights_file="stablecodec_ft2.pkl",
    base_model="stabilityai/sd-turbo", base_revision=None,
    base_licence="other (Stability AI Community License)",
    licence="mit",
    paper="StableCodec: Taming One-Step Diffusion for Extreme Image Compression (Zhang et al., ICCV 2025, "
          "arXiv:2506.21977)",
    notes="official stablecodec_ft{λ}.pkl + elic_official.pth are on Google Drive, not the hub: download "
          "them, then `diffcodec convert stablecodec` and load the output folder",
))
register(ZooEntry(
    name="onedc", method="onedc",
    # a z-only model, then λ ∈ {12.2, 7.4, 4.6, 2.9, 1.8, 1.0, 0.6} (nominal Kodak rates of the paper)
    rates=(0.0034, 0.0101, 0.0165, 0.0245, 0.0354, 0.0506, 0.0775, 0.1115),
    hub_id=None, revision=None,
    base_model="tianweiy/DMD2", base_revision=None,
    base_licence="cc-by-nc-sa-4.0 (DMD2 U-Net); creativeml-openrail-m (SD-1.5); openrail++ (SD-2.1 VAE)",
    licence="cc-by-nc-sa-4.0",
    paper="One-Step Diffusion-Based Image Compression with Semantic Distillation (Xue et al., "
          "arXiv:2505.16687)",
    notes="official model.safetensors + model_1.safetensors per λ are on OneDrive, not the hub: download "
          "them, then `diffcodec convert onedc` and load the output folder",
))
register(ZooEntry(
    name="cadc", method="cadc",
    rates=(),
    hub_id=None, revision=None,
    base_model="stabilityai/sd-turbo", base_revision=None,
    base_licence="other (Stability AI Community License)",
    licence="none released",
    paper="CADC: Content Adaptive Diffusion-Based Generative Image Compression (Sheng et al., CVPR 2026, "
          "arXiv:2602.21591)",
    notes="no official code or weights; train with recipes/cadc (bases: stabilityai/sd-turbo, "
          "Salesforce/blip-image-captioning-base (bsd-3-clause))",
))

# The bundled small models (docs/bundled.md): trained by diffcodec from scratch with recipes/bundled/train.sh,
# their small base model included (so every weight is in the package and nothing is downloaded). Rates are
# each model's own config.json rates (the mean real file size of four training photos per rung).
_SMALL_NOTES = (
    "bundled in the package (works offline); small widths and minutes of training: shows the pipeline, "
    "not the paper's quality; base model: diffcodec's small kl-f8 VAE + U-Net (recipes/base)"
)
for _name, _method, _rates, _paper in (
    ("oscar-small", "oscar", (0.009765625, 0.04296875, 0.125), "oscar"),
    ("onedc-small", "onedc", (0.00436, 0.00601, 0.00602), "onedc"),
    ("stablecodec-small", "stablecodec", (0.00793, 0.00885, 0.00894), "stablecodec"),
    ("cadc-small", "cadc", (0.008, 0.00955, 0.00992), "cadc"),
):
    register(ZooEntry(
        name=_name, method=_method, rates=_rates,
        hub_id=None, revision=None, base_model=None, base_revision=None,
        licence="apache-2.0", paper=get_entry(_paper).paper,
        bundled_path=f"assets/models/{_name}", notes=_SMALL_NOTES,
    ))
