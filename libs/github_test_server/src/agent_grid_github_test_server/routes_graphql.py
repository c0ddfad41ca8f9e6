"""GraphQL: ``POST /graphql`` executes documents against the schema subset, answering in GitHub's shapes.

GitHub puts an error's kind at the top level (``"type": "NOT_FOUND"``) and words validation errors its own
way ("Field 'x' doesn't exist on type 'Issue'"); both are mirrored here.
"""

import re
from functools import lru_cache

from fastapi import APIRouter, Request, Response
from graphql import DocumentNode, ExecutionResult, GraphQLError, execute_sync, parse, validate

from agent_grid_github_test_server.errors import ApiError, bad_credentials
from agent_grid_github_test_server.graphql_schema import SCHEMA, GraphContext
from agent_grid_github_test_server.http_common import caller_of, core_of, json_object, reply

router = APIRouter()

_UNDEFINED_FIELD = re.compile(r"^Cannot query field '(?P<field>[^']+)' on type '(?P<type>[^']+)'\.")


@router.post("/graphql")
async def execute(request: Request) -> Response:
    core = core_of(request)
    token = caller_of(request).token
    if token is None:
        raise bad_credentials()
    body = await json_object(request)
    query = body.get("query")
    variables = body.get("variables")
    if not isinstance(query, str) or (variables is not None and not isinstance(variables, dict)):
        raise ApiError(400, "Problems parsing JSON", documentation_url="https://docs.github.com/graphql")
    operation = body.get("operationName")
    document, errors = _prepared(query)
    if document is None:
        result = ExecutionResult(data=None, errors=list(errors))
    else:
        result = execute_sync(
            SCHEMA,
            document,
            context_value=GraphContext(core, token),
            variable_values=variables,
            operation_name=operation if isinstance(operation, str) else None,
        )
    answer: dict[str, object] = {}
    if result.errors is None or result.data is not None:
        answer["data"] = result.data
    if result.errors:
        answer["errors"] = [_github_error(error) for error in result.errors]
    return reply(answer)


# Clients send the same few documents over and over, and parsing and validating one took most of a request's
# time (~5 of 6.5 ms for the adapter's issue view): each document is prepared once.
@lru_cache(maxsize=128)
def _prepared(query: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
    try:
        document = parse(query)
    except GraphQLError as error:
        return None, (error,)
    errors = validate(SCHEMA, document)
    return (None, tuple(errors)) if errors else (document, ())


def _github_error(error: GraphQLError) -> dict[str, object]:
    formatted: dict[str, object] = dict(error.formatted)
    extensions = dict(error.extensions or {})
    if "type" in extensions:
        formatted["type"] = extensions.pop("type")
    undefined = _UNDEFINED_FIELD.match(error.message)
    if undefined is not None:
        formatted["message"] = f"Field '{undefined['field']}' doesn't exist on type '{undefined['type']}'"
        extensions |= {"code": "undefinedField", "typeName": undefined["type"], "fieldName": undefined["field"]}
    if extensions:
        formatted["extensions"] = extensions
    else:
        formatted.pop("extensions", None)
    return formatted
