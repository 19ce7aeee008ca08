"""A typed, synchronous HTTP client of the coordinator (httpx).

``Client(base_url, key, admin_token=None)`` authenticates on first use with the challenge flow:
it posts its signing key, checks that the audience the challenge names is the origin of
``base_url`` (:func:`sdk.protocol.login.public_origin`: scheme, host and port; a coordinator
that asks for a signature for any other origin is refused with ``AuthError`` and nothing is
signed), signs ``b"sealroom-auth-v1\\n" + nonce + b"\\n" + origin`` with the party key, and
keeps the short-lived bearer token (renewed on expiry or a 401). :meth:`Client.close` revokes
the token it holds (``POST /v1/auth/logout``). The operator uses ``admin_token`` instead.

The coordinator is untrusted: this client only moves bytes. Callers verify what they get
(manifests, attestations, receipts, log) with :mod:`sdk.protocol.verify`. Server errors raise
the sealroom error class of their code (:func:`sdk.errors.error_for_code`); connection
failures raise :class:`sdk.errors.NetworkError`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast

import httpx

from sdk.errors import (
    AuthError,
    InputError,
    NetworkError,
    NotFoundError,
    SealroomError,
    error_for_code,
)
from sdk.protocol.dsse import Envelope
from sdk.protocol.keys import PartyKey
from sdk.protocol.login import auth_message, public_origin

CHUNK = 1024 * 1024
Progress = Callable[[int, int], None]
JSON = dict[str, Any]


@dataclass(frozen=True)
class ReceiptInfo:
    """A run's receipt with its log entry, inclusion proof and checkpoint (unverified)."""

    run_id: str
    receipt: Envelope
    log_index: int
    log_entry: Envelope
    inclusion_proof: list[bytes]
    checkpoint: Envelope


def _error(response: httpx.Response) -> SealroomError:
    try:
        body = response.json()
        detail = body["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        return NetworkError(f"coordinator answered HTTP {response.status_code} without an error body")
    return error_for_code(code, message)


def _envelope(value: Any) -> Envelope:
    return Envelope.from_dict(value)


class _FileStream:
    """Iterates a file in chunks, reporting progress (an httpx request body)."""

    def __init__(self, handle: BinaryIO, total: int, progress: Progress | None) -> None:
        self.handle, self.total, self.progress, self.done = handle, total, progress, 0

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.handle.read(CHUNK)
            if not chunk:
                return
            self.done += len(chunk)
            if self.progress is not None:
                self.progress(self.done, self.total)
            yield chunk


class Client:
    """HTTP client of one coordinator, as one party (``key``) or the operator."""

    def __init__(self, base_url: str, key: PartyKey | None = None, admin_token: str | None = None,
                 *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.admin_token = admin_token
        self._token: str | None = None
        self._token_expires = 0.0
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Revoke the party token this client holds (:meth:`logout`, best effort) and close the
        connection pool."""
        try:
            self.logout()
        except SealroomError:
            pass  # the token expires on its own; closing must not fail
        finally:
            self._http.close()

    def logout(self) -> None:
        """Revoke the party token this client holds, if any (``POST /v1/auth/logout``); the
        next request authenticates again."""
        token, self._token = self._token, None
        if token is None or self._http.is_closed:
            return
        try:
            response = self._http.post("/v1/auth/logout", timeout=5.0,
                                       headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach the coordinator ({type(exc).__name__})") from exc
        if response.status_code >= 400 and response.status_code != 401:
            raise _error(response)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if auth:
            headers["Authorization"] = f"Bearer {self._bearer()}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach the coordinator at {self.base_url} "
                               f"({type(exc).__name__})") from exc
        if response.status_code == 401 and auth and self.key is not None and self._token \
                and not isinstance(kwargs.get("content"), _FileStream):
            self._token = None  # expired or revoked: authenticate again, once
            headers["Authorization"] = f"Bearer {self._bearer()}"
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise NetworkError(f"cannot reach the coordinator ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise NetworkError("coordinator answered with invalid JSON") from exc

    def _bearer(self) -> str:
        if self.admin_token is not None and self.key is None:
            return self.admin_token
        if self.key is None:
            raise AuthError("no party key and no admin token: cannot authenticate")
        if self._token is None or time.monotonic() > self._token_expires:
            self.authenticate()
        assert self._token is not None
        return self._token

    def origin(self) -> str:
        """The audience this client signs at login: the origin of its base URL.

        Raises ``AuthError`` when the base URL is not an origin (scheme://host[:port]).
        """
        try:
            return public_origin(self.base_url, "coordinator URL")
        except InputError as exc:
            raise AuthError(f"cannot log in: {exc.message}") from exc

    def authenticate(self) -> str:
        """Run the challenge flow now; returns the new bearer token."""
        if self.key is None:
            raise AuthError("authentication needs a party key")
        origin = self.origin()
        public = self.key.signer.public_key.hex()
        challenge = self._json("POST", "/v1/auth/challenge", auth=False,
                               json={"signing_key": public})
        audience = challenge.get("audience") if isinstance(challenge, dict) else None
        if audience != origin:
            shown = audience[:100] if isinstance(audience, str) else "none"
            raise AuthError(f"the coordinator asked to sign a login for {shown!r}, not for "
                            f"{origin!r} (the URL this client was given): refusing to sign")
        try:
            nonce = bytes.fromhex(str(challenge["nonce"]))
        except (KeyError, ValueError) as exc:
            raise NetworkError("coordinator answered the challenge without a valid nonce") from exc
        if len(nonce) != 32:
            raise NetworkError("coordinator answered the challenge without a valid nonce")
        signature = self.key.signer.sign(auth_message(nonce, origin))
        token = self._json("POST", "/v1/auth/token", auth=False, json={
            "signing_key": public, "nonce": nonce.hex(),
            "signature": base64.b64encode(signature).decode("ascii")})
        self._token = str(token["token"])
        self._token_expires = time.monotonic() + 60.0  # renew well before the server's expiry
        return self._token

    @staticmethod
    def _env_body(envelope: Envelope) -> dict[str, Any]:
        return {"content": envelope.to_json(), "headers": {"Content-Type": "application/json"}}

    # -- rooms and workers ------------------------------------------------------------------------

    def submit_manifest(self, envelope: Envelope) -> JSON:
        """Submit a manifest (or the same one with more signatures); returns the room info."""
        return cast(JSON, self._json("POST", "/v1/rooms", **self._env_body(envelope)))

    def add_manifest_signature(self, room_id: str, envelope: Envelope) -> Envelope:
        """Add the signatures ``envelope`` carries; returns the merged manifest envelope."""
        info = self._json("POST", f"/v1/rooms/{room_id}/signatures", **self._env_body(envelope))
        return _envelope(info["manifest"])

    def rooms(self) -> list[JSON]:
        """The rooms the caller is a party of (every listed party signed)."""
        return cast(list[JSON], self._json("GET", "/v1/rooms"))

    def invitations(self) -> list[JSON]:
        """The pending manifests that list the caller: ``room_id``, ``manifest_digest``,
        ``parties`` (name, keyid, signed), ``signed``, ``missing``, ``expires_at``."""
        return cast(list[JSON], self._json("GET", "/v1/invitations"))

    def room(self, room_id: str, digest: str | None = None) -> JSON:
        """A room (or the pending manifest of that id that lists the caller; ``digest``
        chooses among several): manifest, who signed, who is missing."""
        params = {} if digest is None else {"digest": digest}
        return cast(JSON, self._json("GET", f"/v1/rooms/{room_id}", params=params))

    def manifest(self, room_id: str, digest: str | None = None) -> Envelope:
        """The room's manifest envelope, or that of the pending manifest of that id that
        lists the caller (``digest`` chooses among several). Verify it before use."""
        params = {} if digest is None else {"digest": digest}
        return _envelope(self._json("GET", f"/v1/rooms/{room_id}/manifest", params=params))

    def room_status(self, room_id: str) -> JSON:
        """Room metrics: queries, turnaround, privacy posture, utility, match rate."""
        return cast(JSON, self._json("GET", f"/v1/rooms/{room_id}/status"))

    def attestation(self) -> Envelope:
        """The current worker's attestation (no authentication needed)."""
        return _envelope(self._json("GET", "/v1/attestation", auth=False)["envelope"])

    def platform(self) -> JSON:
        """The platform's public key and launcher kind."""
        return cast(JSON, self._json("GET", "/v1/platform", auth=False))

    def attestations(self, room_id: str) -> list[Envelope]:
        """Every attestation the room's manifest accepts, the current worker first."""
        return [_envelope(a["envelope"])
                for a in self._json("GET", f"/v1/rooms/{room_id}/attestations")]

    def provision_worker(self) -> Envelope:
        """Operator: provision a worker; returns its attestation."""
        return _envelope(self._json("POST", "/v1/admin/workers")["envelope"])

    # -- uploads ----------------------------------------------------------------------------------

    def upload_statement(self, room_id: str, statement: Envelope) -> JSON:
        """Register a signed upload statement; returns the upload info (``complete``?)."""
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/uploads",
                                     **self._env_body(statement)))

    def upload_data(self, room_id: str, digest: str, sealed: Path,
                    progress: Progress | None = None) -> JSON:
        """Stream a sealed file to an upload registered before."""
        size = sealed.stat().st_size
        self._bearer()  # authenticate before streaming (a stream cannot be retried)
        with open(sealed, "rb") as handle:
            return cast(JSON, self._json(
                "PUT", f"/v1/rooms/{room_id}/uploads/{digest}/data",
                content=_FileStream(handle, size, progress),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)}))

    def upload(self, room_id: str, statement: Envelope, sealed: Path,
               progress: Progress | None = None) -> JSON:
        """Register ``statement`` and stream ``sealed`` unless the coordinator has it already.
        Retry-safe."""
        info = self.upload_statement(room_id, statement)
        if not info.get("complete"):
            info = self.upload_data(room_id, str(info["digest"]), sealed, progress)
        elif progress is not None:
            size = sealed.stat().st_size
            progress(size, size)
        return info

    def uploads(self, room_id: str) -> list[JSON]:
        """Every upload of the room (``dataset``, ``version``, ``complete``, ``statement``...)."""
        return cast(list[JSON], self._json("GET", f"/v1/rooms/{room_id}/uploads"))

    # -- bundles and approvals --------------------------------------------------------------------

    def submit_bundle(self, room_id: str, envelope: Envelope) -> JSON:
        """Submit a signed bundle."""
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/bundles",
                                     **self._env_body(envelope)))

    def bundles(self, room_id: str) -> list[JSON]:
        """Every bundle of the room."""
        return cast(list[JSON], self._json("GET", f"/v1/rooms/{room_id}/bundles"))

    def bundle(self, room_id: str, ref: str) -> Envelope:
        """A bundle envelope by digest or unique prefix."""
        return _envelope(self._json("GET", f"/v1/rooms/{room_id}/bundles/{ref}")["envelope"])

    def submit_approval(self, room_id: str, envelope: Envelope) -> JSON:
        """Submit a signed approval or revocation."""
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/approvals",
                                     **self._env_body(envelope)))

    def submit_revocation(self, room_id: str, envelope: Envelope) -> JSON:
        """Submit a signed revocation (refused when it is an approval)."""
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/revocations",
                                     **self._env_body(envelope)))

    def approvals(self, room_id: str, bundle_digest: str) -> list[Envelope]:
        """Every approval and revocation the coordinator holds for a bundle."""
        return [_envelope(a["envelope"]) for a in
                self._json("GET", f"/v1/rooms/{room_id}/bundles/{bundle_digest}/approvals")]

    # -- runs ---------------------------------------------------------------------------------------

    def create_run(self, room_id: str, bundle_digest: str,
                   idempotency_key: str | None = None) -> JSON:
        """Queue a run; with ``idempotency_key`` a retry returns the same run."""
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/runs", headers=headers,
                                     json={"bundle_digest": bundle_digest}))

    def run(self, room_id: str, run_id: str) -> JSON:
        """A run's status (``status``, ``error_code``, ``message``...)."""
        return cast(JSON, self._json("GET", f"/v1/rooms/{room_id}/runs/{run_id}"))

    def runs(self, room_id: str) -> list[JSON]:
        """Every run of the room."""
        return cast(list[JSON], self._json("GET", f"/v1/rooms/{room_id}/runs"))

    def wait_run(self, room_id: str, run_id: str, timeout: float = 300.0,
                 interval: float = 0.2) -> JSON:
        """Poll until the run is terminal. Raises ``NotFoundError`` at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(room_id, run_id)
            if run.get("status") in ("succeeded", "refused", "failed"):
                return run
            if time.monotonic() > deadline:
                raise NotFoundError(f"run {run_id} not finished after {timeout}s")
            time.sleep(interval)

    def receipt_info(self, room_id: str, run_id: str) -> ReceiptInfo:
        """The receipt with its log entry, inclusion proof and checkpoint."""
        d = self._json("GET", f"/v1/rooms/{room_id}/runs/{run_id}/receipt")
        return ReceiptInfo(str(d["run_id"]), _envelope(d["receipt"]), int(d["log_index"]),
                           _envelope(d["log_entry"]),
                           [bytes.fromhex(p) for p in d["inclusion_proof"]],
                           _envelope(d["checkpoint"]))

    def receipt(self, room_id: str, run_id: str) -> Envelope:
        """The worker-signed receipt envelope of a run."""
        return self.receipt_info(room_id, run_id).receipt

    def output(self, room_id: str, run_id: str) -> bytes:
        """The output sealed to this party (recipients only)."""
        return self._send("GET", f"/v1/rooms/{room_id}/runs/{run_id}/output").content

    def feedback(self, room_id: str, run_id: str, *, changed_decision: bool,
                 note: str = "") -> JSON:
        """Say whether a run's output changed a decision (recipients only)."""
        body: dict[str, Any] = {"changed_decision": changed_decision, "note": note}
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/runs/{run_id}/feedback",
                                     json=body))

    # -- log ----------------------------------------------------------------------------------------

    def log_entries(self, room_id: str, start: int = 0, end: int | None = None) -> list[Envelope]:
        """Log entries ``start <= i < end`` (all when ``end`` is None), paging as needed."""
        out: list[Envelope] = []
        while end is None or start < end:
            params: dict[str, int] = {"start": start}
            if end is not None:
                params["end"] = end
            page = self._json("GET", f"/v1/rooms/{room_id}/log/entries", params=params)
            entries = [_envelope(e) for e in page["entries"]]
            out += entries
            start += len(entries)
            if not entries or start >= int(page["tree_size"]):
                break
        return out

    def checkpoint(self, room_id: str, tree_size: int | None = None) -> Envelope | None:
        """The newest checkpoint (or the one of ``tree_size``); None for an empty log."""
        params = {} if tree_size is None else {"tree_size": tree_size}
        d = self._json("GET", f"/v1/rooms/{room_id}/log/checkpoint", params=params)
        return None if d.get("envelope") is None else _envelope(d["envelope"])

    def inclusion_proof(self, room_id: str, index: int, tree_size: int) -> list[bytes]:
        """The audit path of entry ``index`` in the tree of size ``tree_size``."""
        d = self._json("GET", f"/v1/rooms/{room_id}/log/inclusion",
                       params={"index": index, "tree_size": tree_size})
        return [bytes.fromhex(p) for p in d["proof"]]

    def consistency_proof(self, room_id: str, first: int, second: int) -> list[bytes]:
        """The consistency proof between two tree sizes."""
        d = self._json("GET", f"/v1/rooms/{room_id}/log/consistency",
                       params={"first": first, "second": second})
        return [bytes.fromhex(p) for p in d["proof"]]

    # -- operator -----------------------------------------------------------------------------------

    def metrics(self) -> str:
        """Prometheus text (operator)."""
        return self._send("GET", "/metrics").text

    def health(self) -> Mapping[str, Any]:
        """``/healthz``."""
        return cast(Mapping[str, Any], self._json("GET", "/healthz", auth=False))

    # -- match previews (PSI cardinality; the coordinator relays opaque messages) -------------------
    # Only additions below: the routes of ``/v1/rooms/{id}/previews``. Nothing here reads or
    # checks what the messages say; :mod:`sdk.party.preview` does.

    def open_preview(self, room_id: str, dataset: str, partner: str, partner_dataset: str,
                     size: int) -> JSON:
        """Open a preview session of ``dataset`` with ``partner``'s ``partner_dataset`` (or join
        the one the partner opened), declaring ``size`` distinct ids; returns the session."""
        body = {"dataset": dataset, "partner": partner, "partner_dataset": partner_dataset,
                "size": size}
        return cast(JSON, self._json("POST", f"/v1/rooms/{room_id}/previews", json=body))

    def preview(self, room_id: str, session_id: str) -> JSON:
        """One of this party's preview sessions: ``state``, ``parties``, ``messages`` (sender →
        complete message names), ``statements``, ``piece_bytes``."""
        return cast(JSON, self._json("GET", f"/v1/rooms/{room_id}/previews/{session_id}"))

    def previews(self, room_id: str) -> list[JSON]:
        """This party's preview sessions in the room, newest first, with their statements."""
        return cast(list[JSON], self._json("GET", f"/v1/rooms/{room_id}/previews"))

    def abort_preview(self, room_id: str, session_id: str) -> JSON:
        """Abort a waiting or running preview session (its messages are deleted)."""
        return cast(JSON, self._json("DELETE", f"/v1/rooms/{room_id}/previews/{session_id}"))

    def put_preview_message(self, room_id: str, session_id: str, name: str, data: bytes,
                            piece_bytes: int, progress: Progress | None = None) -> None:
        """Send message ``name`` in pieces of ``piece_bytes`` (the session says how large);
        retry-safe piece by piece."""
        if piece_bytes < 1:
            raise InputError("piece size must be positive")
        pieces = max(1, -(-len(data) // piece_bytes))
        for piece in range(pieces):
            chunk = data[piece * piece_bytes:(piece + 1) * piece_bytes]
            self._json("PUT", f"/v1/rooms/{room_id}/previews/{session_id}/messages/{name}",
                       params={"piece": piece, "pieces": pieces}, content=chunk,
                       headers={"Content-Type": "application/octet-stream"})
            if progress is not None:
                progress(min(len(data), (piece + 1) * piece_bytes), len(data))

    def preview_message(self, room_id: str, session_id: str, sender: str, name: str,
                        max_bytes: int) -> bytes:
        """A complete message of ``sender`` (``NotFoundError`` until it is), read up to
        ``max_bytes`` (``InputError`` beyond: a coordinator cannot make this client buffer
        more than the message may have)."""
        path = f"/v1/rooms/{room_id}/previews/{session_id}/messages/{sender}/{name}"
        headers = {"Authorization": f"Bearer {self._bearer()}"}
        try:
            with self._http.stream("GET", path, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise InputError(f"preview message {name} is larger than {max_bytes} "
                                         "bytes")
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach the coordinator at {self.base_url} "
                               f"({type(exc).__name__})") from exc
        return bytes(data)

    def submit_preview_statement(self, room_id: str, session_id: str,
                                 envelope: Envelope) -> JSON:
        """Post this party's signed ``match_preview`` statement; returns the session."""
        return cast(JSON, self._json("POST",
                                     f"/v1/rooms/{room_id}/previews/{session_id}/statements",
                                     **self._env_body(envelope)))
