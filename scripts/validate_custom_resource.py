"""Validates custom resources against their CRD's openAPIV3Schema, as the API server does with
strict field validation: schema violations and unknown fields (where the schema does not
preserve them) are errors. Usage: validate_custom_resource.py CRD.yaml RESOURCE.yaml..."""
import sys

import jsonschema
import yaml


def unknown_fields(value, schema, path):
    """Field paths in `value` that `schema` neither lists nor preserves."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if path == "" and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                yield from unknown_fields(item, props[key], sub)
            elif isinstance(extra, dict):
                yield from unknown_fields(item, extra, sub)
            elif extra is not True:
                yield sub
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], f"{path}[{i}]")


def main():
    crd = yaml.safe_load(open(sys.argv[1]))
    versions = {f"{crd['spec']['group']}/{v['name']}": v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}
    kind = crd["spec"]["names"]["kind"]
    failed = False
    for path in sys.argv[2:]:
        for doc in yaml.safe_load_all(open(path)):
            if not doc or doc.get("kind") != kind:
                continue
            schema = versions.get(doc.get("apiVersion"))
            name = f"{path}: {kind}/{doc['metadata']['name']}"
            if schema is None:
                print(f"{name}: apiVersion {doc.get('apiVersion')} is not served by the CRD")
                failed = True
                continue
            errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
            errors += [f"{field}: unknown field" for field in unknown_fields(doc, schema, "")]
            for e in errors:
                print(f"{name}: {e}")
            failed |= bool(errors)
            if not errors:
                print(f"{name}: valid")
    sys.exit(1 if failed else 0)


main()
