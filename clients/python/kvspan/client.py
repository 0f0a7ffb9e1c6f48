"""A small hand-written layer over the generated ``kvspan.v1.Serving`` stubs.

``Client(target).generate(prompt)`` streams text pieces; ``generate_full`` returns a
``Result`` with the usage the server reports (cached prompt tokens included); sessions keep a
multi-turn history on the server; every gRPC error is raised as a ``KvspanError`` subclass
carrying the gRPC status code and message.

Thread safety: a ``Client`` (one gRPC channel) may be shared by threads; a ``Generation`` or
``Session`` belongs to one thread at a time.
"""
import dataclasses
from typing import Iterable, List, Optional, Sequence, Union

import grpc

from kvspan.v1 import serving_pb2, serving_pb2_grpc

Prompt = Union[str, Sequence[int]]


class KvspanError(Exception):
    """A failed call: ``code`` is the ``grpc.StatusCode``, ``message`` the server's text."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidArgument(KvspanError):
    """A bad request: policy string (the message names the position), prompt, sampling value."""


class NotFound(KvspanError):
    """An unknown or expired session."""


class ResourceExhausted(KvspanError):
    """The request can never fit the server's KV budget, or its queue is full."""


class Unavailable(KvspanError):
    """The server is unreachable or stopping."""


class DeadlineExceeded(KvspanError):
    """The call's timeout passed."""


class Cancelled(KvspanError):
    """The call was cancelled."""


class FailedPrecondition(KvspanError):
    """The session already has a turn in progress."""


_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def _error(e: grpc.RpcError) -> KvspanError:
    """The exception for a failed call (``KvspanError`` itself for unmapped codes)."""
    code, message = e.code(), e.details() or ""
    return _ERRORS.get(code, KvspanError)(code, message)


@dataclasses.dataclass
class Result:
    """Everything one Generate call streamed.

    ``started`` and ``finished`` are the server's ``Started`` and ``Finished`` messages
    (proto/kvspan/v1/serving.proto); the properties are shortcuts into them.
    """

    text: str
    ids: List[int]
    started: serving_pb2.Started
    finished: serving_pb2.Finished

    @property
    def request_id(self) -> str:
        return self.started.request_id

    @property
    def session_id(self) -> str:
        return self.started.session_id

    @property
    def policy(self) -> str:
        """The canonical policy that served the request."""
        return self.started.policy

    @property
    def prompt_tokens(self) -> int:
        return self.finished.usage.prompt_tokens

    @property
    def cached_prompt_tokens(self) -> int:
        """Prompt tokens not computed: loaded from the cache store or reused resident."""
        return self.finished.usage.cached_prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.finished.usage.completion_tokens

    @property
    def finish_reason(self) -> str:
        """One of "stop_token", "stop_string", "max_tokens", "context_full"."""
        name = serving_pb2.FinishReason.Name(self.finished.finish_reason)
        return name[len("FINISH_REASON_"):].lower()

    @property
    def kv_bytes_per_token(self) -> float:
        return self.finished.kv_bytes_per_token


class Generation:
    """One streaming Generate call: an iterator of text pieces as they become final.

    ``started`` is set once the first piece (or the end) has been read, ``finished`` at the
    end; ``text`` and ``ids`` grow as pieces arrive. Errors are raised from iteration as
    ``KvspanError``. Leaving early cancels the call on the server: ``close()``, a ``with``
    block, or dropping the object (a ``for`` loop over ``client.generate(...)`` that breaks).
    """

    def __init__(self, call):
        self._call = call
        self._closed = False
        self.started: Optional[serving_pb2.Started] = None
        self.finished: Optional[serving_pb2.Finished] = None
        self.text = ""
        self.ids: List[int] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        while not self._closed:
            try:
                response = next(self._call)
            except StopIteration:
                self._closed = True
                break
            except grpc.RpcError as e:
                self._closed = True
                raise _error(e) from None
            part = response.WhichOneof("part")
            if part == "started":
                self.started = response.started
            elif part == "tokens":
                self.ids.extend(response.tokens.ids)
                self.text += response.tokens.text
                if response.tokens.text:
                    return response.tokens.text
            elif part == "finished":
                self.finished = response.finished
        raise StopIteration

    def close(self) -> None:
        """Cancels the call if it is still running (the server frees its memory at once)."""
        if not self._closed:
            self._closed = True
            self._call.cancel()

    def result(self) -> Result:
        """Reads the rest of the stream and returns the whole ``Result``."""
        for _ in self:
            pass
        if self.started is None or self.finished is None:
            raise KvspanError(grpc.StatusCode.INTERNAL, "the stream ended without Started/Finished")
        return Result(self.text, self.ids, self.started, self.finished)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class Client:
    """A connection to a kvspan serving node at ``target`` ("host:port"), without TLS.

    ``timeout`` (seconds, None = none) bounds every call: queueing and generation for
    Generate (``DeadlineExceeded``). Use as a context manager, or ``close()`` it.
    """

    def __init__(self, target: str, timeout: Optional[float] = None):
        self._channel = grpc.insecure_channel(target)
        self._stub = serving_pb2_grpc.ServingStub(self._channel)
        self._timeout = timeout

    def generate(
        self,
        prompt: Prompt,
        *,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        top_k: Optional[int] = None,
        seed: Optional[int] = None,
        stop: Union[None, str, Iterable[str]] = None,
        policy: Optional[str] = None,
        session: Union[None, str, "Session"] = None,
        tenant: Optional[str] = None,
        ignore_eos: bool = False,
    ) -> Generation:
        """Starts a streaming generation and returns it as an iterator of text pieces.

        ``prompt`` is text (tokenized by the server) or a list of token ids (taken as they
        are); with a session it is the new turn. Unset (None) values take the server's
        defaults: max_tokens 128, temperature 1.0 (0 = greedy), top_p 1.0, top_k 0 (no limit),
        seed 0, the server's policy. ``stop`` is one string or several. ``session`` is a
        ``Session`` or a session id. Nothing is raised here: errors (``InvalidArgument``,
        ``NotFound``, ...) come from iterating.
        """
        request = serving_pb2.GenerateRequest(ignore_eos=ignore_eos)
        if isinstance(prompt, str):
            request.text = prompt
        else:
            request.token_ids.ids.extend(prompt)
        if max_tokens is not None:
            request.max_tokens = max_tokens
        if temperature is not None:
            request.sampling.temperature = temperature
        if top_p is not None:
            request.sampling.top_p = top_p
        if top_k is not None:
            request.sampling.top_k = top_k
        if seed is not None:
            request.sampling.seed = seed
        if stop is not None:
            request.stop.extend([stop] if isinstance(stop, str) else stop)
        if policy:
            request.policy = policy
        if session is not None:
            request.session_id = session.id if isinstance(session, Session) else session
        if tenant:
            request.tenant = tenant
        return Generation(self._stub.Generate(request, timeout=self._timeout))

    def generate_full(self, prompt: Prompt, **kwargs) -> Result:
        """``generate`` run to its end: the whole text, ids and usage. Raises ``KvspanError``."""
        return self.generate(prompt, **kwargs).result()

    def open_session(self, policy: Optional[str] = None, idle_timeout_ms: int = 0,
                     tenant: Optional[str] = None) -> "Session":
        """Opens a multi-turn session; its policy is fixed for its life.

        ``idle_timeout_ms`` 0 takes the server's default. Raises ``InvalidArgument`` for a bad
        policy.
        """
        request = serving_pb2.OpenSessionRequest(idle_timeout_ms=idle_timeout_ms, policy=policy or "",
                                                 tenant=tenant or "")
        try:
            response = self._stub.OpenSession(request, timeout=self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None
        return Session(self, response.session_id, response.policy, response.idle_timeout_ms)

    def close_session(self, session_id: str) -> None:
        """Forgets a session and frees its resident cache. Raises ``NotFound`` if unknown."""
        try:
            self._stub.CloseSession(serving_pb2.CloseSessionRequest(session_id=session_id),
                                    timeout=self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    def server_info(self) -> serving_pb2.ServerInfoResponse:
        """The server's facts and load (model, default policy, KV bytes in use, running sequences)."""
        try:
            return self._stub.ServerInfo(serving_pb2.ServerInfoRequest(), timeout=self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Session:
    """A multi-turn session: each turn's prompt is the history plus the new turn, and the
    history's KV cache is reused (resident on the server, or from its cache store).

    One turn at a time (``FailedPrecondition`` otherwise). ``close()`` or a ``with`` block
    forgets it on the server.
    """

    def __init__(self, client: Client, session_id: str, policy: str, idle_timeout_ms: int):
        self._client = client
        self._closed = False
        self.id = session_id
        self.policy = policy  # canonical
        self.idle_timeout_ms = idle_timeout_ms

    def generate(self, prompt: Prompt, **kwargs) -> Generation:
        """The next turn, streamed; the keywords of ``Client.generate`` except ``session``."""
        return self._client.generate(prompt, session=self.id, **kwargs)

    def generate_full(self, prompt: Prompt, **kwargs) -> Result:
        """The next turn run to its end."""
        return self._client.generate_full(prompt, session=self.id, **kwargs)

    def close(self) -> None:
        """Forgets the session on the server (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            self._client.close_session(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
