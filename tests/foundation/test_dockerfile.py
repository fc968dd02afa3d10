"""No Docker engine runs in CI, so check the image the way we can: its structure, and its install steps run for real.

The Dockerfile builds in two stages: a builder that turns drtool and its dependencies into wheels, and a runtime that
installs from those wheels alone, with no source tree. The test copies the builder's COPY set into a clean folder,
runs the builder's own `pip wheel` line there, then the runtime's own `pip install` line in a new virtual environment
with the wheels folder in place of the build mount: if the image would miss a file or a dependency, this fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
# The newest PostgreSQL major drtool supports: the image's pg_dump must be at least that new.
NEWEST_POSTGRES = 18


@dataclass(frozen=True)
class Instruction:
    stage: int
    word: str
    rest: str


def instructions(text: str = DOCKERFILE) -> list[Instruction]:
    text = re.sub(r"\\\n\s*", " ", text)
    out: list[Instruction] = []
    stage = -1
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            if word.upper() == "FROM":
                stage += 1
            out.append(Instruction(stage, word.upper(), rest.strip()))
    return out


def args(steps: list[Instruction]) -> dict[str, str]:
    return dict(s.rest.split("=", 1) for s in steps if s.word == "ARG" and "=" in s.rest)


def base_images(steps: list[Instruction]) -> list[str]:
    values = args(steps)
    images = []
    for step in steps:
        if step.word == "FROM":
            image = step.rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], image))
    return images


def final_stage(steps: list[Instruction]) -> list[Instruction]:
    last = max(s.stage for s in steps)
    return [s for s in steps if s.stage == last]


def shape_problems(text: str) -> list[str]:
    """What is wrong with a Dockerfile's shape, by this project's rules (empty: nothing)."""
    steps = instructions(text)
    problems = []
    images = base_images(steps)
    if len(images) < 2:
        problems.append("not a multi-stage build")
    for image in images:
        if not re.fullmatch(r"python:3\.1[1-9]-slim-[a-z]+@sha256:[0-9a-f]{64}", image):
            problems.append(f"base image {image} is not python:3.1x-slim-<debian> pinned by digest")
    final = final_stage(steps)
    copies = [s.rest for s in final if s.word == "COPY"]
    if copies:
        problems.append(f"the runtime stage copies files in: {copies}")
    installs = [s.rest for s in final if s.word == "RUN" and "pip install" in s.rest]
    if not installs or not all("--no-index" in line and "--find-links /wheels" in line for line in installs):
        problems.append("the runtime stage must install drtool from the builder's wheels alone")
    apt = " ".join(s.rest for s in final if s.word == "RUN" and "apt-get install" in s.rest)
    client = re.search(r"postgresql-client-(\d+)", apt)
    if not client or int(client.group(1)) < NEWEST_POSTGRES:
        problems.append(f"pg_dump must be at least PostgreSQL {NEWEST_POSTGRES}, the newest server drtool supports")
    if client and int(client.group(1)) > 17 and "apt.postgresql.org.sh" not in apt:
        problems.append("Debian trixie has PostgreSQL 17: a newer client needs the PGDG repository set up")
    if "tini" not in apt:
        problems.append("tini is not installed")
    users = [s.rest for s in final if s.word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root")
    entry = [s.rest for s in final if s.word == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1]) != ["/usr/bin/tini", "--", "drtool"]:
        problems.append("ENTRYPOINT must be tini running drtool")
    return problems


def test_image_shape() -> None:
    assert shape_problems(DOCKERFILE) == []


def test_shape_check_catches_a_broken_dockerfile() -> None:
    pinned = re.search(r"python:3\.1\d-slim-\w+@sha256:[0-9a-f]{64}", DOCKERFILE)
    assert pinned
    tag_only = pinned.group(0).split("@")[0]
    breakages = {
        "pinned by digest": DOCKERFILE.replace(pinned.group(0), tag_only),
        "the runtime stage copies": DOCKERFILE.rstrip() + "\nCOPY drtool /src/drtool\n",
        "at least PostgreSQL 18": DOCKERFILE.replace("postgresql-client-18", "postgresql-client-17"),
        "PGDG repository": DOCKERFILE.replace("/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y", "true"),
        "runs as root": DOCKERFILE.replace("USER 10001:10001", "USER root"),
        "ENTRYPOINT must be tini": DOCKERFILE.replace('["/usr/bin/tini", "--", "drtool"]', '["drtool"]'),
        "from the builder's wheels alone": DOCKERFILE.replace("--no-index --find-links /wheels drtool", "drtool"),
        "not a multi-stage build": "\n".join(line for line in DOCKERFILE.splitlines()
                                             if not line.startswith("FROM ${PYTHON_IMAGE} AS builder")),
    }
    for expected, broken in breakages.items():
        assert broken != DOCKERFILE, expected
        assert any(expected in p for p in shape_problems(broken)), (expected, shape_problems(broken))


def _venv(where: Path) -> tuple[Path, dict[str, str]]:
    venv.create(where, with_pip=True)
    env = {**os.environ, "PATH": f"{where / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return where / "bin", env


def test_install_steps_build_a_working_drtool(tmp_path: Path) -> None:
    steps = instructions()
    builder = [s for s in steps if s.stage == 0]
    context = tmp_path / "context"
    context.mkdir()
    for step in builder:
        if step.word == "COPY":
            *sources, _dest = shlex.split(step.rest)
            for source in sources:
                src = REPO / source
                if src.is_dir():
                    shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(src, context / source)
    wheels = tmp_path / "wheels"
    wheel_lines = [s.rest for s in builder if s.word == "RUN" and s.rest.startswith("pip wheel")]
    assert wheel_lines == ["pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt ."]
    _, build_env = _venv(tmp_path / "builder")
    for line in wheel_lines:
        # The image builds without a cache; here the host's pip cache stands in for the network (same wheels,
        # same resolution under constraints.txt), which saves a minute of downloads per CI run.
        line = line.replace("--no-cache-dir ", "")
        run = subprocess.run(shlex.split(line.replace("/wheels", str(wheels))), cwd=context, env=build_env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
    assert len(list(wheels.glob("drtool-*.whl"))) == 1

    # The runtime stage: the wheels folder only (the bind mount), run from an empty folder.
    install_lines = [re.sub(r"^--mount=\S+\s+", "", s.rest) for s in final_stage(steps)
                     if s.word == "RUN" and "pip install" in s.rest]
    assert install_lines == ["pip install --no-cache-dir --no-index --find-links /wheels drtool"]
    bin_dir, env = _venv(tmp_path / "runtime")
    empty = tmp_path / "empty"
    empty.mkdir()
    for line in install_lines:
        run = subprocess.run(shlex.split(line.replace("/wheels", str(wheels))), cwd=empty, env=env,
                             capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run([str(bin_dir / "drtool"), "--help"], capture_output=True, text=True, env=env,
                         cwd=empty, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Exit codes" in run.stdout
    # The default install stays light: no torch, no Milvus Lite (nor the pyarrow and faiss it pulls); the license
    # travels with the package.
    probe = subprocess.run(
        [str(bin_dir / "python"), "-c",
         "import importlib.util as u, importlib.metadata as m, json; "
         "print(json.dumps({n: u.find_spec(n) is not None for n in ('torch', 'milvus_lite', 'pyarrow', 'faiss', "
         "'drtool')} | {'license': m.metadata('drtool')['License-Expression'], "
         "'files': [str(f).split('/', 1)[1] for f in m.files('drtool') if 'licenses' in str(f)]}))"],
        capture_output=True, text=True, env=env, cwd=empty, timeout=120)
    found = json.loads(probe.stdout)
    assert found == {"torch": False, "milvus_lite": False, "pyarrow": False, "faiss": False, "drtool": True,
                     "license": "Apache-2.0", "files": ["licenses/LICENSE"]}, found
    # A Milvus Lite URI (a file) without the `lite` extra: a clear configuration error, not a traceback.
    lite = subprocess.run([str(bin_dir / "drtool"), "--log-format", "text", "config", "check"],
                          capture_output=True, text=True, cwd=empty, timeout=120,
                          env={**env, "DRTOOL_MILVUS_URI": str(tmp_path / "milvus.db")})
    assert lite.returncode == 2, lite.stdout + lite.stderr  # exit 2: a configuration error
    assert "pip install 'drtool[lite]'" in lite.stdout + lite.stderr, lite.stdout + lite.stderr
    assert "Traceback" not in lite.stderr
