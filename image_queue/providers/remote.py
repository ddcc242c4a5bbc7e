"""The base of every provider that calls an HTTP API (all kinds but mock).

`generate` is the same for all of them: re-check the request (nothing is sent for a request the API
would refuse), wrap the worker's client in an `HTTP`, run the kind's `_generate`, and stamp any
ProviderError with how many billable attempts were made and whether money may have been spent, so
result.json can say so whichever step failed (create, poll or download).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from image_queue.errors import ProviderError
from image_queue.http import HTTP
from image_queue.providers.base import GenerationRequest, GenerationResult, Provider
from image_queue.providers.checks import recheck

if TYPE_CHECKING:
    import httpx


class HTTPProvider(Provider):
    needs_network: ClassVar[bool] = True

    def generate(self, request: GenerationRequest, *, client: "httpx.Client | None") -> GenerationResult:
        if client is None:
            raise TypeError(f"provider kind {self.kind} needs an httpx.Client")
        recheck(type(self), request, self.config)
        http = HTTP(client, self.config, api_key=self.api_key, task_dir=request.task_dir)
        try:
            return self._generate(http, request)
        except ProviderError as exc:
            exc.context["attempts"] = http.billable_attempts
            exc.context["billed_maybe"] = http.billed_maybe
            raise

    def _generate(self, http: HTTP, request: GenerationRequest) -> GenerationResult:
        raise NotImplementedError
