"""Frozen inference: a Keras model's encoder and decoder, their numpy plans, and their files.

`FrozenNets` is the one object a `KerasAutoencoder` holds its nets in. Each net is held as a
Keras model (built or fitted here), or as the bytes of the .keras file it was loaded from, which
are deserialized on first need only; and it may have a numpy plan (aeservice.models.plan), used
instead of a Keras call once the plan reproduced the net on a probe batch. A plan is saved with
that probe and the net's answers on it, so a loaded model checks its plans without Keras: a
model loaded with its saved plans answers without importing Keras or its backend (the model
server and `train`'s tracking worker; about 1 s and 190 MB per process).

The files, in the model directory beside meta.json and state.npz:

    encoder.keras, decoder.keras   the nets, as Keras saves them
    plans.npz                      the checked plans (absent if no net has one); for each
                                   planned net N ("encoder", "decoder") the keys
        N_layout        JSON text: {"input": name, "outputs": [names],
                                    "steps": [[name, source, activation, has_bias], ...],
                                    "ops": {name: [op, params]}}  (ops: only non-Dense steps)
        N_<i>_kernel    step i's kernel (float32; none for reshape, flatten, crop, or a
                        "top_k:<k>" activation); N_<i>_bias its bias, if has_bias
        N_probe         the probe batch the plan was checked on
        N_expected_<j>  the Keras net's j-th output on the probe

Every model saved with plans has exactly these keys; models saved before plans were saved have
no plans.npz, and their nets are deserialized and planned at load.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from aeservice.models.plan import PLAN_OPS, DensePlan, activation_function, dense_plan

if TYPE_CHECKING:
    import keras

__all__ = ["FrozenNets", "NETS", "infer"]

NETS = ("encoder", "decoder")
_FILES = {name: f"{name}.keras" for name in NETS}
_PLANS_FILE = "plans.npz"
_PROBE_ROWS = 16


def infer(net: keras.Model, x: np.ndarray):
    """One inference call of a Keras net on a numpy batch; float64 numpy out (a list if several).

    `predict_on_batch` runs the step Keras compiles once per backend (a tf.function on
    TensorFlow): measured 0.4 ms per call for 1 or 1000 digits rows against 1.3 ms for an eager
    `net(x)` and 85+ ms for `predict`, whose batching loop and callbacks cost milliseconds.
    Inputs are always float32, so the compiled step is traced for one dtype only.
    """
    return _as_float64(net.predict_on_batch(np.asarray(x, dtype="float32")))


class FrozenNets:
    """The encoder and decoder of one model: Keras nets or their saved files, and checked plans.

    `set` holds a new Keras net (and forgets any plan or file of the one it replaces); `keras_net`
    is the Keras net, deserialized from its file on first call; `run` answers from the plan where
    there is one, else from one compiled Keras call; `freeze` makes the plans; `save` and `load`
    write and read the files.
    """

    def __init__(self) -> None:
        self._keras: dict[str, keras.Model] = {}
        self._files: dict[str, bytes] = {}  # .keras files as read, for nets not deserialized since
        self._plans: dict[str, DensePlan] = {}
        self._checks: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}  # the probe, the net's answers

    # ---- the nets ---------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self._keras or name in self._files

    def set(self, name: str, net: keras.Model) -> None:
        """Hold `net` as this name's net: a plan or file of the net it replaces no longer applies."""
        _check_name(name)
        self._keras[name] = net
        self._files.pop(name, None)
        self._plans.pop(name, None)
        self._checks.pop(name, None)

    def keras_net(self, name: str) -> keras.Model:
        """The Keras net (deserialized from its saved file on first need); KeyError if there is none."""
        if name not in self._keras:
            if name not in self._files:
                raise _missing(name)
            self._keras[name] = _deserialize(self._files[name])
            del self._files[name]  # the Keras net is the net now (and what `save` writes)
        return self._keras[name]

    def is_deserialized(self, name: str) -> bool:
        """Whether the net is held as a Keras model (built, fitted, or loaded and asked for)."""
        return name in self._keras

    # ---- inference ----------------------------------------------------------------------------
    def run(self, name: str, x: np.ndarray):
        """The net on a numpy batch, float64 out (a list for several outputs): its plan, or Keras."""
        plan = self._plans.get(name)
        return _as_float64(plan(x)) if plan is not None else infer(self.keras_net(name), x)

    def plan(self, name: str) -> DensePlan | None:
        return self._plans.get(name)

    def planned(self) -> dict[str, bool]:
        return {name: name in self._plans for name in NETS}

    def freeze(self) -> dict[str, bool]:
        """For inference only: run each net as a numpy plan where one reproduces it.

        A plan is kept only if it matches the Keras net on a probe batch; other nets keep the
        compiled Keras call. Nets held as Keras models are planned afresh (the weights are copied
        now); a net still held as its file keeps the plan it was saved with, which `load`
        checked, so a loaded model freezes without Keras. Which nets have a plan, by name.
        """
        for index, name in enumerate(NETS):
            if name in self._plans and not self.is_deserialized(name):
                continue
            self._plans.pop(name, None)
            self._checks.pop(name, None)
            if not self.has(name):
                continue
            net = self.keras_net(name)
            probe = np.random.default_rng(index).standard_normal((_PROBE_ROWS, int(net.inputs[0].shape[-1])))
            plan, expected = dense_plan(net), _as_list(infer(net, probe))
            if plan is not None and _same(_as_list(_as_float64(plan(probe))), expected):
                self._plans[name], self._checks[name] = plan, (probe, expected)
        return self.planned()

    def unfreeze(self) -> None:
        """Drop the plans: every call goes through the Keras nets (deserialized as needed)."""
        self._plans, self._checks = {}, {}

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """encoder.keras and decoder.keras, and plans.npz with the checked plans (see the module)."""
        path = Path(path)
        for name, file in _FILES.items():
            if name in self._keras:
                self._keras[name].save(path / file)
            elif name in self._files:  # loaded, and never deserialized since: the file as it was read
                (path / file).write_bytes(self._files[name])
            else:
                raise _missing(name)
        arrays: dict[str, np.ndarray] = {}
        for name, (probe, expected) in self._checks.items():
            arrays.update(_plan_arrays(self._plans[name], name))
            arrays[f"{name}_probe"] = probe
            for i, out in enumerate(expected):
                arrays[f"{name}_expected_{i}"] = out
        if arrays:
            np.savez(path / _PLANS_FILE, **arrays)
        else:  # no plan: none of an earlier save in this directory may answer for these nets
            (path / _PLANS_FILE).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> "FrozenNets":
        """The nets of a model directory, as file bytes, with the saved plans that pass their check.

        Deserializing the two .keras files and checking fresh plans against them took 0.15 s of
        each load: of MLflow's check of every logged model, and of each server's start-up. The
        files are read now and deserialized on first need only: none, if every plan passes.
        """
        path = Path(path)
        nets = cls()
        nets._files = {name: (path / file).read_bytes() for name, file in _FILES.items()}
        if (path / _PLANS_FILE).is_file():  # models saved before plans were saved have none
            with np.load(path / _PLANS_FILE, allow_pickle=False) as saved:
                arrays = {k: saved[k] for k in saved.files}
            for name in NETS:
                plan, check = _checked_plan(arrays, name)
                if plan is not None:
                    nets._plans[name], nets._checks[name] = plan, check
        return nets


# ---- plans.npz: one net's arrays (see the module docstring) ------------------------------------------
def _plan_arrays(plan: DensePlan, name: str) -> dict[str, np.ndarray]:
    """The plan as named arrays: its layout as JSON text, then the weights."""
    layout = {"input": plan.input_name, "outputs": plan.outputs,
              "steps": [[step, source, activation, bias is not None]
                        for step, source, _, bias, activation in plan.steps]}
    if plan.ops:
        layout["ops"] = {step: [op, params] for step, (op, params) in plan.ops.items()}
    arrays = {f"{name}_layout": np.array(json.dumps(layout))}
    for i, (_, _, kernel, bias, _) in enumerate(plan.steps):
        if kernel is not None:
            arrays[f"{name}_{i}_kernel"] = kernel
        if bias is not None:
            arrays[f"{name}_{i}_bias"] = bias
    return arrays


def _plan_from(arrays: Mapping[str, np.ndarray], name: str) -> DensePlan | None:
    """The inverse of `_plan_arrays`; None if arrays are missing or name an unknown activation."""
    try:
        layout = json.loads(str(arrays[f"{name}_layout"]))
        ops = {step: (op, params) for step, (op, params) in layout.get("ops", {}).items()}
        steps = []
        for i, (step, source, activation, has_bias) in enumerate(layout["steps"]):
            if activation_function(activation) is None or ops.get(step, ("dense",))[0] not in PLAN_OPS:
                return None
            bias = np.asarray(arrays[f"{name}_{i}_bias"], dtype=np.float32) if has_bias else None
            moves = ops.get(step, ("dense",))[0] in ("reshape", "flatten", "crop") or activation.startswith("top_k:")
            kernel = None if moves else np.asarray(arrays[f"{name}_{i}_kernel"], dtype=np.float32)
            steps.append((step, source, kernel, bias, activation))
        return DensePlan(layout["input"], steps, list(layout["outputs"]), ops)
    except (KeyError, ValueError, TypeError):
        return None


def _checked_plan(arrays: Mapping[str, np.ndarray], name: str):
    """(plan, (probe, expected)) if the saved plan still gives the saved Keras answers, else (None, None)."""
    plan = _plan_from(arrays, name)
    if plan is None or f"{name}_probe" not in arrays:
        return None, None
    prefix = f"{name}_expected_"
    keys = sorted((k for k in arrays if k.startswith(prefix) and k[len(prefix):].isdigit()),
                  key=lambda k: int(k[len(prefix):]))
    probe, expected = arrays[f"{name}_probe"], [arrays[k] for k in keys]
    if not _same(_as_list(_as_float64(plan(probe))), expected):
        return None, None
    return plan, (probe, expected)


# ---- helpers ----------------------------------------------------------------------------------------
def _as_float64(out):
    if isinstance(out, (list, tuple)):
        return [np.asarray(o, dtype=np.float64) for o in out]
    return np.asarray(out, dtype=np.float64)


def _as_list(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Plan and net agree (float32 rounding apart)."""
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, rtol=1e-3, atol=1e-4) for x, y in zip(a, b))


def _check_name(name: str) -> None:
    if name not in NETS:
        raise KeyError(f"no net named {name!r}; the nets are {', '.join(NETS)}")


def _missing(name: str) -> KeyError:
    _check_name(name)
    return KeyError(f"no {name} net: the model is neither fitted nor loaded")


def _deserialize(data: bytes) -> keras.Model:
    """A Keras net from the bytes of its .keras file (Keras is imported here, on first need)."""
    from aeservice.models.keras_base import keras_module  # Keras with aeservice's layers registered

    keras = keras_module()
    with tempfile.TemporaryDirectory(prefix="aeservice-") as tmp:
        file = Path(tmp) / "net.keras"
        file.write_bytes(data)
        return keras.saving.load_model(file, compile=False)
