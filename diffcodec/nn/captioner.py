"""Decoder-side image captioning with BLIP (Li et al., ICML 2022) for CADC's BFATC (diffcodec's design,
docs/methods/cadc.md).

CADC captions its auxiliary reconstruction x̂_aux with a frozen ``blip-image-captioning-base`` at the
*decoder*; the caption costs zero bits, so encoder and decoder never exchange it. It must therefore be a
pure function of x̂_aux: every decode of the same file has to produce the same caption. :class:`BlipCaptioner`
fixes everything generation could otherwise pick up from a hub ``generation_config.json`` or a global RNG:

- unconditional captioning (no text prefix), **greedy** decoding (``do_sample=False``, ``num_beams=1``),
  at most ``max_length`` = 20 tokens (the model's default), special tokens skipped, whitespace stripped;
- one image at a time (no padding effects from batching);
- the image goes through the 8-bit grid (x̂_aux clamped to [−1, 1] → (v+1)/2 → uint8) and then
  ``BlipImageProcessor`` (resize to 384² bicubic, rescale 1/255, CLIP normalisation), as BLIP's processor.

Build the real captioner with :meth:`BlipCaptioner.from_pretrained` (hub id ``Salesforce/blip-image-
captioning-base`` at a revision, or a local folder; offline it must be in the hub cache), or a small
random-init one with :meth:`BlipCaptioner.from_config` (tests, CPU experiments; :data:`SMALL_BLIP`) whose
tokenizer is built offline by :func:`byte_level_tokenizer`.

Greedy decoding is deterministic on one machine; on *another* machine (different BLAS / GPU kernels) a
near-tie between the two most likely tokens can in principle flip, which changes the caption and hence
the reconstruction (never the bitstream). This is inherent to decoder-side captioning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from diffcodec.nn.backbone import load_component
from diffcodec.timing import timed

__all__ = ["BLIP_MODEL", "SMALL_BLIP", "BlipCaptioner", "byte_level_tokenizer"]

#: The paper's captioner (diffcodec's design, docs/methods/cadc.md): 247.41 M parameters, 384² inputs.
BLIP_MODEL = "Salesforce/blip-image-captioning-base"
BLIP_LICENCE = "bsd-3-clause"

#: A small BLIP of the same classes (random init, ~0.1 M parameters, 32² inputs) for tests and CPU runs.
SMALL_BLIP: dict[str, Any] = {
    "vision_config": {
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8, "projection_dim": 32, "initializer_range": 0.02,
    },
    "text_config": {
        "hidden_size": 32, "encoder_hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 32, "projection_dim": 32,
    },
    "projection_dim": 32,
}  # fmt: skip

_SPECIALS = ("[PAD]", "[SEP]", "[DEC]")  # ids 0, 1, 2: BLIP's pad, end of caption, start of caption


def byte_level_tokenizer(
    model_max_length: int, specials: Sequence[str] = _SPECIALS, *, wrap: tuple[str, str] | None = None
) -> Any:
    """An offline tokenizer over the 256 byte-level symbols (no merges), ids ``0..len(specials)-1`` for
    ``specials`` (the first one pads). Any text encodes and decodes losslessly. ``wrap`` = (start, end)
    special tokens put around every sequence (CLIP style). For small random-init text models only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    if wrap is not None:
        start, end = wrap
        backend.post_processor = processors.TemplateProcessing(
            single=f"{start} $A {end}", special_tokens=[(start, vocab[start]), (end, vocab[end])]
        )
    backend.add_special_tokens(list(specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=specials[0], model_max_length=model_max_length
    )


class BlipCaptioner(nn.Module):
    """Frozen BLIP caption generator f_c (diffcodec's design, docs/methods/cadc.md):
    ``captions = captioner(x̂_aux)``.

    Args:
        model: a ``transformers.BlipForConditionalGeneration`` (kept in eval mode, no gradients).
        image_processor: a ``transformers.BlipImageProcessor``.
        tokenizer: the matching tokenizer (decodes the generated ids).
        max_length: generation length limit in tokens, start token included (BLIP default 20).
    """

    def __init__(self, model: nn.Module, image_processor: Any, tokenizer: Any, max_length: int = 20) -> None:
        super().__init__()
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
        self.model = model.eval().requires_grad_(False)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_length = max_length

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls, repo_or_path: str = BLIP_MODEL, revision: str | None = None, *, max_length: int = 20
    ) -> BlipCaptioner:
        """The real captioner from a hub id (at ``revision``; offline: from the hub cache) or a folder."""
        from transformers import BlipForConditionalGeneration, BlipProcessor

        def load(loader: Any, **extra: Any) -> Any:
            return load_component(loader, repo_or_path, "", revision=revision, **extra)

        processor = load(BlipProcessor.from_pretrained)
        model = load(BlipForConditionalGeneration.from_pretrained, dtype=torch.float32)
        return cls(model, processor.image_processor, processor.tokenizer, max_length)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | None = None, *, seed: int = 0, max_length: int = 20
    ) -> BlipCaptioner:
        """A random-init BLIP of ``transformers.BlipConfig(**config)`` (default :data:`SMALL_BLIP`),
        seeded (the global RNG is left untouched), with a byte-level tokenizer. Its vocabulary is set to
        the tokenizer's, ids pad 0 / end 1 / start 2."""
        from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

        args = {
            key: dict(value) if isinstance(value, Mapping) else value
            for key, value in (config or SMALL_BLIP).items()
        }
        vision = args.setdefault("vision_config", {})
        text = args.setdefault("text_config", {})
        tokenizer = byte_level_tokenizer(int(text.get("max_position_embeddings", 512)))
        text.update(vocab_size=len(tokenizer), pad_token_id=0, sep_token_id=1, eos_token_id=1, bos_token_id=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BlipForConditionalGeneration(BlipConfig(**args))
        size = int(vision.get("image_size", 384))
        processor = BlipImageProcessor(size={"height": size, "width": size})
        return cls(model, processor, tokenizer, max_length)

    # ------------------------------------------------------------------ captioning
    def train(self, mode: bool = True) -> BlipCaptioner:
        super().train(mode)
        self.model.eval()  # frozen: dropout off, whatever the codec's mode
        return self

    def generation_kwargs(self) -> dict[str, Any]:
        """The fixed generation settings (overriding any hub ``generation_config.json``)."""
        return {"do_sample": False, "num_beams": 1, "max_length": self.max_length, "min_length": 0}

    def pixel_values(self, image: Tensor) -> Tensor:
        """``BlipImageProcessor`` output (1, 3, S, S) of one (3, H, W) image in [−1, 1], via 8-bit RGB."""
        array = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        array = array.permute(1, 2, 0).cpu().numpy()
        values = self.image_processor(images=np.ascontiguousarray(array), return_tensors="pt").pixel_values
        parameter = next(self.model.parameters())
        return values.to(device=parameter.device, dtype=parameter.dtype)

    @torch.no_grad()
    @timed("captioner")
    def forward(self, images: Tensor) -> list[str]:
        """One caption per image of ``images`` (B, 3, H, W) in [−1, 1] (values outside are clamped)."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"captioning needs a (B, 3, H, W) image tensor in [-1, 1], got {shape}")
        if not torch.isfinite(images).all():
            raise ValueError("cannot caption an image with NaN or infinite values")
        captions = []
        for image in images:
            ids = self.model.generate(pixel_values=self.pixel_values(image), **self.generation_kwargs())
            captions.append(self.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        return captions
