"""GitHub's error bodies: ``{"message", "documentation_url", "status"}`` plus ``errors`` on 422."""

from collections.abc import Mapping

from agent_grid_github_test_server.public_errors import GitHubTestServerError

DOCS_URL = "https://docs.github.com/rest"


class ApiError(GitHubTestServerError):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[object] | None = None,
        documentation_url: str = DOCS_URL,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.message = message
        self.errors = errors
        self.documentation_url = documentation_url
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"message": self.message, "documentation_url": self.documentation_url}
        if self.errors is not None:
            body["errors"] = self.errors
        body["status"] = str(self.status)
        return body


def not_found(documentation_url: str = DOCS_URL) -> ApiError:
    return ApiError(404, "Not Found", documentation_url=documentation_url)


def bad_credentials() -> ApiError:
    return ApiError(401, "Bad credentials", documentation_url=DOCS_URL)


def validation_failed(*errors: Mapping[str, object]) -> ApiError:
    return ApiError(422, "Validation Failed", errors=[dict(e) for e in errors])


def missing_field(resource: str, field: str) -> ApiError:
    return validation_failed({"resource": resource, "code": "missing_field", "field": field})


def invalid_field(resource: str, field: str, value: object = None) -> ApiError:
    error: dict[str, object] = {"resource": resource, "code": "invalid", "field": field}
    if value is not None:
        error["value"] = value
    return validation_failed(error)


def unprocessable(message: str) -> ApiError:
    """A 422 whose explanation is a custom message (GitHub's ``code: custom``)."""
    return validation_failed({"resource": "Issue", "code": "custom", "message": message})
