"""The service's limits and batching settings (no web stack imported: the CLI reads its defaults for --help)."""
from __future__ import annotations

from dataclasses import dataclass

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import UsageError


@dataclass
class ServeLimits:
    max_upload_mb: float = 10.0  # whole request body
    max_files: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS  # one image
    max_request_pixels: int = 2 * DEFAULT_MAX_PIXELS  # all images of one request together: bounds the memory one request takes
    body_timeout_s: float = 10.0  # longest wait for the next piece of a request body
    header_timeout_s: float = 10.0  # longest wait for a request's headers to be complete
    max_connections: int = 64  # more concurrent connections get 503 at once
    max_batch: int = 8  # images per forward pass (dynamic batching); 16 answered /health slower under 32 clients (bench/serve_load.py)
    max_wait_ms: float = 10.0  # longest a first image waits for others to join its batch
    max_queue: int = 256  # images queued for inference; more get 503 + Retry-After

    def validate(self) -> "ServeLimits":
        ok = self.max_upload_mb > 0 and self.max_files >= 1 and self.max_pixels >= 1 and self.max_request_pixels >= self.max_pixels and self.body_timeout_s > 0 and self.header_timeout_s > 0 and self.max_connections >= 1
        ok = ok and self.max_batch >= 1 and self.max_wait_ms >= 0 and self.max_queue >= self.max_files
        if not ok:
            raise UsageError(f"service limits must be positive (max request pixels at least one image's, the queue at least one request's files): {self}")
        return self
