"""OpenAPI generated from the routes and the pydantic models they validate with.

Handlers carry a `@documented(...)` description (summary, tag, body, query and response
models); `build_spec(app)` walks the router and builds the document with apispec, taking
every schema from pydantic. The spec is OpenAPI 3.0.3 because the bundled Swagger UI (4.x)
renders nothing newer, so pydantic's `anyOf [X, null]` becomes `nullable: true`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from apispec import APISpec
from pydantic import BaseModel, TypeAdapter

REF = "#/components/schemas/{model}"


class ValidationError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(BaseModel):
    detail: list[ValidationError]


class Problem(BaseModel):
    detail: str


class Accepted(BaseModel):
    detail: str
    task_id: str


#: What each answer a route may give besides its success means (all but 202 and 422 are
#: `Problem`s, the reason in `detail`).
ANSWERS = {
    202: "Accepted, still being applied past the write bound: `Location` names the task",
    400: "A malformed header or path",
    401: "Missing or invalid token",
    403: "The token lacks the admin role, or names another tenant",
    404: "Not found (or another tenant's)",
    409: "Conflicts with the task's state or an earlier request",
    413: "Over a size limit (the limit in `detail`)",
    415: "Not a file type the route stores",
    422: "Validation Error",
    503: "The broker or the database is unavailable: retry later",
}
#: The answers of a route that sends a command to the task processor and awaits it.
COMMAND = (202, 409, 503)


@dataclass(frozen=True)
class Doc:
    summary: str
    tag: str
    body: Any = None
    query: type[BaseModel] | None = None
    response: Any = None
    public: bool = False
    status: int = 200
    errors: tuple[int | tuple[int, Any], ...] = ()


def documented(
    summary: str,
    tag: str,
    *,
    body: Any = None,
    query: type[BaseModel] | None = None,
    response: Any = None,
    public: bool = False,
    status: int = 200,
    errors: tuple[int | tuple[int, Any], ...] = (),
) -> Callable:
    """Describe a handler for the generated OpenAPI document: it answers `status` with
    `response`, 422 for bad input, and (unless `public`) 401, 404 and 503; `errors` names
    the other answers it may give (keys of `ANSWERS`, or (key, body model) where the body
    is not a `Problem`)."""

    def mark(handler: Callable) -> Callable:
        handler.__openapi__ = Doc(  # type: ignore[attr-defined]
            summary, tag, body, query, response, public, status, errors
        )
        return handler

    return mark


def _to_oas30(schema: Any) -> Any:
    """JSON Schema 2020-12 (pydantic) -> the OpenAPI 3.0 dialect."""
    if isinstance(schema, list):
        return [_to_oas30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _to_oas30(v) for k, v in schema.items()}
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if options and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del out[key]
            if len(rest) == 1 and "$ref" not in rest[0]:
                out.update(rest[0])
            else:
                out[key] = rest
            out["nullable"] = True
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(exclusive), int | float) and not isinstance(out[exclusive], bool):
            out[bound], out[exclusive] = out[exclusive], True  # 3.0: a flag on the bound
    return out


class _Schemas:
    def __init__(self, spec: APISpec) -> None:
        self._spec = spec

    def _register(self, schema: dict[str, Any]) -> dict[str, Any]:
        for name, definition in schema.pop("$defs", {}).items():
            if name not in self._spec.components.schemas:
                self._spec.components.schema(name, _to_oas30(definition))
        return schema

    def of(self, model: Any) -> dict[str, Any]:
        adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
        schema = self._register(adapter.json_schema(ref_template=REF))
        if isinstance(model, type) and issubclass(model, BaseModel):
            name = model.__name__
            if name not in self._spec.components.schemas:
                self._spec.components.schema(name, _to_oas30(schema))
            return {"$ref": REF.format(model=name)}
        return _to_oas30(schema)

    def params(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        props = self._register(model.model_json_schema(ref_template=REF))["properties"]
        return [
            {
                "in": "query",
                "name": name,
                "required": field.is_required(),
                "schema": _to_oas30(props[name]),
                **({"description": field.description} if field.description else {}),
            }
            for name, field in model.model_fields.items()
        ]


def build_spec(app: web.Application, title: str, version: str) -> dict[str, Any]:
    spec = APISpec(
        title=title,
        version=version,
        openapi_version="3.0.3",
        info={"description": "Sartiq Compute API served by taskstream"},
    )
    spec.components.security_scheme("HTTPBearer", {"type": "http", "scheme": "bearer"})
    schemas = _Schemas(spec)
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        doc: Doc | None = getattr(route.handler, "__openapi__", None)
        if doc is None or route.method == "HEAD":
            continue
        path = route.resource.canonical
        parameters = [
            {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
            for name in _path_params(path)
        ]
        if doc.query is not None:
            parameters += schemas.params(doc.query)
        success = {"description": "Successful Response"}
        if doc.response:
            success["content"] = {"application/json": {"schema": schemas.of(doc.response)}}
        responses: dict[str, Any] = {str(doc.status): success}
        answers: dict[int, Any] = {202: Accepted, 422: HTTPValidationError}
        codes = {422, *(e if isinstance(e, int) else e[0] for e in doc.errors)}
        answers |= {e[0]: e[1] for e in doc.errors if not isinstance(e, int)}
        if not doc.public:
            codes |= {401, 404, 503}
        if doc.body is not None:
            codes.add(413)
        for code in sorted(codes):
            model = answers.get(code, Problem)
            responses[str(code)] = {
                "description": ANSWERS[code],
                "content": {"application/json": {"schema": schemas.of(model)}},
            }
        operation: dict[str, Any] = {
            "summary": doc.summary,
            "tags": [doc.tag],
            "operationId": route.handler.__name__,
            "parameters": parameters,
            "responses": responses,
        }
        if route.handler.__doc__:
            operation["description"] = route.handler.__doc__.strip()
        if doc.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas.of(doc.body)}},
            }
        if not doc.public:
            operation["security"] = [{"HTTPBearer": []}]
        paths.setdefault(path, {})[route.method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _require_discriminators(document, document["components"]["schemas"])
    return document


def _require_discriminators(node: Any, components: dict[str, Any]) -> None:
    """OpenAPI 3.0: the members of a discriminated union require the property that picks
    them, as the API does. pydantic leaves it out of `required` where it has a default (a
    `Create*Task`'s `task_type`)."""
    if isinstance(node, list):
        for item in node:
            _require_discriminators(item, components)
    elif isinstance(node, dict):
        if isinstance(picker := node.get("discriminator"), dict):
            for ref in picker.get("mapping", {}).values():
                required = components[ref.rsplit("/", 1)[1]].setdefault("required", [])
                if picker["propertyName"] not in required:
                    required.append(picker["propertyName"])
        for value in node.values():
            _require_discriminators(value, components)


def _path_params(path: str) -> list[str]:
    return [
        part[1:-1].split(":")[0]
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]


DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>taskstream API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""
