"""What `tune` searches for each model kind: the kind's own `search` specs, made into Optuna calls.

Each model class lists what it searches and over which ranges as plain data
(`aeservice.models.Searched`; see `Autoencoder.search`): models know nothing of Optuna. Every
searched value is a field of `ModelConfig` except the hidden layers, which are searched as a
width and a depth (`hidden_width=128, hidden_depth=2` -> hidden (128, 64)): a few numbers TPE
models well, instead of a combinatorial list of layer sizes. The latent size's upper end
depends on the data, so the space is built once the data is loaded.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from aeservice.config import TrainConfig
from aeservice.errors import UserError
from aeservice.models import MODELS, Searched

__all__ = ["Param", "OPTION_PARAMS", "searched_names", "search_space", "suggest", "apply_params",
           "default_params", "parse_ranges", "describe"]


@dataclass(frozen=True)
class Param:
    """One searched number: its default range, scale and the values it may take at all."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False
    minimum: float = 0.0  # smallest value a narrowed range may reach
    below_one: bool = False  # a rate: must stay under 1

    @classmethod
    def of(cls, spec: Searched) -> "Param":
        return cls(**spec._asdict())

    def suggest(self, trial) -> Any:
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def text(self) -> str:
        fmt = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        return f"{fmt(self.low)}..{fmt(self.high)}" + (" log" if self.log else "")


def searched_names() -> tuple[str, ...]:
    """Every name some registered kind searches, in registry order (what --range accepts)."""
    return tuple(dict.fromkeys(spec.name for cls in MODELS.values() for spec in cls.search))


# CLI option (ModelConfig field) -> the searched names it fixes when given explicitly.
OPTION_PARAMS: dict[str, tuple[str, ...]] = {
    "latent_dim": ("latent_dim",),
    "hidden": ("hidden_width", "hidden_depth"),
    "learning_rate": ("learning_rate",),
    "weight_decay": ("weight_decay",),
    "beta": ("beta",),
    "l1": ("l1",),
    "sparsity_weight": ("sparsity_weight",),
    "sparsity_target": ("sparsity_target",),
}


def search_space(kind: str, n_features: int, fixed: Sequence[str] = (),
                 ranges: Mapping[str, tuple[float, float]] | None = None,
                 n_rows: int | None = None) -> dict[str, Param]:
    """The params searched for `kind` on data with `n_features`, minus `fixed` options, with `ranges` applied.

    `fixed` holds option names (`latent_dim`, `hidden`, `beta`, ...); `ranges` maps searched names
    to (low, high). latent_dim's default top is below the feature count (at least 1) and at most
    the kind's `max_latent_dim` for `n_rows` training rows (None: the rows set no bound). Raises UserError
    for a range on a name the kind does not search, that is fixed, or that passes that bound.
    """
    if kind not in MODELS:
        raise UserError(f"no search space for model kind {kind!r}; known: {', '.join(MODELS)}")
    model = MODELS[kind]
    unknown = [name for name in fixed if name not in OPTION_PARAMS]
    if unknown:
        raise UserError(f"cannot fix {', '.join(unknown)}: tune searches only {', '.join(OPTION_PARAMS)}")
    removed = {p for name in fixed for p in OPTION_PARAMS[name]}
    bound = model.max_latent_dim(n_features, sys.maxsize if n_rows is None else n_rows)
    searched = [spec.name for spec in model.search]
    space: dict[str, Param] = {}
    for spec in model.search:
        param = Param.of(spec)
        if spec.name == "latent_dim":
            # a code as wide as the rows is no compression: PCA is exact there and wins every study
            high = max(1, int(min(spec.high, n_features - 1, spec.high if bound is None else bound)))
            param = dataclasses.replace(param, high=high, log=high >= 8)
        if spec.name not in removed:
            space[spec.name] = param
    for name, (low, high) in (ranges or {}).items():
        if name not in searched:
            raise UserError(f"--range {name}: model {kind} does not search {name}; "
                            f"it searches {', '.join(searched)}")
        if name in removed:
            option = next(o for o, ps in OPTION_PARAMS.items() if name in ps)
            raise UserError(f"--range {name}: {name} is fixed by --{option.replace('_', '-')}; give one or the other")
        space[name] = _narrow(space[name], low, high)
    if bound is not None and "latent_dim" in space and space["latent_dim"].high > bound:
        raise UserError(f"--range latent_dim: {kind} can have at most {bound} components on this data, "
                        f"got up to {int(space['latent_dim'].high)}")
    return space


def _narrow(param: Param, low: float, high: float) -> Param:
    name = param.name
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise UserError(f"--range {name}: need finite LO <= HI, got {low:g},{high:g}")
    if param.integer and (low != int(low) or high != int(high)):
        raise UserError(f"--range {name}: {name} takes whole numbers, got {low:g},{high:g}")
    if low < param.minimum or (param.log and low <= 0):
        need = f"at least {param.minimum:g}" if param.minimum > 0 else ("positive" if param.log else "non-negative")
        raise UserError(f"--range {name}: values must be {need}, got {low:g}")
    if param.below_one and high >= 1:
        raise UserError(f"--range {name}: values must be below 1, got {high:g}")
    return dataclasses.replace(param, low=low, high=high)


def suggest(trial, space: Mapping[str, Param]) -> dict[str, Any]:
    """Ask the trial for every searched value, in table order (so samplers see a stable space)."""
    return {name: param.suggest(trial) for name, param in space.items()}


def default_params(config: TrainConfig, space: Mapping[str, Param],
                   auto_hidden: tuple[int, ...] = ()) -> dict[str, Any]:
    """The config's own values as a first trial, clipped into the searched ranges.

    Enqueued as trial 0 of a new study, so a small budget never ends worse than `train` with the
    same settings (5 random-ish TPE start-up trials can all land far from good defaults).
    `auto_hidden` is what hidden "auto" resolves to on the study's data.
    """
    m = config.model
    hidden = m.hidden if m.hidden is not None else auto_hidden
    own = {"hidden_width": hidden[0] if hidden else None, "hidden_depth": len(hidden) or None,
           **{name: getattr(m, name, None) for name in space if name not in ("hidden_width", "hidden_depth")}}
    values: dict[str, Any] = {}
    for name, param in space.items():
        value = own.get(name)
        if value is None:
            continue  # e.g. latent_dim "auto": let the sampler choose
        value = min(max(value, param.low), param.high)
        values[name] = int(round(value)) if param.integer else float(value)
    return values


def apply_params(config: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """A copy of `config` with searched values put in; hidden widths halve layer by layer."""
    changes = {k: v for k, v in values.items() if k not in ("hidden_width", "hidden_depth")}
    if "hidden_width" in values or "hidden_depth" in values:
        given = config.model.hidden if config.model.hidden is not None else (64, 32)  # auto: two layers
        width = int(values.get("hidden_width", given[0] if given else 64))
        depth = int(values.get("hidden_depth", len(given) or 1))
        changes["hidden"] = tuple(max(4, width >> i) for i in range(depth))
    model = dataclasses.replace(config.model, **changes)
    return dataclasses.replace(config, model=model)


def parse_ranges(texts: Sequence[str]) -> dict[str, tuple[float, float]]:
    """['latent_dim=2,8', 'beta=0.1,1;l1=1e-5,1e-3'] -> {'latent_dim': (2, 8), ...}.

    Several ranges may share one text separated by ';' (handy for MLproject parameters);
    'none' or '' mean no range. Names may use dashes (learning-rate).
    """
    out: dict[str, tuple[float, float]] = {}
    for text in texts:
        for part in str(text).split(";"):
            part = part.strip()
            if part.lower() in ("", "none"):
                continue
            name, sep, bounds = part.partition("=")
            pieces = bounds.split(",")
            if not sep or len(pieces) != 2:
                raise UserError(f"--range needs NAME=LO,HI such as latent_dim=2,8, got {part!r}")
            try:
                low, high = float(pieces[0]), float(pieces[1])
            except ValueError:
                raise UserError(f"--range {name.strip()}: LO and HI must be numbers, got {bounds!r}") from None
            name = name.strip().replace("-", "_")
            if name not in searched_names():
                raise UserError(f"--range: unknown name {name!r}; searched names are {', '.join(searched_names())}")
            out[name] = (low, high)
    return out


def describe(space: Mapping[str, Param]) -> dict[str, str]:
    """name -> '1..32 log', for logging the searched ranges as parameters."""
    return {name: param.text() for name, param in space.items()}
