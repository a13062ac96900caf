"""Run registered ONNX models with onnxruntime and return calibrated emotion probabilities.

Every registry entry gets its own `InferenceSession`, checked before it may serve: the file
exists, its SHA-256 matches the registry (the export step recorded it, so a stale or
tampered file is caught), it has one float NHWC input of the registered size with a dynamic
batch dimension, and one output as wide as the label list, whose labels must be exactly the
seven canonical emotions in any order. A model that fails is unusable on its own, with its
reason logged and shown by /readyz and /models; the others keep serving.

Outputs are mapped to canonical `EMOTIONS` order and temperature-scaled as the registry says,
so callers always get calibrated probabilities in one column order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.files import sha256_file
from app.int8_portability import cpu_flags, overflows_here, requantize_hint
from app.labels import EMOTIONS
from app.preprocess import prepare_batch
from app.registry import ModelEntry, Registry, load_registry
from app.settings import Settings

log = logging.getLogger("emotion.inference")


class ModelLoadError(Exception):
    """Why a registered model cannot serve."""


class InferenceError(Exception):
    """A model ran but its output cannot be used (or onnxruntime failed)."""


def label_columns(labels: list[str]) -> list[int]:
    """For each canonical emotion, the model output column that holds it."""
    unknown = [x for x in labels if x not in EMOTIONS]
    missing = [e for e in EMOTIONS if e not in labels]
    if unknown or missing or len(labels) != len(EMOTIONS):
        raise ModelLoadError(
            f"labels must be the {len(EMOTIONS)} emotions {list(EMOTIONS)} in any order, each "
            f"once; unknown: {unknown or 'none'}, missing: {missing or 'none'}"
        )
    return [labels.index(e) for e in EMOTIONS]


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by each row's maximum so exp cannot overflow."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def cpu_session(
    path: Path, threads: int | None = None, *, spinning: bool = True
) -> ort.InferenceSession:
    """An onnxruntime session on the CPU provider: the one place sessions are built.

    `threads` intra-op threads and one inter-op thread when given (the service and the latency
    benchmarks), else onnxruntime's own choice (offline scoring, every core). `spinning=False`
    lets idle intra-op threads sleep, as the service needs when the same cores also decode and
    detect for other requests.
    """
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def to_probabilities(raw: np.ndarray, entry: ModelEntry) -> np.ndarray:
    """Raw model output (N, K) to calibrated probabilities in float64, rows summing to 1.

    Export writes probabilities with the temperature in the graph; the registry schema also
    admits logits and an untempered softmax (a model exported elsewhere), so those stay.
    """
    x = raw.astype(np.float64, copy=False)
    if entry.output == "logits":
        p = softmax(x / entry.temperature)
    elif not entry.temperature_in_graph and entry.temperature != 1.0:
        # softmax(log p / T) is p ** (1 / T), renormalized: re-temper an untempered softmax.
        p = softmax(np.log(np.clip(x, 1e-12, None)) / entry.temperature)
    else:
        p = np.clip(x, 0.0, None)
        total = p.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise InferenceError("model returned an all-zero probability row")
        p = p / total
    if not np.all(np.isfinite(p)):
        raise InferenceError("model returned non-finite values")
    return p


def _input_shape_mismatch(shape: list, entry: ModelEntry) -> str | None:
    """Why an ONNX input shape does not fit the entry, or None when it does."""
    want = [entry.input.height, entry.input.width, entry.input.channels]
    if len(shape) != 4:
        return f"input has rank {len(shape)}, expected 4 (NHWC)"
    if isinstance(shape[0], int) and shape[0] > 0:
        return f"input batch dimension is fixed at {shape[0]}; it must be dynamic"
    if [d if isinstance(d, int) else None for d in shape[1:]] != want:
        dims = ", ".join(map(str, want))
        return f"input shape {shape} does not match the registry's [batch, {dims}]"
    return None


class OnnxModel:
    """One registered model, validated and warmed up, safe to call from several threads."""

    def __init__(
        self, entry: ModelEntry, models_dir: Path, threads: int = 1, max_batch: int = 256
    ) -> None:
        self.entry = entry
        self.spec = entry.input.spec()  # how faces are prepared for this model
        self.path = Path(models_dir) / entry.file
        self.max_batch = max_batch
        self.calls = 0
        self._calls_lock = threading.Lock()
        if not self.path.is_file():
            raise ModelLoadError(f"file {self.path} does not exist")
        digest = sha256_file(self.path)
        if digest != entry.sha256:
            raise ModelLoadError(
                f"sha256 of {self.path} is {digest}, the registry expects {entry.sha256}"
            )
        self.columns = label_columns(entry.labels)
        try:
            # Idle intra-op threads sleep instead of spinning: the same cores decode and detect
            # for other requests, and spinning there costs batch-1 latency (docs/benchmarks.md).
            self.session = cpu_session(self.path, threads, spinning=False)
        except Exception as e:
            raise ModelLoadError(f"onnxruntime cannot load {self.path}: {e}") from e
        self._check_signature()
        self._warm_up()

    def _check_signature(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"model has {len(inputs)} inputs, expected 1")
        if inputs[0].type != "tensor(float)":
            raise ModelLoadError(f"input type is {inputs[0].type}, expected tensor(float)")
        if reason := _input_shape_mismatch(list(inputs[0].shape), self.entry):
            raise ModelLoadError(reason)
        out_shape = list(outputs[0].shape)
        width = out_shape[-1] if out_shape else None
        if len(out_shape) != 2 or width != len(self.entry.labels):
            raise ModelLoadError(
                f"output shape {out_shape} is not [batch, {len(self.entry.labels)}] "
                f"for {len(self.entry.labels)} labels"
            )
        self.input_name = inputs[0].name

    def _warm_up(self) -> None:
        """Run one mid-gray face so the first request does not pay for allocation."""
        face = np.full((self.spec.height, self.spec.width, 3), 128, dtype=np.uint8)
        try:
            self.predict(prepare_batch([face], self.spec))
        except Exception as e:
            raise ModelLoadError(f"warm-up inference failed: {e}") from e
        self.calls = 0

    def predict(
        self, batch: np.ndarray, observe: Callable[[float], None] | None = None
    ) -> np.ndarray:
        """Probabilities (N, 7) in `EMOTIONS` order for a prepared NHWC float32 batch.

        Large batches run in chunks of `max_batch`; `observe` receives each call's seconds.
        """
        if len(batch) == 0:
            return np.zeros((0, len(EMOTIONS)), dtype=np.float64)
        parts = []
        for start in range(0, len(batch), self.max_batch):
            chunk = np.ascontiguousarray(batch[start : start + self.max_batch], dtype=np.float32)
            t0 = time.perf_counter()
            try:
                raw = self.session.run(None, {self.input_name: chunk})[0]
            except Exception as e:
                raise InferenceError(f"onnxruntime failed: {e}") from e
            finally:
                with self._calls_lock:
                    self.calls += 1
            if observe is not None:
                observe(time.perf_counter() - t0)
            raw = np.asarray(raw)
            if raw.shape != (len(chunk), len(self.entry.labels)):
                raise InferenceError(f"output shape {raw.shape} for a batch of {len(chunk)}")
            parts.append(to_probabilities(raw, self.entry)[:, self.columns])
        return np.concatenate(parts)


@dataclass
class ModelState:
    """A registry entry and either its loaded model or why it could not be loaded."""

    entry: ModelEntry
    model: OnnxModel | None = None
    error: str | None = None


class ModelCatalog:
    """Every model of the registry, loaded at start-up; unusable ones keep their reason."""

    def __init__(self, settings: Settings) -> None:
        self.models_dir = Path(settings.models_dir)
        self.states: dict[str, ModelState] = {}
        self.registry_error: str | None = None
        self.default_name: str | None = None
        try:
            registry = load_registry(self.models_dir)
        except FileNotFoundError:
            self.registry_error = f"no registry: {self.models_dir / 'registry.json'} does not exist"
        except Exception as e:
            self.registry_error = f"invalid registry {self.models_dir / 'registry.json'}: {e}"
        if self.registry_error:
            log.error("%s", self.registry_error)
            return
        self._load_all(registry, settings)

    def _load_all(self, registry: Registry, settings: Settings) -> None:
        if not registry.models:
            self.registry_error = f"{self.models_dir / 'registry.json'} lists no models"
            log.error("%s", self.registry_error)
        flags = cpu_flags()
        for entry in registry.models:
            state = ModelState(entry)
            try:
                state.model = OnnxModel(
                    entry, self.models_dir, settings.inference_threads, settings.max_inference_batch
                )
                log.info(
                    "model %s %s loaded from %s and warmed up",
                    entry.name,
                    entry.version,
                    state.model.path,
                )
                if overflows_here(entry, flags):
                    log.warning("%s", requantize_hint(entry))
            except ModelLoadError as e:
                state.error = str(e)
                log.error("model %s %s is unusable: %s", entry.name, entry.version, e)
            self.states[entry.name] = state
        default = settings.default_model or (registry.default.name if registry.default else None)
        if default is not None and default not in self.states:
            self.registry_error = f"default model {default!r} is not in the registry"
            log.error("%s", self.registry_error)
        else:
            self.default_name = default

    def problems(self) -> list[str]:
        """Reasons the catalog is not fully ready (empty when every model serves)."""
        reasons = [self.registry_error] if self.registry_error else []
        reasons += [f"model {name}: {s.error}" for name, s in self.states.items() if s.error]
        return reasons
