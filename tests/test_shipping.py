"""Shipping files: the Dockerfile lints clean, the CI workflow parses and only runs commands the CLI has."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "artifacts.yml"


def test_dockerfile_is_clean_under_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    r = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_runs_as_non_root_with_pipeline_entrypoint_and_volumes():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["pipeline"]' in text and "USER 10001" in text and 'VOLUME ["/data", "/work"]' in text
    assert (
        "-c requirements.lock" in text and "-c requirements.lock" in (ROOT / "Makefile").read_text()
    )  # the README's install


def _workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_parses_and_uploads_dist_and_reports():
    wf = _workflow()
    assert {"test", "artifacts"} <= set(wf["jobs"])
    steps = wf["jobs"]["artifacts"]["steps"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "work/dist/" in upload["with"]["path"] and "work/bench/" in upload["with"]["path"]
    assert any(s.get("run") == "make test" for s in wf["jobs"]["test"]["steps"])


def _pipeline_invocations():
    """Arguments passed to the image's `pipeline` entrypoint in every `docker run ... "$IMAGE" ...` line."""
    for job in _workflow()["jobs"].values():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                words = shlex.split(line.replace('"$IMAGE"', "IMAGE"))
                if words[:2] == ["docker", "run"] and "IMAGE" in words:
                    yield words[words.index("IMAGE") + 1 :]


def test_every_command_the_workflow_runs_exists_in_the_cli():
    calls = list(_pipeline_invocations())
    assert len(calls) >= 3
    for args in calls:
        group, rest = cli, list(args)
        while rest and hasattr(group, "commands") and rest[0] in group.commands:
            group = group.commands[rest.pop(0)]
        assert group is not cli and not hasattr(group, "commands"), f"unknown command in workflow: {args}"
        known = {o for p in group.params for o in p.opts}
        for word in rest:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"{args}: option {word} does not exist"


@pytest.mark.parametrize("name", ["watch", "phone", "speaker"])
def test_targets_listed(name, capsys):
    from pipeline.cli import main

    main(["targets"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name))
    assert "budgets: model_bytes=" in line and "method=" in line
