#!/usr/bin/env python3
"""Strict JSON schemas of Kubernetes kinds, for kubeconform, from the API's OpenAPI document or from CRDs.

    kube-schemas.py kubernetes OUTDIR SWAGGER_JSON
        One schema for each (group, version, kind) of the API's OpenAPI (v2) document, such as the
        api/openapi-spec/swagger.json of the k8s.io/kubernetes module; and OUTDIR/_objectmeta.json, the
        schema of ObjectMeta, for the `crds` mode's --object-meta.
    kube-schemas.py crds [--object-meta FILE] OUTDIR YAML_FILE...
        One schema for each served version of each CustomResourceDefinition (apiextensions.k8s.io/v1) in the
        YAML files (multi-document, or `kind: List`). With --object-meta, a custom resource's metadata is
        checked as an ObjectMeta, as the API server does; without it, metadata is any object. Needs PyYAML.

A schema is written as OUTDIR/{kind}{suffix}.json, the name kubeconform looks for with
    kubeconform -strict -schema-location 'OUTDIR/{{ .ResourceKind }}{{ .KindSuffix }}.json'
that is the kind in lower case, then "-" and the first label of the group (or the version, for the core
group "") in lower case, then "-" and the version for a named group: pod-v1.json, deployment-apps-v1.json,
servicemonitor-monitoring-v1.json. Two kinds that would share a name are an error.

Each file stands alone (draft 4, as kubeconform reads schemas without a $schema): every $ref of the OpenAPI
document is written out in place, but for the recursive ones (JSONSchemaProps, the schema of a CRD's
schema), which refer to a copy under the file's own "definitions". The schemas are those of kubeconform's
-strict ones, whatever the template: an object that lists its properties and says nothing of others gets
additionalProperties: false, so an unknown or misspelt field is an error, as with kubectl's strict field
validation; an object marked x-kubernetes-preserve-unknown-fields keeps any field. Besides:
  - int-or-string (IntOrString, x-kubernetes-int-or-string) is {"type": ["integer", "string"]}, and a
    Quantity (resource requests, limits) a string or a number ("500m", 1, 0.5), as the API server reads it;
  - a field that its object does not require may also be null, which the API server takes as absent (a
    YAML `key:` with no value, `creationTimestamp: null`), and a CRD's `nullable: true` allows null even
    in a required field. kubeconform's published schemas allow null too, but object by object (in every
    field of an object that requires none, in none of one that requires some), not field by field;
  - apiVersion and kind must be the ones of the file.
Descriptions are left out: nothing validates against them.
"""
import argparse
import copy
import json
import os
import sys

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


# --- the walk over a schema's subschemas ------------------------------------------------------------------

NAMED = ("properties", "patternProperties", "definitions", "dependencies")  # name -> schema
LISTED = ("allOf", "anyOf", "oneOf")  # [schema]
SINGLE = ("additionalProperties", "additionalItems", "not", "items")  # schema (or a list, for items)


def map_subschemas(schema, f):
    """A copy of `schema` with f applied to each of its direct subschemas, as draft 4 and OpenAPI place them.
    The keys of "properties" are field names, not keywords: a field called "description" or "$ref" is safe."""
    schema = dict(schema)
    for keyword in NAMED:
        if keyword in schema:
            schema[keyword] = {k: f(v) if isinstance(v, dict) else v for k, v in schema[keyword].items()}
    for keyword in LISTED:
        if keyword in schema:
            schema[keyword] = [f(v) for v in schema[keyword]]
    for keyword in SINGLE:
        if isinstance(schema.get(keyword), dict):
            schema[keyword] = f(schema[keyword])
        elif keyword == "items" and isinstance(schema.get(keyword), list):
            schema[keyword] = [f(v) for v in schema[keyword]]
    return schema


def is_ref(schema):
    return isinstance(schema.get("$ref"), str)


# --- $refs of the OpenAPI document ------------------------------------------------------------------------

def expand(definitions, name):
    """The definition `name` with every $ref written out in place, but for refs back into a definition that is
    being written out (recursion), which become "#/definitions/NAME"; returns (schema, {NAME: schema})."""
    recursive = {}

    def write_out(schema, stack):
        if is_ref(schema):
            target = schema["$ref"].rsplit("/", 1)[-1]
            if target in stack:
                recursive.setdefault(target, None)
                return {"$ref": "#/definitions/" + target}
            return write_out(definitions[target], stack + (target,))
        schema = {k: v for k, v in schema.items() if k != "description"}
        return map_subschemas(schema, lambda s: write_out(s, stack))

    root = write_out(definitions[name], (name,))
    while None in recursive.values():  # each recursive definition, written out itself (it may name others)
        target = next(t for t, s in recursive.items() if s is None)
        recursive[target] = write_out(definitions[target], (target,))
    return root, recursive


# --- strictness, nulls, int-or-string ---------------------------------------------------------------------

def add_null(schema):
    """`schema` (changed in place, or wrapped), also accepting null."""
    if is_ref(schema) or any(keyword in schema for keyword in LISTED):
        return {"anyOf": [{"type": "null"}, schema]}  # null must get past the ref or the combination too
    types = schema.get("type")
    if isinstance(types, str):
        schema["type"] = [types, "null"]
    elif isinstance(types, list) and "null" not in types:
        schema["type"] = types + ["null"]
    # (no type at all: any value, null too, unless an enum says otherwise)
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = schema["enum"] + [None]
    return schema


def int_or_string(schema):
    """An int-or-string, in either spelling, as {"type": ["integer", "string"]}; in place."""
    if schema.get("format") == "int-or-string":
        del schema["format"]
        schema["type"] = ["integer", "string"]
    if schema.get("x-kubernetes-int-or-string") is True:
        # controller-gen also writes anyOf: [{type: integer}, {type: string}]: the type says it all
        if all(set(s) == {"type"} and s["type"] in ("integer", "string") for s in schema.get("anyOf", [])):
            schema.pop("anyOf", None)
        schema["type"] = ["integer", "string"]


def tighten(schema, embedded_meta=None):
    """A copy of `schema` in which an object that lists its fields takes no others, an optional field may
    be null and an int-or-string is either. `embedded_meta`: the schema of an embedded resource's metadata."""
    schema = {k: v for k, v in schema.items() if k != "description"}
    int_or_string(schema)
    if schema.get("x-kubernetes-embedded-resource") is True and "properties" in schema:
        implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": embedded_meta or {"type": "object"}}
        schema["properties"] = {**implicit, **schema["properties"]}
    if "properties" in schema and "additionalProperties" not in schema \
            and schema.get("x-kubernetes-preserve-unknown-fields") is not True:
        schema["additionalProperties"] = False
    if schema.get("required") == []:
        del schema["required"]  # draft 4 wants at least one
    schema = map_subschemas(schema, lambda s: tighten(s, embedded_meta))
    required = set(schema.get("required", []))
    for field, field_schema in schema.get("properties", {}).items():
        if field not in required or field_schema.get("nullable") is True:
            schema["properties"][field] = add_null(field_schema)
    if schema.get("nullable") is True and "type" in schema:
        schema = add_null(schema)  # a CRD's nullable: true, wherever it stands
    return schema


def pin_gvk(schema, group, version, kind):
    """`schema` (a copy) that takes only this apiVersion and kind."""
    schema = copy.deepcopy(schema)
    api_version = f"{group}/{version}" if group else version
    schema.setdefault("properties", {})
    schema["properties"]["apiVersion"] = {"type": "string", "enum": [api_version]}
    schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
    return schema


# --- output -----------------------------------------------------------------------------------------------

def file_name(group, version, kind):
    """The name kubeconform's '{{ .ResourceKind }}{{ .KindSuffix }}.json' gives to this group, version, kind
    (pkg/registry/registry.go: kind in lower case, "-" and the first label of the group, or the version of
    the core group, then "-" and the version for a named group)."""
    if group:
        return f"{kind}-{group.split('.')[0]}-{version}.json".lower()
    return f"{kind}-{version}.json".lower()


class Writer:
    def __init__(self, outdir):
        self.outdir = outdir
        self.written = {}  # file name -> (group, version, kind)
        os.makedirs(outdir, exist_ok=True)

    def write(self, group, version, kind, schema):
        name = file_name(group, version, kind)
        if name in self.written and self.written[name] != (group, version, kind):
            sys.exit(f"kube-schemas.py: {self.written[name]} and {(group, version, kind)} would both be {name}")
        self.written[name] = (group, version, kind)
        self.dump(name, schema)

    def dump(self, name, schema):
        path = os.path.join(self.outdir, name)
        with open(path + ".part", "w") as f:
            json.dump(schema, f, sort_keys=True, separators=(",", ":"))
            f.write("\n")
        os.replace(path + ".part", path)


def kubernetes(outdir, swagger):
    with open(swagger) as f:
        definitions = json.load(f)["definitions"]
    definitions[QUANTITY] = {"type": ["string", "number"]}  # "500m", 1, 0.5
    writer = Writer(outdir)
    for name, definition in sorted(definitions.items()):
        gvks = definition.get("x-kubernetes-group-version-kind", [])
        if not gvks:
            continue
        root, recursive = expand(definitions, name)
        if recursive:
            root["definitions"] = recursive
        root = tighten(root)
        for gvk in gvks:
            writer.write(gvk["group"], gvk["version"], gvk["kind"],
                         pin_gvk(root, gvk["group"], gvk["version"], gvk["kind"]))
    meta, recursive = expand(definitions, OBJECT_META)
    assert not recursive, "ObjectMeta is not recursive"
    writer.dump("_objectmeta.json", tighten(meta))
    print(f"kube-schemas.py: {len(writer.written)} schemas in {outdir}", file=sys.stderr)


def custom_resource_definitions(paths):
    try:
        import yaml
    except ImportError:
        sys.exit("kube-schemas.py: reading CRDs needs PyYAML, which the Python of hack/tools.sh crd-schemas has")

    for path in paths:
        with open(path) as f:
            for document in yaml.safe_load_all(f):
                if not isinstance(document, dict):
                    continue
                for item in document.get("items", []) if document.get("kind") == "List" else [document]:
                    if item.get("kind") != "CustomResourceDefinition":
                        continue
                    if item.get("apiVersion") != "apiextensions.k8s.io/v1":
                        sys.exit(f"kube-schemas.py: {path}: {item['metadata']['name']} is {item.get('apiVersion')}; "
                                 "only apiextensions.k8s.io/v1 CRDs are read")
                    yield path, item


def crds(outdir, paths, object_meta):
    meta = None
    if object_meta:
        with open(object_meta) as f:
            meta = json.load(f)
    writer = Writer(outdir)
    for path, crd in custom_resource_definitions(paths):
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = copy.deepcopy(version.get("schema", {}).get("openAPIV3Schema"))
            if schema is None:
                sys.exit(f"kube-schemas.py: {path}: {crd['metadata']['name']} {version['name']} has no schema")
            schema.setdefault("type", "object")
            schema.setdefault("properties", {})
            crd_meta = schema["properties"].get("metadata", {"type": "object"})
            schema = tighten(schema, meta)
            if meta:
                # The API server checks a custom resource's metadata as an ObjectMeta; the CRD may only
                # narrow name and generateName.
                narrowing = tighten(crd_meta)
                narrowing.pop("additionalProperties", None)
                schema["properties"]["metadata"] = (meta if set(narrowing) <= {"type"}
                                                    else {"allOf": [meta, narrowing]})
            writer.write(group, version["name"], kind, pin_gvk(schema, group, version["name"], kind))
    print(f"kube-schemas.py: {len(writer.written)} schemas in {outdir}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    k = modes.add_parser("kubernetes", help="the built-in kinds, from the API's OpenAPI (v2) document")
    k.add_argument("outdir")
    k.add_argument("swagger")
    c = modes.add_parser("crds", help="the CustomResourceDefinitions in YAML files")
    c.add_argument("--object-meta", help="the schema of ObjectMeta (OUTDIR/_objectmeta.json of the kubernetes mode)")
    c.add_argument("outdir")
    c.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.mode == "kubernetes":
        kubernetes(args.outdir, args.swagger)
    else:
        crds(args.outdir, args.files, args.object_meta)


if __name__ == "__main__":
    main()
