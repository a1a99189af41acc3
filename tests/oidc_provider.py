"""A real OpenID Connect provider on loopback for tests: `oidc-provider-mock` (Authlib's
provider machinery behind Flask), served by werkzeug on 127.0.0.1 at an ephemeral port in a
thread. Its issuer is `http://127.0.0.1:{port}`.

`foreign_paths`: requests to these paths are answered as if they had reached the provider
under another host name, so what the provider issues there names a foreign issuer (a
provider mix-up, or a token endpoint that is not the issuer's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import oidc_provider_mock
import werkzeug.serving

# Another name of the same provider: Authlib's provider still counts it as a secure
# (loopback) origin, and its issuer string is not the configured one.
FOREIGN_HOST = "localhost"


@dataclass
class Provider:
    port: int
    foreign_paths: set[str] = field(default_factory=set)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def oidc_provider(*, token_max_age: timedelta = timedelta(hours=1)) -> Iterator[Provider]:
    app = oidc_provider_mock.app(require_nonce=True, access_token_max_age=token_max_age)
    provider = Provider(port=0)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in provider.foreign_paths:
            environ["HTTP_HOST"] = f"{FOREIGN_HOST}:{provider.port}"
        return app.wsgi_app(environ, start_response)  # type: ignore[no-any-return]

    server = werkzeug.serving.make_server("127.0.0.1", 0, wsgi, threaded=True)  # type: ignore[arg-type]
    provider.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
