"""OSCAR's zoo entries: the official release and the bundled small model (registered on import;
this module imports nothing heavy, so ``diffcodec zoo`` stays fast)."""

from diffcodec.zoo.registry import ZooEntry, register, register_bundled

# fmt: off
OFFICIAL = register(ZooEntry(
    name="oscar", method="oscar",
    rates=(0.0019, 0.0098, 0.0313, 0.0430, 0.0625, 0.0781, 0.0937, 0.1250),  # nominal, one model
    hub_id="jinpeig/OSCAR", revision=None, weights_file="oscar.pkl",
    base_model="stabilityai/stable-diffusion-2-1", base_revision=None, base_licence="openrail++",
    licence="unspecified",
    paper="OSCAR: One-Step Diffusion Codec Across Multiple Bit-rates (Guo et al., NeurIPS 2025, "
          "arXiv:2505.16091)",
    official_loader="diffcodec.codecs.oscar.convert:load_official",
    notes="official oscar.pkl (jp-guo/OSCAR has no licence file), converted at load time; revision not "
          "pinned (unverified offline)",
))
# fmt: on

#: trained by diffcodec from scratch with recipes/bundled/train.sh (docs/bundled.md); rates: its config.json
SMALL = register_bundled("oscar-small", "oscar", (0.009765625, 0.04296875, 0.125), OFFICIAL.paper)
