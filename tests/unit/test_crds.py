"""The TradingPair and Wallet CRDs: generated files current, valid for every Kubernetes
version we support, structural, and the examples under manifests/ valid against them."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cel
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor
from packaging.version import Version

from tradeplane.domain.pairs import DEMO_PAIRS, rules_from_spec
from tradeplane_operator import crds as crd_source

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OLDEST_KUBERNETES = Version("1.30")

Schema = dict[str, Any]
CRDS: dict[str, Schema] = {crd["spec"]["names"]["kind"]: crd for crd in crd_source.crds()}

# The shared contract; the operator, the chart and rules_from_spec build on these names.
TRADINGPAIR_SPEC = {
    "base", "quote", "tickSize", "lotSize", "minQuantity", "maxQuantity", "minNotional",
    "priceBandPercent", "makerFee", "takerFee", "trading", "engine", "selfTradePreventionMode",
}
TRADINGPAIR_REQUIRED = {"base", "quote", "tickSize", "lotSize", "maxQuantity", "minNotional"}
TRADINGPAIR_STATUS = {"observedGeneration", "symbol", "conditions", "engine"}
WALLET_SPEC = {
    "chain", "family", "network", "asset", "rpc", "confirmations", "hotWallet", "sweep",
    "watcher", "withdrawals",
}
WALLET_STATUS = {
    "observedGeneration", "conditions", "watcherReady", "lastScannedBlock", "pendingDeposits",
}


def kubernetes_versions() -> list[str]:
    """Every Kubernetes minor version kubernetes-validate ships schemas for, 1.30 onwards."""
    shipped = {major_minor(version) for version in all_versions()}
    return sorted((v for v in shipped if Version(v) >= OLDEST_KUBERNETES), key=Version)


def openapi_schema(kind: str) -> Schema:
    schema: Schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def subschemas(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its path (properties, additionalProperties, items)."""
    yield path or "<root>", schema
    for name, prop in schema.get("properties", {}).items():
        yield from subschemas(prop, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from subschemas(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from subschemas(schema["items"], f"{path}[]")


def strict(schema: Schema) -> Schema:
    """The schema with unknown fields rejected, as kubectl's strict field validation does
    (the API server would otherwise prune them silently). ``x-kubernetes-*`` keys stay in:
    jsonschema ignores keywords it does not know, and so does this emulation."""
    schema = copy.deepcopy(schema)
    for _, node in subschemas(schema):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    return schema


def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(strict(openapi_schema(kind)))


def with_defaults(schema: Schema, value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server stores it."""
    if isinstance(value, dict) and "properties" in schema:
        value = dict(value)
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = with_defaults(prop, value[name])
    elif isinstance(value, list) and "items" in schema:
        value = [with_defaults(schema["items"], item) for item in value]
    return value


def example(name: str) -> Schema:
    document: Schema = yaml.safe_load((MANIFESTS / name).read_text())
    return document


EXAMPLES = sorted(path.name for path in MANIFESTS.glob("*.yaml"))
PAIR_EXAMPLES = [name for name in EXAMPLES if name.startswith("tradingpair-")]


# --------------------------------------------------------------------------------------
# Generated files
# --------------------------------------------------------------------------------------


def test_generated_files_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    status = crd_source.main(["--check"])
    assert status == 0, capsys.readouterr().err + "(regenerate the CRD files)"


def test_check_reports_a_stale_or_missing_file(tmp_path: Path) -> None:
    crd_source.write_files(tmp_path)
    assert crd_source.main(["--check", "--root", str(tmp_path)]) == 0
    wallet = tmp_path / "crds/wallet.yaml"
    wallet.write_text(wallet.read_text().replace("confirmations", "confirmation"))
    assert crd_source.stale_files(tmp_path) == ["crds/wallet.yaml"]
    assert crd_source.main(["--check", "--root", str(tmp_path)]) == 1
    (tmp_path / crd_source.CHART_FILE).unlink()
    assert crd_source.main(["--check", "--root", str(tmp_path)]) == 1
    assert crd_source.write_files(tmp_path) == ["crds/wallet.yaml", crd_source.CHART_FILE]
    assert crd_source.main(["--check", "--root", str(tmp_path)]) == 0


def test_crd_files_hold_the_source() -> None:
    for kind, name in crd_source.CRD_FILES.items():
        assert yaml.safe_load((ROOT / name).read_text()) == CRDS[kind]


def test_chart_copy_holds_both_crds_kept_on_uninstall_with_chart_labels() -> None:
    lines = (ROOT / crd_source.CHART_FILE).read_text().splitlines()
    assert lines[0] == "{{- if .Values.crds.install }}"
    assert lines[-1] == "{{- end }}"
    include = '    {{- include "tradeplane.labels" . | nindent 4 }}'
    assert lines.count(include) == 2
    body = lines[1:-1]
    # No other template action: a "{{" in a description would be rendered by Helm.
    assert not [line for line in body if "{{" in line and line != include]
    stub_labels = "    app.kubernetes.io/name: tradeplane"
    documents = [
        doc for doc in yaml.safe_load_all(
            "\n".join(stub_labels if line == include else line for line in body)
        ) if doc
    ]
    assert [doc["spec"]["names"]["kind"] for doc in documents] == ["TradingPair", "Wallet"]
    for doc in documents:
        crd = CRDS[doc["spec"]["names"]["kind"]]
        assert doc["metadata"] == {
            "name": crd["metadata"]["name"],
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {"app.kubernetes.io/name": "tradeplane"},
        }
        assert {k: v for k, v in doc.items() if k != "metadata"} == {
            k: v for k, v in crd.items() if k != "metadata"
        }


# --------------------------------------------------------------------------------------
# The CRDs against Kubernetes' own schemas, and the structural-schema rules
# --------------------------------------------------------------------------------------


def test_kubernetes_versions_span_1_30_to_the_newest_shipped() -> None:
    versions = kubernetes_versions()
    assert versions[0] == "1.30"
    assert versions[-1] == major_minor(kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", kubernetes_versions())
@pytest.mark.parametrize("kind", sorted(CRDS))
def test_crd_passes_kubernetes_validate_strict(kind: str, version: str) -> None:
    # validate() answers the schema version it used: make sure it is not an older one.
    assert kubernetes_validate.validate(CRDS[kind], version, strict=True) == version


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_names_group_and_version(kind: str) -> None:
    spec = CRDS[kind]["spec"]
    names = spec["names"]
    assert CRDS[kind]["metadata"]["name"] == f"{names['plural']}.trading.tradeplane.io"
    assert spec["group"] == "trading.tradeplane.io" and spec["scope"] == "Namespaced"
    assert names["singular"] == kind.lower() and names["listKind"] == f"{kind}List"
    assert (names["plural"], names["shortNames"]) == {
        "TradingPair": ("tradingpairs", ["tp"]), "Wallet": ("wallets", ["wl"])
    }[kind]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_contract_fields() -> None:
    pair = openapi_schema("TradingPair")["properties"]
    assert set(pair["spec"]["properties"]) == TRADINGPAIR_SPEC
    assert set(pair["spec"]["required"]) == TRADINGPAIR_REQUIRED
    assert set(pair["status"]["properties"]) == TRADINGPAIR_STATUS
    assert set(pair["status"]["properties"]["engine"]["properties"]) == {
        "ready", "lastSequence", "openOrders"
    }
    condition = pair["status"]["properties"]["conditions"]["items"]["properties"]
    assert set(condition) == {"type", "status", "reason", "message", "lastTransitionTime"}
    assert condition["type"]["enum"] == ["Ready", "Halted", "Degraded"]
    assert condition["status"]["enum"] == ["True", "False", "Unknown"]
    wallet = openapi_schema("Wallet")["properties"]
    assert set(wallet["spec"]["properties"]) == WALLET_SPEC
    assert set(wallet["status"]["properties"]) == WALLET_STATUS
    assert set(wallet["spec"]["properties"]["rpc"]["properties"]) == {
        "url", "vaultPath", "wallet", "daemonUrl", "accountIndex"}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("TradingPair", [("Symbol", ".status.symbol"), ("State", ".spec.trading"),
                         ("Ready", ".status.engine.ready"),
                         ("Last Seq", ".status.engine.lastSequence"),
                         ("Age", ".metadata.creationTimestamp")]),
        ("Wallet", [("Chain", ".spec.chain"), ("Network", ".spec.network"),
                    ("Ready", ".status.watcherReady"),
                    ("Last Block", ".status.lastScannedBlock"),
                    ("Age", ".metadata.creationTimestamp")]),
    ],
)
def test_printer_columns_point_at_fields_of_their_type(
    kind: str, columns: list[tuple[str, str]]
) -> None:
    printed = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"]) for c in printed] == columns
    for column in printed:
        if column["jsonPath"].startswith(".metadata."):
            continue
        node = openapi_schema(kind)
        for name in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][name]
        assert column["type"] == node["type"], column


JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
NOT_IN_JUNCTORS = {"type", "default", "description", "additionalProperties", "nullable"}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    """The rules the API server applies to a structural schema, as far as they are ours."""
    schema = openapi_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in subschemas(schema):
        untyped_ok = node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"
        )
        assert "type" in node or untyped_ok, f"{path}: no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "array":
            assert "items" in node, f"{path}: array without items"
        assert set(node.get("required", ())) <= set(node.get("properties", {})), path
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"]["required"]), f"{path}: map keys optional"
        for junctor in JUNCTORS:
            members = node.get(junctor, [])
            for member in members if isinstance(members, list) else [members]:
                forbidden = NOT_IN_JUNCTORS & set(member)
                if node.get("x-kubernetes-int-or-string") and member in (
                    {"type": "integer"}, {"type": "string"}
                ):
                    continue  # the one exception the API server allows
                assert not forbidden, f"{path}.{junctor}: {forbidden}"
        if "default" in node:
            jsonschema.validate(node["default"], node)


# --------------------------------------------------------------------------------------
# CEL rules: each present where it belongs, well-formed on its face, naming fields that
# exist and guarding optional ones with has() (an absent field is an error). The rules are
# also evaluated by a real CEL interpreter, further down ("CEL rules evaluated").
# --------------------------------------------------------------------------------------


EXPECTED_RULES = {
    ("TradingPair", ".spec"): ["self.base != self.quote"],
    ("TradingPair", ".spec.base"): ["self == oldSelf"],
    ("TradingPair", ".spec.quote"): ["self == oldSelf"],
    ("TradingPair", ".spec.tickSize"): ["self.matches('[1-9]')"],
    ("TradingPair", ".spec.lotSize"): ["self.matches('[1-9]')"],
    ("TradingPair", ".spec.minQuantity"): ["self.matches('[1-9]')"],
    ("TradingPair", ".spec.maxQuantity"): ["self.matches('[1-9]')"],
    ("Wallet", ".spec"): [
        "!has(self.family) || (self.chain == 'monero') == (self.family == 'monero')"
    ],
    ("Wallet", ".spec.chain"): ["self == oldSelf"],
    ("Wallet", ".spec.network"): ["self == oldSelf"],
    ("Wallet", ".spec.asset"): ["self == oldSelf"],
    ("Wallet", ".spec.sweep"): [
        "!self.enabled || (has(self.address) && has(self.threshold))"
    ],
    ("Wallet", ".spec.withdrawals.min"): ["self.matches('[1-9]')"],
}


def all_rules() -> list[tuple[str, str, Schema, Schema]]:
    return [
        (kind, path, node, rule)
        for kind in sorted(CRDS)
        for path, node in subschemas(openapi_schema(kind))
        for rule in node.get("x-kubernetes-validations", [])
    ]


def test_cel_rules_are_where_they_belong() -> None:
    found: dict[tuple[str, str], list[str]] = {}
    for kind, path, _, rule in all_rules():
        found.setdefault((kind, path), []).append(rule["rule"])
    assert found == EXPECTED_RULES


@pytest.mark.parametrize(
    ("kind", "path", "node", "rule"), all_rules(),
    ids=[f"{kind}{path}-{rule['rule']}" for kind, path, _, rule in all_rules()],
)
def test_cel_rule_is_well_formed(kind: str, path: str, node: Schema, rule: Schema) -> None:
    text = rule["rule"]
    assert set(rule) <= {"rule", "message", "fieldPath"}
    assert rule["message"] and "\n" not in rule["message"]
    unquoted = re.sub(r"'[^']*'", "''", text)
    assert "'" not in unquoted.replace("''", ""), "unbalanced quotes"
    depth = 0
    for char in unquoted:
        depth += {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0, "unbalanced parentheses"
    assert depth == 0, "unbalanced parentheses"
    identifiers = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", unquoted))
    fields = set(node.get("properties", {}))
    assert identifiers <= {"self", "oldSelf", "has", "matches"} | fields, identifiers
    referenced = set(re.findall(r"\bself\.([A-Za-z_]\w*)\b(?!\()", unquoted))
    assert referenced <= fields
    always_present = set(node.get("required", ())) | {
        name for name in fields if "default" in node["properties"][name]
    }
    guarded = set(re.findall(r"has\(self\.([A-Za-z_]\w*)\)", unquoted))
    assert referenced - always_present <= guarded, "optional field used without has()"
    if "fieldPath" in rule:
        assert rule["fieldPath"].lstrip(".") in fields


# --------------------------------------------------------------------------------------
# The examples under manifests/
# --------------------------------------------------------------------------------------


def test_examples_exist() -> None:
    assert EXAMPLES == [
        "tradingpair-btc-usdt.yaml", "tradingpair-eth-btc.yaml", "tradingpair-eth-usdt.yaml",
        "wallet-litecoin-regtest.yaml", "wallet-monero-regtest.yaml",
    ]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_validates_against_its_crd(name: str) -> None:
    document = example(name)
    assert document["apiVersion"] == "trading.tradeplane.io/v1alpha1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])
    errors = list(validator(document["kind"]).iter_errors(document))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    defaulted = with_defaults(openapi_schema(document["kind"]), document)
    assert not list(validator(document["kind"]).iter_errors(defaulted))


@pytest.mark.parametrize("name", PAIR_EXAMPLES)
def test_pair_example_gives_the_demo_pair_rules(name: str) -> None:
    document = example(name)
    demo = {pair.name.lower(): pair for pair in DEMO_PAIRS}[document["metadata"]["name"]]
    assert rules_from_spec(document["spec"]) == demo
    # As stored by the API server, with the schema's defaults filled in: the same rules.
    defaulted = with_defaults(openapi_schema("TradingPair"), document)
    assert rules_from_spec(defaulted["spec"]) == demo


def test_pair_examples_cover_every_demo_pair() -> None:
    names = {example(name)["metadata"]["name"] for name in PAIR_EXAMPLES}
    assert names == {pair.name.lower() for pair in DEMO_PAIRS}


def test_schema_defaults_mean_what_rules_from_spec_assumes() -> None:
    minimal = {key: example("tradingpair-eth-btc.yaml")["spec"][key] for key in
               TRADINGPAIR_REQUIRED}
    spec_schema = openapi_schema("TradingPair")["properties"]["spec"]
    assert rules_from_spec(with_defaults(spec_schema, minimal)) == rules_from_spec(minimal)


Mutation = Callable[[Schema], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(document: Schema) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return mutate


def _drop(path: str) -> Mutation:
    def mutate(document: Schema) -> None:
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


REJECTED = [
    # (example, change, the JSON-schema keyword that must reject it)
    ("tradingpair-btc-usdt.yaml", _set("spec.base", "btc"), "pattern"),
    ("tradingpair-btc-usdt.yaml", _set("spec.quote", "TOOLONGASSETNAME"), "pattern"),
    ("tradingpair-btc-usdt.yaml", _set("spec.tickSize", "0.000000001"), "pattern"),
    ("tradingpair-btc-usdt.yaml", _set("spec.lotSize", "1e-5"), "pattern"),
    ("tradingpair-btc-usdt.yaml", _set("spec.minNotional", 5), "type"),
    ("tradingpair-btc-usdt.yaml", _set("spec.makerFee", "1.5"), "pattern"),
    ("tradingpair-btc-usdt.yaml", _set("spec.takerFee", "0.0000001"), "pattern"),
    ("tradingpair-btc-usdt.yaml", _drop("spec.tickSize"), "required"),
    ("tradingpair-btc-usdt.yaml", _drop("spec.minNotional"), "required"),
    ("tradingpair-btc-usdt.yaml", _set("spec.trading", "paused"), "enum"),
    ("tradingpair-btc-usdt.yaml", _set("spec.priceBandPercent", 0), "minimum"),
    ("tradingpair-btc-usdt.yaml", _set("spec.priceBandPercent", 101), "maximum"),
    ("tradingpair-btc-usdt.yaml", _set("spec.tickSise", "0.01"), "additionalProperties"),
    ("tradingpair-btc-usdt.yaml", _set("spec.engine.resources.requests.cpu", "lots"),
     "pattern"),
    ("tradingpair-btc-usdt.yaml", _set("spec.engine.replicas", 2), "additionalProperties"),
    ("tradingpair-btc-usdt.yaml", _set("status.conditions", [{"type": "Happy",
                                                              "status": "True"}]), "enum"),
    ("wallet-litecoin-regtest.yaml", _set("spec.chain", "dogecoin"), "enum"),
    ("wallet-litecoin-regtest.yaml", _set("spec.network", "signet"), "enum"),
    ("wallet-litecoin-regtest.yaml", _set("spec.family", "ethereum"), "enum"),
    ("wallet-litecoin-regtest.yaml", _set("spec.asset", "ltc"), "pattern"),
    ("wallet-litecoin-regtest.yaml", _set("spec.rpc.url", "ftp://node:21"), "pattern"),
    ("wallet-litecoin-regtest.yaml", _set("spec.rpc.vaultPath", "/secret/x"), "pattern"),
    ("wallet-litecoin-regtest.yaml", _drop("spec.rpc.vaultPath"), "required"),
    ("wallet-litecoin-regtest.yaml", _drop("spec.confirmations"), "required"),
    ("wallet-litecoin-regtest.yaml", _set("spec.confirmations", 0), "minimum"),
    ("wallet-litecoin-regtest.yaml", _set("spec.hotWallet.maxBalance", "-1"), "pattern"),
    ("wallet-monero-regtest.yaml", _set("spec.sweep.enabled", "yes"), "type"),
]


@pytest.mark.parametrize(("name", "change", "keyword"), REJECTED)
def test_schema_rejects(name: str, change: Mutation, keyword: str) -> None:
    document = example(name)
    change(document)
    errors = list(validator(document["kind"]).iter_errors(document))
    assert keyword in {error.validator for error in errors}, [e.message for e in errors]


# --------------------------------------------------------------------------------------
# CEL rules evaluated. No API server runs here, so the common-expression-language package
# (cel-rust) evaluates every x-kubernetes-validations rule of the CRD files as the API
# server would: on the value at the rule's node, when that value is present, after
# defaulting; a transition rule (one naming oldSelf) only on an update where the old
# object has the value too. The rules use only standard CEL (has(), matches()), none of
# Kubernetes' extension libraries, so nothing had to be written for the interpreter.
# --------------------------------------------------------------------------------------


def shipped_rules(kind: str) -> list[tuple[str, str]]:
    """(path, rule) of every rule in the CRD file the chart and kubectl apply."""
    crd = yaml.safe_load((ROOT / crd_source.CRD_FILES[kind]).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return [
        (path, rule["rule"])
        for path, node in subschemas(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]


_ABSENT = object()


def value_at(document: Any, path: str) -> Any:
    node = document
    for key in path.strip(".").split("."):
        if not isinstance(node, dict) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def cel_refusals(new: Schema, old: Schema | None = None) -> set[str]:
    """``path: rule`` of every rule that refuses ``new`` (created, or updated from
    ``old``); both are defaulted first, as the API server stores them."""
    kind = new["kind"]
    new = with_defaults(openapi_schema(kind), new)
    old = with_defaults(openapi_schema(kind), old) if old is not None else None
    refused = set()
    for path, rule in shipped_rules(kind):
        value = value_at(new, path)
        if value is _ABSENT:
            continue
        context = {"self": value}
        if re.search(r"\boldSelf\b", rule):
            old_value = _ABSENT if old is None else value_at(old, path)
            if old_value is _ABSENT:
                continue
            context["oldSelf"] = old_value
        result = cel.evaluate(rule, context)
        assert isinstance(result, bool), (path, rule, result)
        if not result:
            refused.add(f"{path}: {rule}")
    return refused


def test_every_rule_of_both_crds_is_evaluated() -> None:
    assert {kind for kind, _ in EXPECTED_RULES} == set(crd_source.CRD_FILES)
    for kind in crd_source.CRD_FILES:
        found = {(kind, path, rule) for path, rule in shipped_rules(kind)}
        expected = {(k, path, rule) for (k, path), rules in EXPECTED_RULES.items()
                    if k == kind for rule in rules}
        assert found == expected


@pytest.mark.parametrize("name", EXAMPLES)
def test_cel_rules_admit_the_example_created_and_updated_unchanged(name: str) -> None:
    assert cel_refusals(example(name)) == set()
    assert cel_refusals(example(name), old=example(name)) == set()


@pytest.mark.parametrize("name", EXAMPLES)
def test_cel_rules_admit_changes_to_the_mutable_fields(name: str) -> None:
    new = example(name)
    if new["kind"] == "TradingPair":
        _set("spec.tickSize", "0.5")(new)
        _set("spec.trading", False)(new)
    else:
        _set("spec.confirmations", 99)(new)
        _set("spec.sweep", {"enabled": True, "address": "cold", "threshold": "7"})(new)
    assert cel_refusals(new, old=example(name)) == set()


PAIR = "tradingpair-eth-btc.yaml"
LITECOIN = "wallet-litecoin-regtest.yaml"
MONERO = "wallet-monero-regtest.yaml"

# (example, change, is it an update of the unchanged example, the rules that refuse it)
CEL_REFUSED: list[tuple[str, Mutation, bool, set[str]]] = [
    (PAIR, _set("spec.quote", "ETH"), False, {".spec: self.base != self.quote"}),
    (PAIR, _set("spec.base", "LTC"), True, {".spec.base: self == oldSelf"}),
    (PAIR, _set("spec.quote", "USDT"), True, {".spec.quote: self == oldSelf"}),
    # both renamed to the same asset on an update: three rules at once
    (PAIR, _set("spec", {**example(PAIR)["spec"], "base": "LTC", "quote": "LTC"}), True,
     {".spec: self.base != self.quote", ".spec.base: self == oldSelf",
      ".spec.quote: self == oldSelf"}),
    (PAIR, _set("spec.tickSize", "0.00000"), False, {".spec.tickSize: self.matches('[1-9]')"}),
    (PAIR, _set("spec.lotSize", "0"), False, {".spec.lotSize: self.matches('[1-9]')"}),
    (PAIR, _set("spec.minQuantity", "0.000"), False,
     {".spec.minQuantity: self.matches('[1-9]')"}),
    (PAIR, _set("spec.maxQuantity", "000"), True, {".spec.maxQuantity: self.matches('[1-9]')"}),
    (LITECOIN, _set("spec.family", "monero"), False,
     {".spec: !has(self.family) || (self.chain == 'monero') == (self.family == 'monero')"}),
    (MONERO, _set("spec.family", "bitcoin"), False,
     {".spec: !has(self.family) || (self.chain == 'monero') == (self.family == 'monero')"}),
    (LITECOIN, _set("spec.chain", "bitcoin"), True, {".spec.chain: self == oldSelf"}),
    (LITECOIN, _set("spec.network", "testnet"), True, {".spec.network: self == oldSelf"}),
    (LITECOIN, _set("spec.asset", "BTC"), True, {".spec.asset: self == oldSelf"}),
    (LITECOIN, _set("spec.sweep.enabled", True), False,
     {".spec.sweep: !self.enabled || (has(self.address) && has(self.threshold))"}),
    (MONERO, _set("spec.sweep", {"enabled": True, "address": "cold"}), True,
     {".spec.sweep: !self.enabled || (has(self.address) && has(self.threshold))"}),
    (LITECOIN, _set("spec.withdrawals", {"min": "0.0"}), False,
     {".spec.withdrawals.min: self.matches('[1-9]')"}),
]


@pytest.mark.parametrize(
    ("name", "change", "update", "refused"), CEL_REFUSED,
    ids=[f"{name}-{sorted(refused)}" for name, _, _, refused in CEL_REFUSED],
)
def test_cel_rules_refuse(name: str, change: Mutation, update: bool, refused: set[str]) -> None:
    new = example(name)
    change(new)
    assert cel_refusals(new, old=example(name) if update else None) == refused
    # The change passes the JSON schema: only the CEL rule stands in its way.
    assert not list(validator(new["kind"]).iter_errors(new))


def test_every_cel_rule_refuses_something() -> None:
    refusing = set().union(*(refused for *_, refused in CEL_REFUSED))
    every = {f"{path}: {rule}" for kind in crd_source.CRD_FILES
             for path, rule in shipped_rules(kind)}
    assert refusing == every


@pytest.mark.parametrize(
    "change",
    [_set("spec.base", "LTC"), _set("spec.quote", "USDT")],
)
def test_immutability_rules_do_not_apply_on_create(change: Mutation) -> None:
    new = example(PAIR)
    change(new)
    assert cel_refusals(new) == set()
