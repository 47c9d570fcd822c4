"""Install what the demo's Home Assistant loads but the test environment lacks.

The .venv holds Home Assistant core as the test plugin pins it, without the libraries of the
integrations every Home Assistant sets up (conversation, camera, tts, assist_pipeline, ...). A
normal install fetches them at start-up; here Home Assistant cannot (it runs `python -m uv`, which
is not in the venv), so the demo runs it with --skip-pip and installs them first, at the exact
versions the installed Home Assistant's manifests pin, within its package constraints.
Without them the web UI stays on "Loading..." (the service list it fetches imports these platforms).

Run by scripts/demo and scripts/test with the venv's python; prints nothing when everything is in
place.
"""

from __future__ import annotations

import ctypes.util
import importlib.metadata
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import sysconfig

import homeassistant
from homeassistant import bootstrap
from packaging.requirements import InvalidRequirement, Requirement

# What the demo's configuration.yaml sets up on top of Home Assistant's defaults.
DEMO_INTEGRATIONS = {"frontend", "config", "api", "http", "logger", "onboarding", "mqtt", "update"}


def wanted_requirements() -> dict[str, set[str]]:
    """Map each requirement to the integrations needing it, following dependencies."""
    components = Path(homeassistant.__file__).parent / "components"
    todo = sorted(set(bootstrap.DEFAULT_INTEGRATIONS) | DEMO_INTEGRATIONS)
    seen: set[str] = set()
    found: dict[str, set[str]] = {}
    while todo:
        domain = todo.pop()
        if domain in seen:
            continue
        seen.add(domain)
        manifest = components / domain / "manifest.json"
        if not manifest.exists():
            continue
        data = json.loads(manifest.read_text())
        for requirement in data.get("requirements", []):
            found.setdefault(requirement, set()).add(domain)
        todo.extend(data.get("dependencies", []) + data.get("after_dependencies", []))
    return found


def missing_requirements() -> list[str]:
    """Return the requirements not installed at the pinned version."""
    missing = []
    for requirement in sorted(wanted_requirements()):
        try:
            req = Requirement(requirement)
        except InvalidRequirement:
            continue
        if req.url:
            continue
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if not req.specifier.contains(version, prereleases=True):
            missing.append(requirement)
    return missing


def build_env() -> dict[str, str]:
    """Environment for pip/uv builds of C extensions (some have no wheel for this Python).

    Some Python builds ship a pyconfig.h that includes `<MULTIARCH/pythonX.Y/pyconfig.h>`, which
    sits next to, not inside, the include directory compilers are given: expose just that.
    """
    env = dict(os.environ)
    include = Path(sysconfig.get_paths()["include"])
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch and (include.parent / multiarch / include.name / "pyconfig.h").exists():
        shim = Path(sys.prefix) / ".demo-include"
        target = shim / multiarch / include.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(include.parent / multiarch / include.name, target_is_directory=True)
        for var in ("C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH"):
            env[var] = os.pathsep.join(filter(None, [str(shim), env.get(var)]))
    return env


def ensure_turbojpeg() -> None:
    """Install libturbojpeg, which the camera platform (imported by HA's services list) loads."""
    if ctypes.util.find_library("turbojpeg"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("demo: installing libturbojpeg0 from Debian packages", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        command = ["apt-get", "install", "-y", "-qq", "libturbojpeg0"]
        if subprocess.run(command, check=False, capture_output=True, env=env).returncode:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, env=env)
            subprocess.run(command, check=False, capture_output=True, env=env)
    if not ctypes.util.find_library("turbojpeg"):
        print(
            "demo: libturbojpeg is missing (Debian/Ubuntu: apt-get install libturbojpeg0, "
            "macOS: brew install jpeg-turbo); the web UI may not finish loading",
            file=sys.stderr,
        )


def install(cmd: list[str], requirements: list[str], env: dict[str, str]) -> bool:
    """Install requirements; tell whether it worked."""
    result = subprocess.run([*cmd, *requirements], check=False, capture_output=True, env=env)
    return result.returncode == 0


def main() -> int:
    """Install what is missing; never fail the demo over it."""
    ensure_turbojpeg()
    missing = missing_requirements()
    if not missing:
        return 0
    marker = Path(sys.prefix) / ".demo-requirements-failed"
    if marker.exists() and marker.read_text().split() == missing:
        return 0  # tried before with the same result; do not rebuild at every start
    constraints = Path(homeassistant.__file__).parent / "package_constraints.txt"
    print(
        f"demo: installing {len(missing)} libraries of Home Assistant's built-in integrations "
        "(once): " + ", ".join(missing),
        file=sys.stderr,
        flush=True,
    )
    if uv := shutil.which("uv"):
        cmd = [uv, "pip", "install", "-q", "-p", sys.executable]
    else:
        cmd = [sys.executable, "-m", "pip", "install", "-q"]
    if constraints.exists():
        cmd += ["--constraint", str(constraints)]
    env = build_env()
    if install(cmd, missing, env):
        marker.unlink(missing_ok=True)
        return 0
    # One of them may have no wheel for this Python and fail to build: install the others.
    failed = [requirement for requirement in missing if not install(cmd, [requirement], env)]
    marker.write_text("\n".join(failed) + "\n")
    print(
        "demo: could not install " + ", ".join(failed) + "; Home Assistant will log the "
        "integrations that need them as failed, and the web UI may not finish loading",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
