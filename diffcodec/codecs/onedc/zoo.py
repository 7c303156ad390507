"""OneDC's zoo entries: the official release and the bundled small model (registered on import;
this module imports nothing heavy, so ``diffcodec zoo`` stays fast)."""

from diffcodec.zoo.registry import ZooEntry, register, register_bundled

# fmt: off
OFFICIAL = register(ZooEntry(
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
# fmt: on

#: trained by diffcodec from scratch with recipes/bundled/train.sh (docs/bundled.md); rates: its config.json
SMALL = register_bundled("onedc-small", "onedc", (0.00436, 0.00601, 0.00602), OFFICIAL.paper)
