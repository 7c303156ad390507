"""Building blocks shared by the methods: the one-step SD backbone (VAE + U-Net + LoRA + tiling), the
CompressAI/DCVC-style blocks, ELIC's analysis transform and the BLIP captioner. Nothing here knows a
method or a codec; :mod:`diffcodec.entropy` holds the entropy models."""
