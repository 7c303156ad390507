"""CADC's zoo entries: the official release and the bundled small model (registered on import;
this module imports nothing heavy, so ``diffcodec zoo`` stays fast)."""

from diffcodec.zoo.registry import ZooEntry, register, register_bundled

# fmt: off
OFFICIAL = register(ZooEntry(
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
# fmt: on

#: trained by diffcodec from scratch with recipes/bundled/train.sh (docs/bundled.md); rates: its config.json
SMALL = register_bundled("cadc-small", "cadc", (0.008, 0.00955, 0.00992), OFFICIAL.paper)
