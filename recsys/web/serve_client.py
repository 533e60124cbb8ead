"""The web process's calls to the Serve HTTP API: the dashboard's with the signed-in user's key (the
API checks the role: a viewer cannot publish a rule even by hand-made request), the store's with the
storefront key. A Serve that does not answer is a 503 with a reason, never a crash of the page."""

from __future__ import annotations

import httpx


class ServeUnavailable(Exception):
    pass


class ServeClient:
    def __init__(self, base_url: str, timeout_s: float):
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def call(self, method: str, path: str, key: str | None = None, headers: dict | None = None,
             **kwargs) -> httpx.Response:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {key}"} if key else {})}
        try:
            return self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ServeUnavailable(f"the recommendation service at {self.http.base_url} did not answer: {exc}") from exc

    def rail(self, surface: str, params: dict) -> dict:
        """A surface's rail with explanations (raises ServeUnavailable, or for an error answer)."""
        answer = self.call("GET", f"/v1/recommendations/{surface}",
                           params={k: v for k, v in {**params, "explain": "true"}.items() if v})
        if answer.status_code != 200:
            raise ServeUnavailable(f"{surface}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def close(self) -> None:
        self.http.close()
