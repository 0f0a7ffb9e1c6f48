"""kvspan: a Python client for a kvspan serving node (``kvspan.v1.Serving`` over gRPC).

The generated stubs live in ``kvspan.v1`` (``serving_pb2``, ``serving_pb2_grpc``, ...). They are
generated at build time into ``build/clients/python/kvspan/v1/``, not into this folder, so
put both folders on the path: ``PYTHONPATH=build/clients/python:clients/python``.
"""
import pkgutil

# Lets the generated kvspan/v1 in the build tree join this package.
__path__ = pkgutil.extend_path(__path__, __name__)

from kvspan.client import (  # noqa: E402  (after the path is extended)
    Cancelled,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    Generation,
    InvalidArgument,
    KvspanError,
    NotFound,
    ResourceExhausted,
    Result,
    Session,
    Unavailable,
)

__all__ = [
    "Cancelled", "Client", "DeadlineExceeded", "FailedPrecondition", "Generation",
    "InvalidArgument", "KvspanError", "NotFound", "ResourceExhausted", "Result", "Session",
    "Unavailable",
]
