"""The forge's workflows: what they run, every action pinned by commit SHA, every image by
digest, least-privilege tokens, no expression expanded inside a shell script; the npm lock
carries an integrity hash per package (npm ci checks it)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.harness import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
_PINNED_ACTION = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
_PINNED_IMAGE = re.compile(r"[\w./:-]+@sha256:[0-9a-f]{64}")


def load(path: Path) -> dict[str, Any]:
    """A workflow as YAML reads it (`on` stays a string key: PyYAML would read it as True)."""
    text = path.read_text()
    data = yaml.safe_load(re.sub(r"(?m)^on:", '"on":', text))
    assert isinstance(data, dict)
    return data


def problems(workflow: dict[str, Any]) -> list[str]:
    """What makes a workflow unsafe to run: an action or image not pinned, a token that may
    write (or is left at the repository's default), an expression inside a `run:` script."""
    found = []
    if "permissions" not in workflow:
        found.append("no top-level permissions")
    found += _writes("workflow", workflow.get("permissions", {}))
    for name, job in workflow.get("jobs", {}).items():
        if "permissions" not in job:
            found.append(f"{name}: no permissions")
        found += _writes(name, job.get("permissions", {}))
        for service, spec in job.get("services", {}).items():
            if not _PINNED_IMAGE.fullmatch(str(spec.get("image", ""))):
                found.append(f"{name}: service {service} image not pinned by digest")
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not uses.startswith("./") and not _PINNED_ACTION.fullmatch(uses):
                found.append(f"{name}: {uses} not pinned by commit SHA")
            keeps_token = step.get("with", {}).get("persist-credentials") is not False
            if uses and uses.startswith("actions/checkout@") and keeps_token:
                found.append(f"{name}: checkout keeps the token in .git")
            if "${{" in str(step.get("run", "")):
                found.append(f"{name}: an expression inside run: (pass it through env)")
    return found


def _writes(where: str, permissions: Any) -> list[str]:
    if permissions in ("read-all", {}):
        return []
    if not isinstance(permissions, dict):
        return [f"{where}: permissions {permissions!r}"]
    return [f"{where}: {scope}: {level}" for scope, level in permissions.items() if level != "read"]


def steps_run(workflow: dict[str, Any]) -> str:
    """Every `run:` script of every job, one text."""
    return "\n".join(
        str(step.get("run", ""))
        for job in workflow["jobs"].values()
        for step in job.get("steps", [])
    )


def test_there_are_workflows_and_each_is_safe() -> None:
    assert WORKFLOWS
    for path in WORKFLOWS:
        assert problems(load(path)) == [], path.name


def test_the_checks_catch_an_unsafe_workflow() -> None:
    unsafe = {
        "jobs": {
            "build": {
                "permissions": {"contents": "write"},
                "services": {"db": {"image": "postgres:16"}},
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"uses": "actions/setup-python@" + "a" * 40},
                    {"run": "echo ${{ github.event.pull_request.title }}"},
                ],
            },
            "other": {"steps": []},
        }
    }
    assert problems(unsafe) == [
        "no top-level permissions",
        "build: contents: write",
        "build: service db image not pinned by digest",
        "build: actions/checkout@v4 not pinned by commit SHA",
        "build: checkout keeps the token in .git",
        "build: an expression inside run: (pass it through env)",
        "other: no permissions",
    ]


def test_ci_runs_the_suite_buf_breaking_the_image_and_an_audit_on_every_push_and_pr() -> None:
    ci = load(ROOT / ".github" / "workflows" / "ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    scripts = steps_run(ci)
    assert ".ci/run" in scripts  # which is `make test`
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert re.search(r"buf breaking --against \"\.git#ref=", scripts)
    assert "docker build -f deploy/Dockerfile" in scripts
    assert "docker run --rm saga:ci services.gateway.web.console" in scripts  # /console/ in it
    assert "make audit" in scripts
    assert "pip-audit" in (ROOT / "Makefile").read_text()


def test_the_suite_gets_a_chromium_that_runs_headless_on_the_forge() -> None:
    """Ubuntu's apt `chromium` is a snap stub that does not run headless in CI: the test job
    installs the Chromium build the locked playwright-core names (with the libraries it needs)
    and hands its path to `make test` through CHROMIUM, which the Makefile and the browser test
    read instead of Debian's /usr/bin/chromium."""
    test = load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"]["test"]
    scripts = [str(step.get("run", "")) for step in test["steps"]]

    def first(needle: str) -> int:
        found = [i for i, script in enumerate(scripts) if needle in script]
        assert found, f"no step of the test job runs {needle!r}"
        return found[0]

    installs = first("node_modules/.bin/playwright-core install --with-deps --no-shell chromium")
    hands_over = first("chromium.executablePath()")
    assert re.search(r"(?m)^echo \"CHROMIUM=.*\" >> \"\$GITHUB_ENV\"$", scripts[hands_over])
    assert installs <= hands_over < first(".ci/run")
    assert not any("apt-get install" in script and "chromium" in script for script in scripts)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"(?m)^CHROMIUM \?= ", makefile)
    assert re.search(r"(?m)^export CHROMIUM$", makefile)
    test_console = (ROOT / "tests" / "e2e" / "test_console.py").read_text()
    assert 'os.environ.get("CHROMIUM"' in test_console


def test_dependabot_moves_the_action_and_image_pins() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    watched = {(u["package-ecosystem"], u["directory"]) for u in config["updates"]}
    assert watched == {("github-actions", "/"), ("docker", "/deploy")}
    assert (ROOT / "deploy" / "Dockerfile").exists()  # what the docker entry reads


def test_the_npm_lock_has_an_integrity_hash_for_every_package() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    packages = {k: v for k, v in lock["packages"].items() if k}
    assert packages
    assert [
        k for k, v in packages.items() if not v.get("integrity", "").startswith("sha512-")
    ] == []
    assert "npm ci" in (ROOT / "Makefile").read_text()
