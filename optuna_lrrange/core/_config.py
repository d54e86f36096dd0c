"""Range-test settings and the learning-rate schedule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
import math
from typing import Any

_MODES = ("exp", "linear")

#: The fewest steps a range test may take: fewer cannot show a descent and its end.
MIN_NUM_ITER = 10


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RangeTestConfig:
    """Settings of one learning-rate range test.

    Args:
        start_lr: The first learning rate tried. Must be positive and finite.
        end_lr: The last learning rate tried. Must be finite and greater than ``start_lr``.
        num_iter: Number of optimizer steps, one learning rate each (at least 10).
        mode: ``"exp"`` raises the rate geometrically (the article's and fastai's choice),
            ``"linear"`` arithmetically.
        diverge_factor: Stop once the smoothed loss exceeds this factor times the best
            smoothed loss so far (4 in the article and fastai). Must be greater than 1.
        smooth_beta: Decay of the bias-corrected exponential moving average used for the
            divergence check, in ``[0, 1)``; 0 disables smoothing.
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 100
    mode: str = "exp"
    diverge_factor: float = 4.0
    smooth_beta: float = 0.98

    def __post_init__(self) -> None:
        for name in ("start_lr", "end_lr", "diverge_factor", "smooth_beta"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite real number, but got {value!r}.")
        if not self.start_lr > 0:
            raise ValueError(f"`start_lr > 0` must hold, but got start_lr={self.start_lr!r}.")
        if not self.start_lr < self.end_lr:
            raise ValueError(
                "`start_lr < end_lr` must hold, but got "
                f"(start_lr={self.start_lr!r}, end_lr={self.end_lr!r})."
            )
        if not isinstance(self.num_iter, int) or isinstance(self.num_iter, bool):
            raise ValueError(f"`num_iter` must be an int, but got {self.num_iter!r}.")
        if self.num_iter < MIN_NUM_ITER:
            raise ValueError(
                f"`num_iter >= {MIN_NUM_ITER}` must hold, but got num_iter={self.num_iter}."
            )
        if self.mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}, but got {self.mode!r}.")
        if not self.diverge_factor > 1:
            raise ValueError(
                f"`diverge_factor > 1` must hold, but got diverge_factor={self.diverge_factor!r}."
            )
        if not 0 <= self.smooth_beta < 1:
            raise ValueError(
                f"`0 <= smooth_beta < 1` must hold, but got smooth_beta={self.smooth_beta!r}."
            )

    def lr_at(self, i: int) -> float:
        """The learning rate of step ``i`` (0-based); the last step uses ``end_lr``."""
        frac = i / (self.num_iter - 1)
        if self.mode == "exp":
            return float(self.start_lr * (self.end_lr / self.start_lr) ** frac)
        return float(self.start_lr + (self.end_lr - self.start_lr) * frac)

    def schedule(self) -> list[float]:
        """All ``num_iter`` learning rates in order: ``[lr_at(0), lr_at(1), ...]``."""
        # The same arithmetic as lr_at, with the constants computed once.
        start, end, last = self.start_lr, self.end_lr, self.num_iter - 1
        if self.mode == "exp":
            ratio = end / start
            return [float(start * ratio ** (i / last)) for i in range(self.num_iter)]
        return [float(start + (end - start) * (i / last)) for i in range(self.num_iter)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def resolve_config(config: RangeTestConfig | None, options: Mapping[str, Any]) -> RangeTestConfig:
    """``config``, or the settings built from keyword ``options``; never both.

    Raises:
        TypeError: ``config`` is not a RangeTestConfig, or an option is not one of its fields.
        ValueError: Both are given, or a setting is invalid.
    """
    fields = RangeTestConfig.__dataclass_fields__
    if not fields.keys() >= options.keys():
        raise TypeError(
            f"range-test options must be among {sorted(fields)}, but got "
            f"{sorted(options.keys() - fields.keys())}."
        )
    if config is None:
        return RangeTestConfig(**options)
    if options:
        raise ValueError(
            f"pass either `config` or keyword options, but got both (options={sorted(options)})."
        )
    if not isinstance(config, RangeTestConfig):
        raise TypeError(
            f"`config` must be a RangeTestConfig or None, but got {type(config).__name__}."
        )
    return config
