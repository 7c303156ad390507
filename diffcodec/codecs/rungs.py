"""Per-rate weights: rate ladders whose rungs are separately trained weights on one shared backbone.

StableCodec, CADC and OneDC train one model per λ. Loading each as its own codec would hold the frozen
SD U-Net and VAE once per rate; :class:`PerRateCodec` keeps **one** backbone in memory and swaps only
each rung's own weights (the method says which through :meth:`PerRateCodec.is_rung_key`)::

    active rung  ── module parameters (on the device)
    other rungs  ── CPU bank: one {key: tensor} per rung        set_rung(k): active → bank, bank[k] → active

Checkpoints carry every rung: the active rung's weights under their module keys, the others under
``rungs.{r}.<key>``, and the active rung's index as ``active_rung``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from diffcodec.codecs.base import Codec


def check_lambda_ladder(
    lambdas: Sequence[float], rates: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Validate a per-λ ladder; ``rates`` (nominal bpp, ascending, one per λ) default to placeholders."""
    lambdas = tuple(float(v) for v in lambdas)
    if not lambdas or any(not v > 0 for v in lambdas):
        raise ValueError(f"lambdas must be a non-empty list of positive numbers, got {list(lambdas)}")
    if rates is None:
        rates = tuple(0.01 * (i + 1) for i in range(len(lambdas)))
    rates = tuple(float(r) for r in rates)
    if len(rates) != len(lambdas) or list(rates) != sorted(rates) or any(r <= 0 for r in rates):
        raise ValueError(
            f"rates must be positive, ascending and one per λ; got {list(rates)} for {list(lambdas)}"
        )
    return lambdas, rates


class PerRateCodec(Codec):
    """A :class:`Codec` whose rungs are separate weights (see the module docstring).

    Subclasses call :meth:`_init_rung_bank` at the end of their constructor and implement
    :meth:`is_rung_key`.
    """

    def _init_rung_bank(self) -> None:
        self._bank: list[dict[str, torch.Tensor] | None] = [None] * self.num_rungs  # inactive rungs (CPU)
        self.register_state_dict_post_hook(_write_rungs)
        self.register_load_state_dict_pre_hook(_read_rungs)

    def is_rung_key(self, key: str) -> bool:  # pragma: no cover - abstract
        """Whether state-dict entry ``key`` is one rung's own weight (not shared by all rungs)."""
        raise NotImplementedError

    def _module_state(self) -> dict[str, torch.Tensor]:
        """The state dict of the modules alone (without the bank the top-level hook adds)."""
        return {
            f"{name}.{key}": value
            for name, child in self.named_children()
            for key, value in child.state_dict().items()
        }

    def rung_state_dict(self) -> dict[str, torch.Tensor]:
        """The active rung's own weights, under their module keys."""
        return {key: value for key, value in self._module_state().items() if self.is_rung_key(key)}

    def load_rung_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`rung_state_dict` output into the active rung; the key set must match exactly."""
        expected = set(self.rung_state_dict())
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"rung weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
        by_child: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            child, _, rest = key.partition(".")
            by_child.setdefault(child, {})[rest] = value
        for child, child_state in by_child.items():
            getattr(self, child).load_state_dict(child_state, strict=False)

    def _activate_rung(self, rung: int) -> None:
        """Swap the per-rate weights: the active rung goes to the CPU bank, ``rung`` comes in (a rung never
        loaded keeps the weights it was built with, i.e. a copy of the active ones)."""
        current = {k: v.detach().to("cpu", copy=True) for k, v in self.rung_state_dict().items()}
        incoming = self._bank[rung]
        self._bank[self._rung] = current
        self._bank[rung] = None
        if incoming is not None:
            self.load_rung_state_dict(incoming)


def module_key(state_key: str) -> str:
    """The module's own state-dict key behind a ladder entry: ``rungs.{r}.<key>`` → ``<key>``."""
    head, _, rest = state_key.partition(".")
    rung, _, key = rest.partition(".")
    return key if head == "rungs" and rung.isdigit() and key else state_key


def _write_rungs(module: PerRateCodec, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: the inactive rungs under ``rungs.{r}.`` and the active rung's index."""
    state_dict[prefix + "active_rung"] = torch.tensor(module.quality, dtype=torch.int64)
    active = {k[len(prefix) :]: v for k, v in state_dict.items() if module.is_rung_key(k[len(prefix) :])}
    for rung, bank in enumerate(module._bank):
        if rung != module.quality:
            for key, value in (bank if bank is not None else active).items():
                state_dict[f"{prefix}rungs.{rung}.{key}"] = value


def _read_rungs(module: PerRateCodec, state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: ``rungs.{r}.`` entries go to the bank; the module keys are the rung
    ``active_rung`` of the checkpoint (the active one when absent)."""
    error_msgs = args[-1]
    active = state_dict.pop(prefix + "active_rung", None)
    banks: dict[int, dict[str, torch.Tensor]] = {}
    for key in [k for k in state_dict if k.startswith(prefix + "rungs.")]:
        rung, _, name = key[len(prefix) + len("rungs.") :].partition(".")
        if not rung.isdigit() or int(rung) >= module.num_rungs:
            error_msgs.append(f"{key}: rung {rung} is not on this {module.num_rungs}-rung ladder")
            continue
        banks.setdefault(int(rung), {})[name] = state_dict.pop(key)
    rung = module.quality if active is None else int(active)
    if not 0 <= rung < module.num_rungs:
        error_msgs.append(f"{prefix}active_rung = {rung} is not on this {module.num_rungs}-rung ladder")
        return
    module._bank = [None if r == rung else banks.get(r) for r in range(module.num_rungs)]
    module._rung = rung
