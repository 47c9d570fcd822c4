"""Check offline what hassfest and the HACS action would check, one line per problem.

    scripts/validate [ROOT]      (ROOT: the repository, by default this one; exit 1 on problems)

- manifest.json: `domain`, `name` first then the keys in alphabetical order; the required keys
  and their types; `dependencies` names mqtt; `config_flow` true; `integration_type` hub; a
  valid `iot_class`; a `version` AwesomeVersion accepts; `mqtt` discovery topics a list of strings.
- hacs.json: only the keys HACS knows, `name` required, `homeassistant` a valid version.
- Every JSON file of the integration (and hacs.json) parses.
- translations/en.json against the code (read with `ast`, constants resolved): every exception,
  repair issue, selector and entity translation key the code uses exists, and none is unused;
  config and options flow steps, menu options, errors and aborts likewise; every action of
  services.yaml and each of its fields has a name and a description, every action the code
  registers is in services.yaml (and the other way round); icons.json names the same actions.
- brand/icon.png is a 256x256 PNG (icon@2x.png, if present, 512x512).
- quality_scale.yaml, if present: every rule of the quality scale, each `done`, `todo` or
  `exempt`, the last two with a `comment`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
import json
from pathlib import Path
import struct
import sys
from typing import Any

from awesomeversion import AwesomeVersion, AwesomeVersionStrategy
from awesomeversion.exceptions import AwesomeVersionException
import yaml  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parent.parent

MANIFEST_REQUIRED = (
    "domain",
    "name",
    "codeowners",
    "documentation",
    "iot_class",
    "issue_tracker",
    "version",
)
# The keys of hassfest's manifest schema (custom integrations).
MANIFEST_KNOWN = {
    *MANIFEST_REQUIRED,
    "after_dependencies",
    "bluetooth",
    "config_flow",
    "dependencies",
    "dhcp",
    "disabled",
    "homekit",
    "import_executor",
    "integration_type",
    "loggers",
    "mqtt",
    "quality_scale",
    "requirements",
    "single_config_entry",
    "ssdp",
    "usb",
    "zeroconf",
}
IOT_CLASSES = {
    "assumed_state",
    "calculated",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
}
VERSION_STRATEGIES = [
    AwesomeVersionStrategy.CALVER,
    AwesomeVersionStrategy.SEMVER,
    AwesomeVersionStrategy.SIMPLEVER,
    AwesomeVersionStrategy.BUILDVER,
    AwesomeVersionStrategy.PEP440,
]
# HACS' hacs.json schema: key -> accepted types.
HACS_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "homeassistant": (str,),
    "hacs": (str,),
    "content_in_root": (bool,),
    "zip_release": (bool,),
    "filename": (str,),
    "hide_default_branch": (bool,),
    "country": (str, list),
    "persistent_directory": (str,),
    "render_readme": (bool,),
}
# The rules as every core integration's quality_scale.yaml lists them (Home Assistant 2026.10).
QUALITY_RULES = {
    "bronze": [
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow",
        "config-flow-test-coverage",
        "dependency-transparency",
        "docs-actions",
        "docs-conditions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "docs-triggers",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    ],
    "silver": [
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    ],
    "gold": [
        "devices",
        "diagnostics",
        "discovery",
        "discovery-update-info",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    ],
    "platinum": ["async-dependency", "inject-websession", "strict-typing"],
}
QUALITY_STATUSES = {"done", "todo", "exempt"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ICON_SIZES = {"icon.png": 256, "icon@2x.png": 512}
FLOW_SECTIONS = ("config", "options")


def is_version(value: object) -> bool:
    """Return whether AwesomeVersion accepts the value as hassfest does."""
    if not isinstance(value, str):
        return False
    try:
        AwesomeVersion(value, ensure_strategy=VERSION_STRATEGIES)
    except AwesomeVersionException:
        return False
    return True


def is_str_list(value: object) -> bool:
    """Return whether the value is a list of strings."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# -- reading the code -----------------------------------------------------------------------------


@dataclass
class Flow:
    """What the flows of one section (config, options) use."""

    steps: set[str] = field(default_factory=set)
    step_methods: set[str] = field(default_factory=set)
    menus: dict[str, set[str]] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    aborts: set[str] = field(default_factory=set)


@dataclass
class Usage:
    """The translation keys and actions the integration's code uses, each with where."""

    strings: set[str] = field(default_factory=set)  # every string literal: keys used indirectly
    exceptions: dict[str, str] = field(default_factory=dict)
    issues: dict[str, str] = field(default_factory=dict)
    selectors: dict[str, str] = field(default_factory=dict)
    entities: dict[tuple[str, str], str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    flows: dict[str, Flow] = field(default_factory=lambda: {s: Flow() for s in FLOW_SECTIONS})
    # Errors set by a flow module's helper functions, outside any flow class: either section.
    shared_errors: dict[str, str] = field(default_factory=dict)


def _name(node: ast.expr) -> str:
    """Return the called or referenced name: `a.b.c` -> `c`."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def _flow_section(cls: ast.ClassDef) -> str | None:
    for base in map(_name, cls.bases):
        if base.endswith("ConfigFlow"):
            return "config"
        if base.startswith("OptionsFlow"):
            return "options"
    return None


class _Module(ast.NodeVisitor):
    """Collect what one module of the integration uses."""

    def __init__(self, usage: Usage, constants: dict[str, str], path: Path, tree: ast.AST) -> None:
        self.usage = usage
        self.constants = constants
        self.path = path
        self.platform = path.stem
        self.parents = {
            child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
        }
        self.classes = {
            node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
        }

    def where(self, node: ast.AST) -> str:
        """Return file:line of the node."""
        return f"{self.path.name}:{getattr(node, 'lineno', 0)}"

    def enclosing[T: ast.AST](self, node: ast.AST, kind: type[T]) -> T | None:
        """Return the nearest ancestor of the kind."""
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, kind):
            parent = self.parents.get(parent)
        return parent

    def function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """Return the function the node is in."""
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
            parent = self.parents.get(parent)
        return parent

    def values(self, node: ast.expr | None) -> set[str] | None:
        """Return the strings an expression can be, None when they cannot be known statically."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            body, orelse = self.values(node.body), self.values(node.orelse)
            return None if body is None or orelse is None else body | orelse
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return {self.constants[node.id]}
            return self.loop_values(node)
        return None

    def loop_values(self, name: ast.Name) -> set[str] | None:
        """Resolve a loop variable over a literal tuple: `for key, handler in ((A, f), (B, g))`."""
        loop = self.enclosing(name, ast.For)
        while loop is not None:
            targets = loop.target.elts if isinstance(loop.target, ast.Tuple) else [loop.target]
            names = [_name(t) for t in targets]
            if name.id in names and isinstance(loop.iter, ast.Tuple | ast.List):
                index = names.index(name.id)
                found: set[str] = set()
                for item in loop.iter.elts:
                    element = (
                        item.elts[index]
                        if isinstance(loop.target, ast.Tuple) and isinstance(item, ast.Tuple)
                        else item
                    )
                    if (values := self.values(element)) is None:
                        return None
                    found |= values
                return found
            loop = self.enclosing(loop, ast.For)
        return None

    def add(self, into: dict[Any, str], keys: Iterable[Any], node: ast.AST) -> None:
        """Record keys as used at the node (the first use is kept)."""
        for key in keys:
            into.setdefault(key, self.where(node))

    # -- visitors ---------------------------------------------------------------------------

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.usage.strings.add(node.value)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if (section := _flow_section(node)) is not None:
            flow = self.usage.flows[section]
            flow.step_methods |= {
                item.name.removeprefix("async_step_")
                for item in node.body
                if isinstance(item, ast.AsyncFunctionDef | ast.FunctionDef)
                and item.name.startswith("async_step_")
            }
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        called = _name(node.func)
        key = _keyword(node, "translation_key")
        if key is not None and (keys := self.values(key)) is not None:
            if _keyword(node, "translation_domain") is not None:
                self.add(self.usage.exceptions, keys, node)
            elif called == "async_create_issue":
                self.add(self.usage.issues, keys, node)
            elif called.endswith("SelectorConfig"):
                self.add(self.usage.selectors, keys, node)
            elif called.endswith("EntityDescription"):
                self.add(self.usage.entities, ((self.platform, k) for k in keys), node)
        if called == "async_register" and len(node.args) >= 2:
            self.add(self.usage.services, self.values(node.args[1]) or (), node)
        if called in {"async_register_entity_service", "async_register_platform_entity_service"}:
            args = node.args[2:3] if called.endswith("platform_entity_service") else node.args[:1]
            for arg in args:
                self.add(self.usage.services, self.values(arg) or (), node)
        self.visit_flow_call(node, called)
        self.generic_visit(node)

    def visit_flow_call(self, node: ast.Call, called: str) -> None:
        cls = self.enclosing(node, ast.ClassDef)
        if cls is None or (section := _flow_section(cls)) is None:
            return
        flow = self.usage.flows[section]
        if (step := self.values(_keyword(node, "step_id"))) is not None:
            flow.steps |= step
            if called == "async_show_menu":
                for menu in step:
                    flow.menus.setdefault(menu, set()).update(self.menu_options(node, cls) - step)
        function = self.function(node)
        reason: set[str] | None = None
        if called == "async_abort":
            reason = self.values(_keyword(node, "reason"))
        elif called in {"_abort_if_unique_id_configured", "_async_abort_entries_match"}:
            reason = {"already_configured"}
        elif called == "_abort_if_unique_id_mismatch":
            reason = self.values(_keyword(node, "reason")) or {"unique_id_mismatch"}
        elif called == "async_update_reload_and_abort":
            default = (
                "reconfigure_successful"
                if function and "reconfigure" in function.name
                else "reauth_successful"
            )
            reason = self.values(_keyword(node, "reason")) or {default}
        flow.aborts |= reason or set()
        if isinstance(errors := _keyword(node, "errors"), ast.Dict):
            for value in errors.values:
                flow.errors |= self.values(value) or set()

    def menu_options(self, call: ast.Call, cls: ast.ClassDef) -> set[str]:
        """Return the steps a menu offers: its literal list, or the steps its function names."""
        options = _keyword(call, "menu_options")
        if isinstance(options, ast.List | ast.Tuple):
            return set().union(*(self.values(item) or set() for item in options.elts))
        function = self.function(call)
        steps = {
            item.name.removeprefix("async_step_")
            for item in cls.body
            if isinstance(item, ast.AsyncFunctionDef | ast.FunctionDef)
        }
        mentioned = {
            node.value
            for node in ast.walk(function or call)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        return mentioned & steps

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.assigned(target, node.value, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.assigned(node.target, node.value, node)
        self.generic_visit(node)

    def assigned(self, target: ast.expr, value: ast.expr, node: ast.AST) -> None:
        if _name(target) == "_attr_translation_key":
            keys = self.values(value)
            if keys is None and isinstance(value, ast.Name):
                keys = self.passed_to_init(value, node)
            self.add(self.usage.entities, ((self.platform, k) for k in keys or ()), node)
        elif (
            isinstance(target, ast.Subscript)
            and _name(target.value) == "errors"
            and (keys := self.values(value)) is not None
        ):
            cls = self.enclosing(node, ast.ClassDef)
            section = _flow_section(cls) if cls else None
            if section is None:
                self.add(self.usage.shared_errors, keys, node)
            else:
                self.usage.flows[section].errors |= keys

    def passed_to_init(self, param: ast.Name, node: ast.AST) -> set[str]:
        """Return the keys given to `__init__(..., key)` setting `_attr_translation_key = key`.

        Collected from `super().__init__(...)` in the module's subclasses and direct calls.
        """
        init = self.enclosing(node, ast.FunctionDef)
        cls = self.enclosing(node, ast.ClassDef)
        if init is None or cls is None or init.name != "__init__":
            return set()
        params = [arg.arg for arg in init.args.args[1:]]
        if param.id not in params:
            return set()
        index = params.index(param.id)
        subclasses: set[str] = set()
        bases = {cls.name}
        while bases:  # subclasses of subclasses too: a key may be passed down the hierarchy
            bases = {
                name for name, sub in self.classes.items() if bases & set(map(_name, sub.bases))
            } - subclasses
            subclasses |= bases
        found: set[str] = set()
        for call in ast.walk(self.enclosing(cls, ast.Module) or cls):
            if not isinstance(call, ast.Call):
                continue
            is_super = (
                isinstance(call.func, ast.Attribute)
                and call.func.attr == "__init__"
                and isinstance(call.func.value, ast.Call)
                and _name(call.func.value.func) == "super"
                and (owner := self.enclosing(call, ast.ClassDef)) is not None
                and owner.name in subclasses
            )
            if is_super or _name(call.func) == cls.name:
                argument = _keyword(call, param.id) or (
                    call.args[index] if index < len(call.args) else None
                )
                found |= self.values(argument) or set()
        return found


def read_code(package: Path) -> Usage:
    """Return what the integration's modules use."""
    usage = Usage()
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(package.glob("*.py"))}
    constants: dict[str, str] = {}
    for tree in trees.values():
        for node in getattr(tree, "body", []):
            target = (
                node.targets[0]
                if isinstance(node, ast.Assign) and len(node.targets) == 1
                else getattr(node, "target", None)
            )
            value = getattr(node, "value", None)
            if (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and isinstance(target, ast.Name)
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                constants[target.id] = value.value
    for path, tree in trees.items():
        _Module(usage, constants, path, tree).visit(tree)
    return usage


# -- the checks -----------------------------------------------------------------------------------


class Validator:
    """Run every check on one repository; `problems` collects one line per problem."""

    def __init__(self, root: Path) -> None:
        """Find the integration under root/custom_components."""
        self.root = root
        integrations = sorted((root / "custom_components").glob("*/manifest.json"))
        self.package = integrations[0].parent if integrations else root / "custom_components"
        self.problems: list[str] = []

    def problem(self, path: Path, message: str) -> None:
        """Record one problem of a file."""
        self.problems.append(f"{path.relative_to(self.root)}: {message}")

    def json(self, path: Path) -> Any:
        """Return the parsed file, None (and a problem) when it is missing or invalid."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            self.problem(path, "missing")
        except (ValueError, UnicodeDecodeError) as err:
            self.problem(path, f"invalid JSON: {err}")
        return None

    def yaml(self, path: Path) -> Any:
        """Return the parsed file, None (and a problem) when it is missing or invalid."""
        try:
            return yaml.safe_load(path.read_text())
        except FileNotFoundError:
            self.problem(path, "missing")
        except yaml.YAMLError as err:
            self.problem(path, f"invalid YAML: {str(err).splitlines()[0]}")
        return None

    def run(self) -> list[str]:
        """Run every check; return the problems."""
        if not (self.package / "manifest.json").is_file():
            self.problem(self.package, "no integration (custom_components/<domain>/manifest.json)")
            return self.problems
        self.check_json_files()
        self.check_manifest()
        self.check_hacs()
        self.check_brand()
        self.check_quality_scale()
        self.check_translations()
        return self.problems

    def check_json_files(self) -> None:
        """Every JSON file of the integration parses (those checked further are read there)."""
        checked = {self.package / "manifest.json", self.package / "translations" / "en.json"}
        checked |= {self.package / "icons.json", self.root / "hacs.json"}
        for path in sorted(self.package.rglob("*.json")):
            if path not in checked:
                self.json(path)

    def check_manifest(self) -> None:
        """Key order, required and known keys, and each key's type or value."""
        path = self.package / "manifest.json"
        manifest = self.json(path)
        if manifest is None:
            return
        if not isinstance(manifest, dict):
            self.problem(path, "not a JSON object")
            return
        keys = list(manifest)
        if keys[:2] != ["domain", "name"] or keys[2:] != sorted(keys[2:]):
            self.problem(path, "keys must be domain, name, then the others in alphabetical order")
        for key in MANIFEST_REQUIRED:
            if key not in manifest:
                self.problem(path, f"required key {key!r} missing")
        for key in sorted(set(manifest) - MANIFEST_KNOWN):
            self.problem(path, f"unknown key {key!r}")
        for key, ok, expected in self.manifest_rules():
            if key in manifest and not ok(manifest[key]):
                self.problem(path, f"{key!r} must be {expected}, not {manifest[key]!r}")

    def manifest_rules(self) -> Iterator[tuple[str, Any, str]]:
        """(key, check, what it must be) for each manifest key with a rule."""
        yield "domain", lambda v: v == self.package.name, f"the folder's name {self.package.name!r}"
        yield "name", lambda v: isinstance(v, str) and bool(v), "a non-empty string"
        yield (
            "codeowners",
            lambda v: is_str_list(v) and all(o.startswith("@") for o in v),
            "a list of @-names",
        )
        for key in ("documentation", "issue_tracker"):
            yield key, lambda v: isinstance(v, str) and v.startswith("https://"), "an https URL"
        yield "iot_class", lambda v: v in IOT_CLASSES, f"one of {sorted(IOT_CLASSES)}"
        yield "version", is_version, "a version AwesomeVersion accepts (e.g. 1.2.3)"
        yield "config_flow", lambda v: v is True, "true"
        yield "integration_type", lambda v: v == "hub", "'hub'"
        yield (
            "dependencies",
            lambda v: is_str_list(v) and "mqtt" in v,
            "a list of strings that names mqtt",
        )
        for key in ("after_dependencies", "requirements", "loggers"):
            yield key, is_str_list, "a list of strings"
        yield "mqtt", lambda v: is_str_list(v) and bool(v), "a non-empty list of topic strings"
        for key in ("single_config_entry", "import_executor"):
            yield key, lambda v: isinstance(v, bool), "true or false"

    def check_hacs(self) -> None:
        """Only the keys HACS knows, with their types; `name` required."""
        path = self.root / "hacs.json"
        hacs = self.json(path)
        if hacs is None:
            return
        if not isinstance(hacs, dict):
            self.problem(path, "not a JSON object")
            return
        if "name" not in hacs:
            self.problem(path, "required key 'name' missing")
        for key, value in hacs.items():
            if key not in HACS_KEYS:
                self.problem(path, f"unknown key {key!r} (HACS rejects it)")
            elif not isinstance(value, HACS_KEYS[key]):
                self.problem(path, f"{key!r} has the wrong type: {value!r}")
        if "homeassistant" in hacs and not is_version(hacs["homeassistant"]):
            self.problem(path, f"'homeassistant' is not a version: {hacs['homeassistant']!r}")

    def check_brand(self) -> None:
        """Check the brand icons are PNG files of the right size (from the IHDR chunk)."""
        for name, size in ICON_SIZES.items():
            path = self.package / "brand" / name
            if not path.is_file():
                if name == "icon.png":
                    self.problem(path, "missing")
                continue
            header = path.read_bytes()[:24]
            if header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
                self.problem(path, "not a PNG file")
                continue
            width, height = struct.unpack(">II", header[16:24])
            if (width, height) != (size, size):
                self.problem(path, f"is {width}x{height}, must be {size}x{size}")

    def check_quality_scale(self) -> None:
        """Every rule listed, each done, or todo/exempt with a comment."""
        path = self.package / "quality_scale.yaml"
        if not path.exists():
            return
        data = self.yaml(path)
        rules = data.get("rules") if isinstance(data, dict) else None
        if not isinstance(rules, dict):
            self.problem(path, "needs a 'rules' mapping")
            return
        known = {rule for tier in QUALITY_RULES.values() for rule in tier}
        for rule in sorted(set(rules) - known):
            self.problem(path, f"unknown rule {rule!r}")
        for rule in sorted(known - set(rules)):
            self.problem(path, f"rule {rule!r} missing")
        for rule, entry in rules.items():
            entry_dict: dict[str, Any] = entry if isinstance(entry, dict) else {"status": entry}
            status, comment = entry_dict.get("status"), entry_dict.get("comment")
            for key in sorted(set(entry_dict) - {"status", "comment"}):
                self.problem(path, f"rule {rule!r}: unknown key {key!r}")
            if status not in QUALITY_STATUSES:
                self.problem(path, f"rule {rule!r}: status must be done, todo or exempt")
            elif status != "done" and not (isinstance(comment, str) and comment.strip()):
                self.problem(path, f"rule {rule!r}: {status} needs a comment saying why")

    # -- translations ---------------------------------------------------------------------------

    def check_translations(self) -> None:
        """en.json against the code, services.yaml and icons.json."""
        self.en = self.package / "translations" / "en.json"
        strings = self.json(self.en)
        if not isinstance(strings, dict):
            if strings is not None:
                self.problem(self.en, "not a JSON object")
            return
        self.strings: dict[str, Any] = strings
        self.usage = read_code(self.package)
        services_path = self.package / "services.yaml"
        services = self.yaml(services_path) if services_path.exists() else {}
        self.services: dict[str, Any] = services if isinstance(services, dict) else {}
        for text in self.leaves(strings):
            if "[%key:" in text:
                self.problem(self.en, f"references are not resolved in custom integrations: {text}")
        self.check_keys()
        self.check_entities()
        for name in FLOW_SECTIONS:
            self.check_flow(name, self.section(name), self.usage.flows[name])
        shared = {**self.section("config", "error"), **self.section("options", "error")}
        self.missing(self.usage.shared_errors, shared, "config/options.error")
        self.check_services()
        self.check_icons()

    def section(self, *keys: str) -> dict[str, Any]:
        """Return a part of en.json, empty when absent."""
        node: Any = self.strings
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}

    def missing(self, used: dict[Any, str], known: Iterable[Any], what: str) -> None:
        """Report used keys that en.json lacks."""
        known = set(known)
        for key, where in sorted(used.items()):
            if key not in known:
                shown = ".".join(key) if isinstance(key, tuple) else key
                self.problem(self.en, f"{what}.{shown} missing (used at {where})")

    def unused(self, keys: Iterable[str], used: Iterable[str], what: str) -> None:
        """Report en.json keys nothing uses."""
        for key in sorted(set(keys) - set(used)):
            self.problem(self.en, f"{what}.{key} is not used")

    @staticmethod
    def leaves(node: Any) -> Iterator[str]:
        """Yield every string of a translation tree."""
        if isinstance(node, dict):
            for value in node.values():
                yield from Validator.leaves(value)
        elif isinstance(node, str):
            yield node

    def check_keys(self) -> None:
        """Exceptions, repair issues and selectors: used ones present, present ones used."""
        usage = self.usage
        exceptions = self.section("exceptions")
        self.missing(usage.exceptions, exceptions, "exceptions")
        self.unused(exceptions, usage.strings, "exceptions")
        for key, entry in exceptions.items():
            if not isinstance(entry, dict) or not entry.get("message"):
                self.problem(self.en, f"exceptions.{key} needs a message")
        issues = self.section("issues")
        self.missing(usage.issues, issues, "issues")
        self.unused(issues, usage.strings, "issues")
        for key, entry in issues.items():
            if not isinstance(entry, dict) or not entry.get("title"):
                self.problem(self.en, f"issues.{key} needs a title")
            elif not entry.get("description") and "fix_flow" not in entry:
                self.problem(self.en, f"issues.{key} needs a description or a fix_flow")
        yaml_selectors = self.service_selectors()
        selectors = self.section("selector")
        self.missing({**yaml_selectors, **usage.selectors}, selectors, "selector")
        self.unused(selectors, usage.strings | set(yaml_selectors), "selector")

    def check_entities(self) -> None:
        """Entity translation keys per platform: used ones present, present ones used."""
        entities = {
            (platform, key) for platform, keys in self.section("entity").items() for key in keys
        }
        self.missing(self.usage.entities, entities, "entity")
        for platform, key in sorted(entities):
            if not (self.package / f"{platform}.py").is_file():
                self.problem(self.en, f"entity.{platform}.{key}: the integration has no {platform}")
            elif key not in self.usage.strings:
                self.problem(self.en, f"entity.{platform}.{key} is not used")

    def check_flow(self, name: str, strings: dict[str, Any], flow: Flow) -> None:
        """Check steps, menu options, errors and aborts of the config or options flow."""
        steps = strings.get("step", {})
        for kind, used, known in (
            ("step", flow.steps, steps),
            ("error", flow.errors, strings.get("error", {})),
            ("abort", flow.aborts, strings.get("abort", {})),
        ):
            for key in sorted(used - set(known)):
                self.problem(self.en, f"{name}.{kind}.{key} missing")
            # Errors and aborts may be passed on from elsewhere (an exception's key): a key is
            # used when the code names it anywhere.
            seen = used | (self.usage.strings if kind != "step" else flow.step_methods)
            self.unused(known, seen, f"{name}.{kind}")
        for menu, options in sorted(flow.menus.items()):
            listed = steps.get(menu, {}).get("menu_options", {})
            for option in sorted(options - set(listed)):
                self.problem(self.en, f"{name}.step.{menu}.menu_options.{option} missing")
            for option in sorted(set(listed) - flow.step_methods):
                self.problem(self.en, f"{name}.step.{menu}.menu_options.{option}: no such step")

    def service_fields(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield each field of each action, sections opened: (action, field, its spec)."""
        for service, spec in self.services.items():
            for name, field_spec in ((spec or {}).get("fields") or {}).items():
                if isinstance(field_spec, dict) and "fields" in field_spec:  # a section
                    for inner, inner_spec in (field_spec["fields"] or {}).items():
                        yield service, inner, inner_spec or {}
                else:
                    yield service, name, field_spec or {}

    def service_selectors(self) -> dict[str, str]:
        """Return the selector translation keys services.yaml uses, with where."""
        found: dict[str, str] = {}
        for service, name, spec in self.service_fields():
            for config in (spec.get("selector") or {}).values():
                if isinstance(config, dict) and isinstance(config.get("translation_key"), str):
                    found[config["translation_key"]] = f"services.yaml {service}.{name}"
        return found

    def check_services(self) -> None:
        """Check the code's actions match services.yaml, each action and field translated."""
        yaml_path = self.package / "services.yaml"
        registered = self.usage.services
        for service, where in sorted(registered.items()):
            if service not in self.services:
                self.problem(yaml_path, f"action {service} (registered at {where}) missing")
        for service in sorted(set(self.services) - set(registered)):
            self.problem(yaml_path, f"action {service} is not registered by the code")
        strings = self.section("services")
        for service in sorted(set(strings) - set(self.services)):
            self.problem(self.en, f"services.{service} is not in services.yaml")
        fields: dict[str, set[str]] = {service: set() for service in self.services}
        for service, name, _spec in self.service_fields():
            fields[service].add(name)
        for service, names in fields.items():
            self.check_service_strings(service, names, strings.get(service))

    def check_service_strings(self, service: str, fields: set[str], entry: Any) -> None:
        """One action: name, description, and those of each field (and section)."""
        if not isinstance(entry, dict):
            self.problem(self.en, f"services.{service} missing")
            return
        for key in ("name", "description"):
            if not entry.get(key):
                self.problem(self.en, f"services.{service}.{key} missing")
        translated = entry.get("fields", {})
        for name in sorted(fields):
            for key in ("name", "description"):
                if not translated.get(name, {}).get(key):
                    self.problem(self.en, f"services.{service}.fields.{name}.{key} missing")
        for name in sorted(set(translated) - fields):
            self.problem(self.en, f"services.{service}.fields.{name} is not in services.yaml")
        sections = {
            name
            for name, spec in ((self.services[service] or {}).get("fields") or {}).items()
            if isinstance(spec, dict) and "fields" in spec
        }
        for name in sorted(sections - set(entry.get("sections", {}))):
            self.problem(self.en, f"services.{service}.sections.{name} missing")

    def check_icons(self) -> None:
        """icons.json names exactly the actions of services.yaml, and only used entity keys."""
        path = self.package / "icons.json"
        icons = self.json(path)
        if not isinstance(icons, dict):
            return
        actions = icons.get("services", {})
        for service in sorted(set(self.services) - set(actions)):
            self.problem(path, f"services.{service} missing")
        for service in sorted(set(actions) - set(self.services)):
            self.problem(path, f"services.{service} is not in services.yaml")
        for service, entry in actions.items():
            if not isinstance(entry, dict) or not entry.get("service"):
                self.problem(path, f"services.{service} needs a 'service' icon")
        for platform, keys in icons.get("entity", {}).items():
            for key in sorted(set(keys) - self.usage.strings):
                self.problem(path, f"entity.{platform}.{key} is not used")


def validate(root: Path = REPO) -> list[str]:
    """Return one line per problem found in the repository at `root`."""
    return Validator(root).run()


def main(argv: list[str]) -> int:
    """Print the problems; exit 1 when there are any."""
    root = Path(argv[0]).resolve() if argv else REPO
    problems = validate(root)
    for line in problems:
        print(line)
    if not problems:
        print("validate: manifest, hacs.json, translations, services, icons, brand: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
