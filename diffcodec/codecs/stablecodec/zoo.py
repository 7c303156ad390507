"""StableCodec's zoo entries: the official release and the bundled small model (registered on import;
this module imports nothing heavy, so ``diffcodec zoo`` stays fast)."""

from diffcodec.zoo.registry import ZooEntry, register, register_bundled

# fmt: off
OFFICIAL = register(ZooEntry(
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
# fmt: on

#: trained by diffcodec from scratch with recipes/bundled/train.sh (docs/bundled.md); rates: its config.json
SMALL = register_bundled("stablecodec-small", "stablecodec", (0.00793, 0.00885, 0.00894), OFFICIAL.paper)
