"""Prometheus metrics, kept in a registry owned by one app instance.

A per-app `CollectorRegistry` (not prometheus-client's global one) lets tests build many
apps in one process without "duplicated timeseries" errors and keeps /metrics limited to
this service's own series. Routes are labelled by their template (`/predict`), never by the
raw path, so unknown URLs cannot blow up the label set; likewise a method outside the
standard set is labelled `other`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100)
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class Metrics:
    """Every series the service exports."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "emotion_http_requests_total",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "emotion_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.faces = Histogram(
            "emotion_faces_per_image",
            "Faces classified per successfully processed image",
            buckets=_FACE_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "emotion_inference_seconds",
            "Duration of one onnxruntime call (a whole batch)",
            ["model"],
            buckets=_INFERENCE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "emotion_predict_in_flight",
            "Predict requests being processed or queued",
            registry=r,
        )
        self.rejected = Counter(
            "emotion_predict_rejected_total",
            "Predict requests refused with 503 because max_in_flight was reached",
            registry=r,
        )
        self.image_errors = Counter(
            "emotion_image_errors_total",
            "Uploaded images that could not be processed (bad input or failed inference), "
            "by problem type",
            ["type"],
            registry=r,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
