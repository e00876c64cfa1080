"""Talking to registries: TLS, auth, redirects, and which errors allow failover.

Each registry's failures come out as one of two kinds, because failover turns
on the difference: ``Transient`` (network, timeout, 5xx: the next registry may
do better) or ``HTTPStatus`` (a definite answer such as 401 or 404, which a
mirror saying something else would only hide). ``fetch_manifest`` applies that
rule to the manifest and turns definite answers into errors that say what to fix.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmhost.onhost.pull.errors import (
    CannotRun,
    Failure,
    HTTPStatus,
    IntegrityError,
    PullError,
    Transient,
)
from llmhost.onhost.pull.manifest import (
    DOCKER_MANIFEST,
    MAX_MANIFEST_BYTES,
    OCI_MANIFEST,
    sha256_of,
)
from llmhost.onhost.pull.request import DEFAULT_TIMEOUT, Credentials

_CHALLENGE_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def build_ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS context that verifies the registry: the private CA when given, else system trust.

    With ``ca_file`` only that CA is trusted, which pins the registry to the
    private CA instead of any public one.
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise CannotRun(
            f"cannot load CA bundle {ca_file}: {exc}. Fix: pass --ca-file the PEM file of "
            "the private CA that signed the registry's certificate"
        ) from None


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Scheme and parameters of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) or m.group(3) or ""
        for m in _CHALLENGE_PARAM_RE.finditer(rest)
    }
    return scheme.lower(), params


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The registry's own error codes (e.g. MANIFEST_UNKNOWN) from an error body."""
    try:
        doc = json.loads(exc.read(65536) or b"{}")
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    return "; ".join(parts)


def describe_network_error(exc: BaseException, timeout: float) -> str:
    """One line for a connection failure, with the likely fix for TLS trouble."""
    reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed ({reason.verify_message}); if the "
            "registry's certificate comes from the private CA, pass --ca-file with it"
        )
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow blob redirects (to storage backends) over http(s) only.

    The Authorization header is added as an "unredirected" header, so urllib
    never forwards registry credentials to the redirect target.
    """

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Auth:
    """Authorization for one registry: Basic (htpasswd) or Bearer tokens, learnt from 401s.

    Credentials are sent only after the registry asks for them, and the header
    found is then reused by every thread, so parallel blob fetches don't each
    go through the challenge or fetch their own token.
    """

    def __init__(
        self, credentials: Credentials | None, opener: urllib.request.OpenerDirector, timeout: float
    ) -> None:
        self._credentials = credentials
        self._opener = opener
        self._timeout = timeout
        self._lock = threading.Lock()
        self._header: str | None = None

    def header(self) -> str | None:
        with self._lock:
            return self._header

    def answer(self, challenge: str, sent: str | None) -> bool:
        """Update the header for a 401 challenge; True when there is something new to try."""
        scheme, params = _parse_challenge(challenge)
        with self._lock:
            if self._header != sent:
                return True  # another thread already answered the challenge
            if scheme == "basic" and self._credentials:
                new = self._credentials.basic_header()
            elif scheme == "bearer" and "realm" in params:
                new = f"Bearer {self._fetch_token(params)}"
            else:
                return False
            if new == sent:
                return False
            self._header = new
            return True

    def _fetch_token(self, params: dict[str, str]) -> str:
        """Get a token from the Bearer realm, logging in with Basic when we have credentials."""
        realm = params["realm"]
        if urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise HTTPStatus(401, f"token realm {realm!r} is not an http(s) URL")
        wanted: list[tuple[str, str]] = [
            (k, params[k]) for k in ("service", "scope") if k in params
        ]
        query = urllib.parse.urlencode(wanted)
        request = urllib.request.Request(f"{realm}?{query}" if query else realm)
        if self._credentials:
            request.add_unredirected_header("Authorization", self._credentials.basic_header())
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                doc = json.loads(response.read(1024 * 1024))
        except urllib.error.HTTPError as exc:
            exc.close()
            raise HTTPStatus(exc.code, f"token service {realm} refused the login") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise Transient(
                f"token service {realm}: {describe_network_error(exc, self._timeout)}"
            ) from None
        except ValueError:
            raise Transient(f"token service {realm} answered with something not JSON") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise Transient(f"token service {realm} answered without a token")
        return token


class Registry:
    """HTTP access to one registry: auth, redirects, TLS and error classification.

    Errors come out as three kinds so failover can decide: ``Transient`` (try
    the next registry), ``HTTPStatus`` (a definite answer) or a response.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None,
        ssl_context: ssl.SSLContext,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        self.credentials = credentials
        self.timeout = timeout
        # No ProxyHandler: the registry is internal, and a stray http_proxy must
        # not route model pulls (or credentials) through another machine.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl_context),
            _RedirectHandler(),
        )
        self._auth = _Auth(credentials, self._opener, timeout)

    def open(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """GET ``path``, answering one auth challenge; the caller closes the response."""
        sent = self._auth.header()
        for attempt in (1, 2):
            request = urllib.request.Request(self.url + path, headers=headers)
            if sent:
                request.add_unredirected_header("Authorization", sent)
            try:
                response: http.client.HTTPResponse = self._opener.open(
                    request, timeout=self.timeout
                )
                return response
            except urllib.error.HTTPError as exc:
                try:
                    challenge = exc.headers.get("WWW-Authenticate", "")
                    if exc.code == 401 and attempt == 1 and self._auth.answer(challenge, sent):
                        sent = self._auth.header()
                        continue
                    raise self._classify(exc) from None
                finally:
                    exc.close()
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise Transient(describe_network_error(exc, self.timeout)) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    @staticmethod
    def _classify(exc: urllib.error.HTTPError) -> Exception:
        detail = _error_detail(exc)
        if exc.code >= 500 or exc.code in (408, 429):
            return Transient(f"HTTP {exc.code}{f' ({detail})' if detail else ''}")
        return HTTPStatus(exc.code, detail)

    def read_manifest(self, repository: str, digest: str) -> bytes:
        """The manifest's exact bytes (unverified: the caller checks the digest)."""
        accept = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
        with self.open(f"/v2/{repository}/manifests/{digest}", {"Accept": accept}) as response:
            try:
                body: bytes = response.read(MAX_MANIFEST_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise Transient(describe_network_error(exc, self.timeout)) from None
        if len(body) > MAX_MANIFEST_BYTES:
            raise IntegrityError(
                f"registry {self.url} sent a manifest over {MAX_MANIFEST_BYTES} bytes "
                f"for {digest}; refusing it",
                registry=self.url,
                digest=digest,
                stage="manifest",
            )
        return body


def fetch_manifest(
    registries: Sequence[Registry], repository: str, digest: str
) -> tuple[Registry, bytes]:
    """The verified manifest bytes and the registry that served them.

    Unreachable registries (network, timeout, 5xx) hand over to the next; a
    definite answer (401, 404, wrong bytes) stops here, because the mirror
    saying something else would hide a problem someone must fix.
    """
    unreachable: list[Failure] = []
    for registry in registries:
        try:
            body = registry.read_manifest(repository, digest)
        except Transient as exc:
            unreachable.append(Failure("manifest", f"{registry.url}: {exc}", registry.url, digest))
            continue
        except HTTPStatus as exc:
            raise _manifest_refused(registry, exc, repository, digest) from None
        actual = sha256_of(body)
        if actual != digest:
            raise IntegrityError(
                f"registry {registry.url} served manifest bytes with digest {actual} for "
                f"{digest}; refusing them. Fix: check the registry's storage, re-push the artifact",
                registry=registry.url,
                digest=digest,
                stage="manifest",
            )
        return registry, body
    lines = "\n  ".join(f.error for f in unreachable)
    raise CannotRun(
        f"no registry reachable for {repository}@{digest}:\n  {lines}\n"
        "Fix: check the network path and that the registry service runs",
        failures=unreachable,
    )


def _manifest_refused(
    registry: Registry, exc: HTTPStatus, repository: str, digest: str
) -> PullError:
    """Turn a definite answer about the manifest into an error saying what to fix."""
    url, detail = registry.url, f" ({exc.detail})" if exc.detail else ""
    creds = registry.credentials
    if exc.status == 401 and creds is None:
        message = (
            f"registry {url} requires a login (HTTP 401){detail}. "
            "Fix: pass --auth-file with the registry username and password"
        )
    elif exc.status == 401 and creds is not None:
        message = (
            f"registry {url} refused the credentials for user {creds.username!r} "
            f"(HTTP 401){detail}. Fix: check the username and password in {creds.source}"
        )
    elif exc.status == 403:
        message = f"registry {url} denies pulling {repository} (HTTP 403){detail}"
    elif exc.status == 404 and "NAME_UNKNOWN" in exc.detail:
        message = (
            f"registry {url} has no repository {repository} (HTTP 404){detail}. "
            "Fix: check --repository"
        )
    elif exc.status == 404:
        message = (
            f"unknown digest: registry {url} has no manifest {digest} in repository "
            f"{repository} (HTTP 404){detail}. Fix: check --digest and --repository "
            "against what was pushed"
        )
    else:
        message = f"registry {url} answered HTTP {exc.status}{detail} for manifest {digest}"
    return CannotRun(message, registry=url, digest=digest, stage="manifest")
