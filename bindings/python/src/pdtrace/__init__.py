"""pdtrace: Python binding of libpdtrace.

True end-to-end latency tracing for prefill/decode disaggregated LLM
serving, exported as OTLP. A thin mapping of the C API (see
include/pdtrace/*.h); the library does the work::

    import pdtrace

    with pdtrace.Tracer(service_name="my-proxy") as tracer:
        with tracer.request(inbound_traceparent) as req:
            req.set_connector("nixlv2")
            req.prefill_sent()
            hdrs = req.headers(pdtrace.Leg.PREFILL)   # send with the prefill
            ...
            req.prefill_done()
            req.decode_sent()
            req.tokens(1)                             # first token (F)
            ...
            bd = req.end()
            print(bd.true_ttft_ms)

One module per wrapped C object (tracer, request, span, errors); this
one only re-exports their public names.
"""
from ._common import (
    AttributeValue,
    Breakdown,
    Compression,
    Exporter,
    Leg,
    LogLevel,
    METRICS_CONTENT_TYPE,
    Mark,
    Mode,
    Protocol,
    SpanKind,
    Stats,
    StatusCode,
    Sampler,
    now_ns,
    parse_traceparent,
    status_str,
    version,
    version_number,
)
from .request import Request
from .span import Span
from .tracer import Tracer
from .errors import (
    BufferSizeError,
    ClosedError,
    FileIOError,
    InternalError,
    InvalidArgumentError,
    LimitError,
    NotSupportedError,
    OutOfMemoryError,
    ParseError,
    PdtraceError,
    RangeError,
    StateError,
    TimedOutError,
)



def _package_version() -> str:
    # The installed distribution's version (taken from
    # include/pdtrace/version.h when the package was built); the library's
    # own version when the package runs from a source tree.
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version
        try:
            return dist_version("pdtrace")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return version()


__version__ = _package_version()

__all__ = [
    "AttributeValue", "Breakdown", "Compression", "Exporter", "Leg",
    "LogLevel", "METRICS_CONTENT_TYPE", "Mark", "Mode", "Protocol", "Request", "Sampler",
    "Span", "SpanKind", "Stats", "StatusCode", "Tracer", "now_ns",
    "parse_traceparent", "status_str", "version", "version_number",
    "BufferSizeError", "ClosedError", "FileIOError", "InternalError",
    "InvalidArgumentError", "LimitError", "NotSupportedError",
    "OutOfMemoryError", "ParseError", "PdtraceError", "RangeError",
    "StateError", "TimedOutError",
]
