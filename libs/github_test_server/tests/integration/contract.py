"""GitHub's published contracts, checked against what the server sends.

REST bodies are validated against the response schema of the matching operation in @octokit/openapi's
``api.github.com.json`` (OpenAPI 3.0: ``nullable``, so openapi-schema-validator's OAS30 validator, formats
checked). Webhook payloads are validated against @octokit/openapi-webhooks (OpenAPI 3.1: JSON Schema 2020-12).
"""

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from jsonschema.protocols import Validator
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource

OCTOKIT = Path(__file__).parents[4] / "tests" / "github_fixtures" / "node_modules" / "@octokit"
REST_SPEC = OCTOKIT / "openapi" / "generated" / "api.github.com.json"
WEBHOOK_SPEC = OCTOKIT / "openapi-webhooks" / "generated" / "api.github.com.json"
MISSING = "{path} is missing: run `make test-fixtures` (npm ci of GitHub's published OpenAPI descriptions)"

_REST_URN = "urn:github-rest"
_WEBHOOKS_URN = "urn:github-webhooks"
# GitHub's description omits some statuses every operation can answer: 401 (credentials), 403 (rate limits) and
# 5xx (outages). Those bodies are GitHub's basic error.
_UNDOCUMENTED_ERRORS = {"401", "403", "500", "502", "503"}


class ContractViolation(AssertionError):
    pass


def load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(MISSING.format(path=path))
    document: dict[str, Any] = json.loads(path.read_text())
    return document


class RestContract:
    def __init__(self, spec: dict[str, Any]) -> None:
        assert spec["openapi"].startswith("3.0"), (
            "the REST description is OpenAPI 3.0 (nullable); revisit the validator"
        )
        self.spec = _nullable_enums_accept_null(spec)
        self._registry: Registry[Any] = Registry().with_resource(_REST_URN, Resource.opaque(self.spec))
        self._validators: dict[tuple[str, str, str], Validator] = {}
        self.checked: list[tuple[str, str, int]] = []

    def operation(self, method: str, template: str) -> dict[str, Any]:
        try:
            operation: dict[str, Any] = self.spec["paths"][template][method.lower()]
        except KeyError:
            raise ContractViolation(f"GitHub's description has no {method} {template}") from None
        return operation

    def response_schema(self, method: str, template: str, status: int) -> dict[str, Any] | None:
        """The JSON schema a ``status`` answer must satisfy; None when GitHub documents no body (204, 304)."""
        responses = self.operation(method, template)["responses"]
        key = str(status)
        if key in responses:
            response = self._resolve(responses[key])
        elif key in _UNDOCUMENTED_ERRORS:
            return {"$ref": f"{_REST_URN}#/components/schemas/basic-error"}
        else:
            raise ContractViolation(f"{method} {template} does not document status {status}: {sorted(responses)}")
        content = response.get("content")
        if not content:
            return None
        schema: dict[str, Any] = content["application/json"]["schema"]
        return schema

    def validate(self, method: str, template: str, response: httpx.Response) -> None:
        schema = self.response_schema(method, template, response.status_code)
        self.checked.append((method.upper(), template, response.status_code))
        if schema is None:
            if response.content:
                raise ContractViolation(f"{method} {template} {response.status_code} must have no body")
            return
        assert response.headers["content-type"].startswith("application/json")
        key = (method.upper(), template, str(response.status_code))
        validator = self._validators.get(key)
        if validator is None:
            validator = OAS30Validator(
                self._rebased(schema), registry=self._registry, format_checker=oas30_format_checker
            )
            self._validators[key] = validator
        errors = sorted(validator.iter_errors(response.json()), key=lambda e: list(e.absolute_path))
        if errors:
            details = "\n".join(f"  at {list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])
            raise ContractViolation(f"{method} {template} {response.status_code} violates GitHub's schema:\n{details}")

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    @staticmethod
    def _rebased(schema: dict[str, Any]) -> dict[str, Any]:
        rebased: dict[str, Any] = _rebase_refs(schema)
        return rebased


def _rebase_refs(node: Any) -> Any:
    # Local refs (#/components/...) point into the description, registered under a URN.
    if isinstance(node, dict):
        return {k: (_REST_URN + v if k == "$ref" and v.startswith("#") else _rebase_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase_refs(item) for item in node]
    return node


def _nullable_enums_accept_null(node: Any) -> Any:
    # GitHub answers `"state_reason": null` where the description says `nullable: true` with an enum that lacks
    # null. OpenAPI 3.0.3 says nullable "adds null to the allowed values"; the validator reads the stricter
    # 3.0.3 clarification (null must be in the enum). Follow GitHub's actual answers: add null to such enums.
    if isinstance(node, dict):
        if node.get("nullable") is True and isinstance(node.get("enum"), list) and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        for value in node.values():
            _nullable_enums_accept_null(value)
    elif isinstance(node, list):
        for item in node:
            _nullable_enums_accept_null(item)
    return node


class WebhookContract:
    def __init__(self, spec: dict[str, Any]) -> None:
        assert spec["openapi"].startswith("3.1"), "the webhooks description is OpenAPI 3.1 (JSON Schema 2020-12)"
        self.spec = spec
        self._registry: Registry[Any] = Registry().with_resource(_WEBHOOKS_URN, Resource.opaque(spec))

    def errors(self, event: str, action: str, payload: dict[str, Any]) -> list[str]:
        name = f"{event}-{action}".replace("_", "-")
        try:
            body = self.spec["webhooks"][name]["post"]["requestBody"]
        except KeyError:
            raise ContractViolation(f"GitHub's webhooks description has no {name}") from None
        reference = body["content"]["application/json"]["schema"]["$ref"]
        validator = jsonschema.Draft202012Validator(
            {"$ref": _WEBHOOKS_URN + reference},
            registry=self._registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )
        return [f"at {list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(payload)]
