"""The deployment examples in playbooks/scheduling/ are checked the way a cluster and systemd would judge them.

Kubernetes: every manifest validates against the official schemas of Kubernetes 1.30 to 1.37 in strict mode
(kubernetes-validate, offline), and every pod meets the Pod Security Standards' "restricted" profile. No offline
checker for that profile exists on PyPI, so `pss_restricted_violations` implements the controls of
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline and restricted, to 1.34+), plus
this project's own rules: resource requests and limits, an fsGroup when a pod mounts a writable volume, a
read-only root filesystem, and signals that reach drtool (an init as PID 1, `exec` in shell wrappers).

systemd: every unit passes `systemd-analyze verify` (in a scratch root, with stubs for the programs it runs) and
every service scores below 4 ("OK"/"MEDIUM") in `systemd-analyze security --offline=true`. The failure-report unit's
command is run for real with stand-ins for journalctl and sendmail.

Each check is shown to fail on a deliberately broken copy.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEDULING = REPO / "playbooks" / "scheduling"
MANIFESTS = sorted([*SCHEDULING.glob("*.yaml"), *SCHEDULING.glob("*.yml")])
SERVICES = sorted(SCHEDULING.glob("*.service"))
TIMERS = sorted(SCHEDULING.glob("*.timer"))
# Kubernetes minors checked: the supported releases and the three before them (kubernetes-validate ships the schemas).
K8S_VERSIONS = [f"1.{minor}.0" for minor in range(30, 38)]
# `systemd-analyze security --threshold` counts tenths: 39 means "exits non-zero at 4.0 or above".
SECURITY_THRESHOLD = 39


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def pod_template(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(pod metadata, pod spec) of a workload, or None for a kind that runs no pod."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return doc.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    elif kind not in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"):
        return None
    template = spec["template"]
    return template.get("metadata") or {}, template["spec"]


def dockerfile_entrypoint() -> list[str]:
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    entry = [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith("ENTRYPOINT ")]
    assert entry, "the Dockerfile has no ENTRYPOINT"
    return list(json.loads(entry[-1]))


# Baseline: the capabilities a container may add (restricted narrows this to NET_BIND_SERVICE).
RESTRICTED_ADD_CAPS = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SHELLS = {"sh", "bash", "dash", "ash", "zsh"}
INITS = {"tini", "tini-static", "dumb-init"}


def _all_containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field) or []:
            yield f"{field}[{container.get('name')}]", container


def _seccomp_violation(profile: dict[str, Any] | None, where: str) -> str | None:
    if profile is not None and profile.get("type") not in ("RuntimeDefault", "Localhost"):
        return f"{where}: seccompProfile.type must be RuntimeDefault or Localhost, not {profile.get('type')!r}"
    return None


def _selinux_violations(options: dict[str, Any] | None, where: str) -> list[str]:
    if not options:
        return []
    out = []
    if options.get("type", "") not in SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {options['type']!r} is not allowed")
    out += [f"{where}: seLinuxOptions.{key} must not be set" for key in ("user", "role") if options.get(key)]
    return out


def pss_restricted_violations(metadata: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """Every control of the Pod Security Standards' baseline and restricted profiles that this pod breaks."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    # Baseline: host namespaces, HostProcess, hostPath, sysctls, AppArmor, SELinux, seccomp.
    out += [f"spec.{key} must not be true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess must not be true")
    out += [f"spec.securityContext.sysctls: {s.get('name')} is not a safe sysctl"
            for s in psc.get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    out += _selinux_violations(psc.get("seLinuxOptions"), "spec.securityContext")
    apparmor = (psc.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"spec.securityContext.appArmorProfile.type {apparmor!r} is not allowed")
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"annotation {key}={value} is not allowed")
    # Restricted: volume types (hostPath is the baseline's case of this).
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {volume.get('name')}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)} not allowed")
    # Restricted: non-root and seccomp, at pod level or in every container.
    if psc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser must not be 0")
    if (v := _seccomp_violation(psc.get("seccompProfile"), "spec.securityContext")) is not None:
        out.append(v)
    for where, container in _all_containers(pod):
        csc = container.get("securityContext") or {}
        if csc.get("privileged"):
            out.append(f"{where}: privileged must not be true")
        if csc.get("procMount") not in (None, "Default"):
            out.append(f"{where}: procMount must be Default")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            out.append(f"{where}: hostPort must not be set")
        # Baseline, Kubernetes 1.34+: probes and lifecycle hooks must not aim at another host (the node).
        handlers = [container.get(probe) or {} for probe in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [hook or {} for hook in (container.get("lifecycle") or {}).values()]
        for handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                if (handler.get(action) or {}).get("host"):
                    out.append(f"{where}: {action}.host of a probe or lifecycle hook must not be set")
        if (csc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: windowsOptions.hostProcess must not be true")
        out += _selinux_violations(csc.get("seLinuxOptions"), where)
        apparmor = (csc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}: appArmorProfile.type {apparmor!r} is not allowed")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        run_as_non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            out.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if csc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser must not be 0")
        profile = csc.get("seccompProfile") or psc.get("seccompProfile")
        if profile is None:
            out.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container)")
        elif (v := _seccomp_violation(csc.get("seccompProfile"), where)) is not None:
            out.append(v)
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilities.drop must include ALL")
        if added := set(caps.get("add") or []) - RESTRICTED_ADD_CAPS:
            out.append(f"{where}: capabilities.add may only hold NET_BIND_SERVICE, not {sorted(added)}")
    return out


def _shell_script(argv: list[str]) -> str | None:
    """The script a `sh -c SCRIPT` command line runs (wrapped in an init or not), else None."""
    for i, word in enumerate(argv):
        if os.path.basename(word) in SHELLS:
            for j in range(i + 1, len(argv)):
                if re.fullmatch(r"-[a-z]*c[a-z]*", argv[j]):
                    return argv[j + 1] if j + 1 < len(argv) else ""
            return None
    return None


def _script_commands(script: str) -> list[str]:
    lines = [line.split(" #")[0].strip() for line in script.splitlines()]
    commands: list[str] = []
    for line in lines:
        if line and not line.startswith("#"):
            commands += [part.strip() for part in re.split(r"&&|\|\||;", line) if part.strip()]
    return commands


def deployment_violations(metadata: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """This project's rules on top of the restricted profile."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    writable = [v["name"] for v in pod.get("volumes") or []
                if "persistentVolumeClaim" in v or "ephemeral" in v or "csi" in v]
    if writable and psc.get("fsGroup") in (None, 0):
        out.append(f"volumes {writable}: spec.securityContext.fsGroup must be set so drtool can write them")
    if pod.get("automountServiceAccountToken") is not False:
        out.append("automountServiceAccountToken must be false: drtool does not talk to the Kubernetes API")
    for where, container in _all_containers(pod):
        csc = container.get("securityContext") or {}
        if csc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{where}: readOnlyRootFilesystem must be true")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in (resources.get(kind) or {}):
                    out.append(f"{where}: resources.{kind}.{resource} must be set")
        argv = [*(container.get("command") or dockerfile_entrypoint()), *(container.get("args") or [])]
        if os.path.basename(argv[0]) not in INITS:
            out.append(f"{where}: PID 1 is {argv[0]}: run drtool under an init (tini) that forwards SIGTERM; "
                       "a Python PID 1 without a handler ignores it")
        script = _shell_script(argv)
        if script is not None:
            commands = _script_commands(script)
            if not commands or not re.match(r"exec\s+(\S*/)?drtool\b", commands[-1]):
                out.append(f"{where}: the shell script must end in `exec drtool ...` so drtool gets the signals")
            init_options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
            signals_group = "-g" in init_options or os.path.basename(argv[0]) == "dumb-init"
            if len(commands) > 1 and not signals_group:
                out.append(f"{where}: the script runs commands before its exec: PID 1 must signal the whole "
                           "process group (tini -g)")
    return out


def manifest_pods() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    pods = []
    for path in MANIFESTS:
        for doc in load_documents(path):
            found = pod_template(doc)
            if found:
                pods.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", *found))
    return pods


def test_there_are_manifests_with_pods() -> None:
    assert MANIFESTS and len(manifest_pods()) >= 2


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(version: str) -> None:
    for path in MANIFESTS:
        for doc in load_documents(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name} {doc.get('kind')}/{doc['metadata'].get('name')} is invalid for "
                            f"Kubernetes {version}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_manifests_meet_the_restricted_pod_security_standard() -> None:
    for where, metadata, pod in manifest_pods():
        assert pss_restricted_violations(metadata, pod) == [], where
        assert deployment_violations(metadata, pod) == [], where


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["containers"][0]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(pod: dict[str, Any]) -> None:
        target: Any = pod
        *parents, leaf = path.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
        target[leaf] = value
    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(pod: dict[str, Any]) -> None:
        target: Any = pod
        *parents, leaf = path.split(".")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[leaf]
    return apply


def _add_volume(volume: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda pod: pod["volumes"].append(volume)


# (what is broken, how, words the violation must contain)
BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("root user", _set("securityContext.runAsUser", 0), "runAsUser must not be 0"),
    ("runAsNonRoot off", _set("securityContext.runAsNonRoot", False), "runAsNonRoot must be true"),
    ("no runAsNonRoot", _drop("securityContext.runAsNonRoot"), "runAsNonRoot must be true"),
    ("privilege escalation", _set("containers.0.securityContext.allowPrivilegeEscalation", True),
     "allowPrivilegeEscalation must be false"),
    ("escalation unset", _drop("containers.0.securityContext.allowPrivilegeEscalation"),
     "allowPrivilegeEscalation must be false"),
    ("capabilities kept", _set("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}),
     "capabilities.drop must include ALL"),
    ("capability added", _set("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
     "capabilities.add may only hold NET_BIND_SERVICE"),
    ("privileged", _set("containers.0.securityContext.privileged", True), "privileged must not be true"),
    ("seccomp unconfined", _set("securityContext.seccompProfile", {"type": "Unconfined"}), "seccompProfile.type"),
    ("seccomp unset", _drop("securityContext.seccompProfile"), "seccompProfile.type must be RuntimeDefault"),
    ("hostNetwork", _set("hostNetwork", True), "hostNetwork must not be true"),
    ("hostPID", _set("hostPID", True), "hostPID must not be true"),
    ("hostPath volume", _add_volume({"name": "host", "hostPath": {"path": "/var/lib"}}), "['hostPath'] not allowed"),
    ("hostPort", _set("containers.0.ports", [{"containerPort": 9100, "hostPort": 9100}]), "hostPort"),
    ("unsafe sysctl", _set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]),
     "not a safe sysctl"),
    ("SELinux user", _set("securityContext.seLinuxOptions", {"user": "system_u"}), "seLinuxOptions.user"),
    ("AppArmor unconfined", _set("securityContext.appArmorProfile", {"type": "Unconfined"}), "appArmorProfile"),
    ("procMount", _set("containers.0.securityContext.procMount", "Unmasked"), "procMount must be Default"),
    ("probe aimed at the node", _set("containers.0.livenessProbe", {"tcpSocket": {"host": "10.0.0.1", "port": 10250}}),
     "tcpSocket.host"),
    ("hook aimed at the node", _set("containers.0.lifecycle", {"preStop": {"httpGet": {"host": "node", "port": 80}}}),
     "httpGet.host"),
    # This project's rules.
    ("no memory limit", _drop("containers.0.resources.limits"), "resources.limits.memory must be set"),
    ("no cpu request", lambda pod: _container(pod)["resources"]["requests"].pop("cpu"),
     "resources.requests.cpu must be set"),
    ("PVC without fsGroup", lambda pod: (_drop("securityContext.fsGroup")(pod), _add_volume(
        {"name": "scratch", "persistentVolumeClaim": {"claimName": "x"}})(pod)), "fsGroup must be set"),
    ("writable root", _set("containers.0.securityContext.readOnlyRootFilesystem", False), "readOnlyRootFilesystem"),
    ("service account token", _drop("automountServiceAccountToken"), "automountServiceAccountToken"),
    ("shell without exec", lambda pod: (_container(pod).__setitem__("command", ["/usr/bin/tini", "--", "sh", "-c"]),
                                        _container(pod).__setitem__("args", ["drtool -q snapshot create"])),
     "must end in `exec drtool"),
    ("drtool as PID 1", lambda pod: (_container(pod).__setitem__("command", ["/bin/sh", "-c"]),
                                     _container(pod).__setitem__("args", ["exec drtool -q snapshot create"])),
     "PID 1 is /bin/sh"),
    ("script under tini without -g", lambda pod: (
        _container(pod).__setitem__("command", ["/usr/bin/tini", "--", "/bin/sh", "-ec"]),
        _container(pod).__setitem__("args", ["drtool -q export-chunks --all\nexec drtool -q snapshot create"])),
     "tini -g"),
]


@pytest.mark.parametrize(("what", "breakage", "expected"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_pod_checks_catch_a_broken_manifest(what: str, breakage: Callable[[dict[str, Any]], None],
                                            expected: str) -> None:
    for where, metadata, pod in manifest_pods():
        broken = copy.deepcopy(pod)
        breakage(broken)
        found = pss_restricted_violations(metadata, broken) + deployment_violations(metadata, broken)
        assert any(expected in v for v in found), f"{where}, {what}: not caught; found {found}"


SCHEMA_BREAKAGES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("a misspelt field (strict mode)", _set("spec.jobTemplate.spec.template.spec.securityContext.runAsNonroot", True)),
    ("an unknown field (strict mode)", _set("spec.jobTemplate.spec.template.spec.containers.0.restartOnFail", True)),
    ("a wrong type", _set("spec.jobTemplate.spec.template.spec.containers.0.resources.limits", "1Gi")),
    ("a wrong type", _set("spec.jobTemplate.spec.backoffLimit", "one")),
    ("a missing required field", _drop("spec.schedule")),
    ("a container without a name", _drop("spec.jobTemplate.spec.template.spec.containers.0.name")),
]


@pytest.mark.parametrize(("what", "breakage"), SCHEMA_BREAKAGES, ids=[b[0] for b in SCHEMA_BREAKAGES])
def test_schema_check_catches_a_broken_manifest(what: str, breakage: Callable[[dict[str, Any]], None]) -> None:
    doc = copy.deepcopy(next(d for d in load_documents(MANIFESTS[0]) if d["kind"] == "CronJob"))
    breakage(doc)
    for version in (K8S_VERSIONS[0], K8S_VERSIONS[-1]):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, version, strict=True)


def drtool_args(container: dict[str, Any]) -> list[str]:
    """drtool's arguments in a container that runs `exec drtool ...` under a shell."""
    words = shlex.split(" ".join(container["args"]))
    return words[words.index("drtool") + 1:]


def indexed_rebuild_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What would make the sharded rebuild's Jobs (drtool-rebuild-indexed-job.yaml) split or finish wrongly."""
    by_name = {d["metadata"]["name"]: d for d in docs}
    shards, final = by_name["drtool-rebuild-shards"]["spec"], by_name["drtool-rebuild-finalize"]["spec"]
    worker = shards["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in worker.get("env", [])}
    worker_args, final_args = drtool_args(worker), drtool_args(final["template"]["spec"]["containers"][0])
    problems = []
    if shards.get("completionMode") != "Indexed":
        problems.append("the workers' Job is not Indexed (no JOB_COMPLETION_INDEX)")
    if env.get("JOB_COMPLETIONS") != str(shards.get("completions")):
        problems.append("JOB_COMPLETIONS differs from spec.completions: the shards would not cover the data")
    if "--resume" not in worker_args or any(a.startswith("--shard") for a in worker_args):
        problems.append("a worker must take its shard from the environment and resume after a retry")
    if "--finalize" not in final_args:
        problems.append("the finalize Job does not run --finalize")
    return problems


def test_indexed_rebuild_job_is_sharded_by_kubernetes_and_parses() -> None:
    from click.testing import CliRunner

    from drtool.cli.main import cli

    docs = load_documents(SCHEDULING / "drtool-rebuild-indexed-job.yaml")
    assert indexed_rebuild_problems(docs) == []
    for doc in docs:  # drtool's own parser accepts the arguments (an unknown option would exit 2)
        run = CliRunner().invoke(cli, [*drtool_args(doc["spec"]["template"]["spec"]["containers"][0]), "--help"])
        assert run.exit_code == 0, run.output
    broken = copy.deepcopy(docs)
    broken[0]["spec"]["completions"] = 3
    assert "JOB_COMPLETIONS differs" in indexed_rebuild_problems(broken)[0]


# ---------------------------------------------------------------------------------------------------------------
# systemd


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: run scripts/install-system-deps.sh (Debian's systemd package)"
    return found


def unit_values(text: str, key: str) -> list[str]:
    """The values of `key=` in a unit file, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.split("=", 1)[1] for line in joined.splitlines() if line.startswith(f"{key}=")]


def scratch_root(tmp_path: Path, units: dict[str, str]) -> Path:
    """A root with the host's system units, ours, and an executable stub for every program our units start."""
    root = tmp_path / "root"
    system_units = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for name, text in units.items():
        (target / name).write_text(text)
        for key in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost"):
            for value in unit_values(text, key):
                program = root / shlex.split(value.lstrip("-@:+!"))[0].lstrip("/")
                program.parent.mkdir(parents=True, exist_ok=True)
                program.write_text("#!/bin/sh\n")
                program.chmod(0o755)
    return root


def verify(tmp_path: Path, units: dict[str, str]) -> subprocess.CompletedProcess[str]:
    root = scratch_root(tmp_path, units)
    names = [n.replace("@.service", "@drtool-drill.service.service") for n in units]
    return subprocess.run([systemd_analyze(), "verify", "--man=no", f"--root={root}", *names],
                          capture_output=True, text=True, timeout=120)


def current_units() -> dict[str, str]:
    return {p.name: p.read_text() for p in [*SERVICES, *TIMERS]}


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    run = verify(tmp_path, current_units())
    # verify exits 0 on settings it merely ignores (a typo, an unparsable value): any message is a failure too.
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


@pytest.mark.parametrize(("bad", "expected"), [
    ("TimeoutStartSec=2 hourz", "Failed to parse TimeoutStartSec"),
    ("ProtectSytem=strict", "Unknown key"),
    ("ExecStart=relative/drtool --help", "Neither a valid executable name nor an absolute path"),
])
def test_verify_catches_a_broken_unit(tmp_path: Path, bad: str, expected: str) -> None:
    units = current_units()
    units["drtool-snapshot.service"] = units["drtool-snapshot.service"].replace("[Service]\n", f"[Service]\n{bad}\n")
    run = verify(tmp_path, units)
    assert expected in run.stdout + run.stderr


def security_score(path: Path) -> tuple[int, float]:
    """(exit status with --threshold, overall exposure) of `systemd-analyze security --offline=true`."""
    run = subprocess.run([systemd_analyze(), "security", "--offline=true", f"--threshold={SECURITY_THRESHOLD}",
                          "--no-pager", path.name], capture_output=True, text=True, cwd=path.parent, timeout=120)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", run.stdout)
    assert found, run.stdout + run.stderr
    return run.returncode, float(found.group(1))


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_services_score_below_4_in_systemd_analyze_security(unit: Path) -> None:
    code, score = security_score(unit)
    assert code == 0 and score < 4, f"{unit.name}: exposure {score}"


# Every sandboxing setting the drtool services use; without them a unit is back where the old units were (8.7).
SANDBOX_KEYS = ("UMask", "NoNewPrivileges", "CapabilityBoundingSet", "AmbientCapabilities", "ProtectSystem",
                "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers", "DevicePolicy", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
                "ProtectProc", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
                "RemoveIPC", "KeyringMode", "RestrictAddressFamilies", "SystemCallArchitectures", "SystemCallFilter",
                "SystemCallErrorNumber", "MemoryDenyWriteExecute")


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_security_check_fails_on_an_unhardened_unit(unit: Path, tmp_path: Path) -> None:
    lines = unit.read_text().splitlines()
    bare = [line for line in lines if line.split("=", 1)[0] not in SANDBOX_KEYS]
    assert len(bare) < len(lines)
    (tmp_path / unit.name).write_text("\n".join(bare) + "\n")
    code, score = security_score(tmp_path / unit.name)
    assert code != 0 and score >= 4, score
    # Only the two settings the old units had: still far above the threshold.
    old_style = [line for line in bare if not line.startswith("[Install]")] + [
        "[Service]", "NoNewPrivileges=true", "ProtectSystem=strict", "PrivateTmp=true"]
    (tmp_path / unit.name).write_text("\n".join(old_style) + "\n")
    code, score = security_score(tmp_path / unit.name)
    assert code != 0 and score >= 4, score


DRTOOL_SERVICES = [p for p in SERVICES if "@" not in p.name]


@pytest.mark.parametrize("unit", DRTOOL_SERVICES, ids=lambda p: p.name)
def test_drtool_services_are_bounded_and_report_failures(unit: Path) -> None:
    text = unit.read_text()
    assert unit_values(text, "TimeoutStartSec"), "a oneshot has no start timeout by default: a hung run blocks"
    assert unit_values(text, "OnFailure") == ["drtool-failure@%n.service"]
    assert (SCHEDULING / "drtool-failure@.service").is_file()
    # What drtool needs inside the sandbox: its state folder, the metrics folder, its secrets, the network.
    assert unit_values(text, "StateDirectory") == ["drtool"]
    assert "/var/lib/node_exporter/textfile" in " ".join(unit_values(text, "ReadWritePaths"))
    assert unit_values(text, "EnvironmentFile") == ["/etc/drtool/env"]
    assert not unit_values(text, "PrivateNetwork") and not unit_values(text, "IPAddressDeny")
    families = " ".join(unit_values(text, "RestrictAddressFamilies")).split()
    assert {"AF_INET", "AF_INET6"} <= set(families)
    for command in unit_values(text, "ExecStart") + unit_values(text, "ExecStartPost"):
        for path in re.findall(r"--(?:metrics-file|report-dir) (\S+)", command):
            assert path.startswith(("/var/lib/drtool/", "/var/lib/node_exporter/textfile/")), path
    # The lock records the boot id from /proc/sys: ProcSubset=pid would hide it.
    assert not unit_values(text, "ProcSubset")
    for timer in TIMERS:
        assert unit_values(timer.read_text(), "Persistent") == ["true"], timer.name


def failure_command(unit_text: str, failed_unit: str, host: str) -> list[str]:
    """The failure unit's ExecStart as systemd would run it: specifiers and `$$` resolved, words split."""
    (value,) = unit_values(unit_text, "ExecStart")
    value = re.sub(r"%(.)", lambda m: {"%": "%", "i": failed_unit, "H": host}[m.group(1)], value)
    return shlex.split(value.replace("$$", "$"))


def test_failure_unit_logs_and_mails_the_journal_tail(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "journalctl").write_text('#!/bin/sh\necho "journalctl $*"\necho "drtool: exit 4: drill breached"\n')
    mail = tmp_path / "mail.txt"
    (bin_dir / "sendmail").write_text(f'#!/bin/sh\necho "sendmail $*" > {mail}\ncat >> {mail}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    argv = failure_command((SCHEDULING / "drtool-failure@.service").read_text(), "drtool-drill.service", "dr-host")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MAILTO": "oncall@example.com"}
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "drtool-drill.service failed on dr-host" in run.stdout
    assert "journalctl --unit=drtool-drill.service --lines=60" in run.stdout
    assert "drtool: exit 4: drill breached" in run.stdout
    sent = mail.read_text()
    assert sent.startswith("sendmail -t\nTo: oncall@example.com\nSubject: [drtool] drtool-drill.service failed")
    assert "drtool: exit 4: drill breached" in sent
    # MAILTO empty: only the log.
    mail.unlink()
    run = subprocess.run(argv, env={**env, "MAILTO": ""}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "drill breached" in run.stdout and not mail.exists()
    # journalctl refused (not in systemd-journal): the report still goes out, with the reason.
    (bin_dir / "journalctl").write_text(
        "#!/bin/sh\necho 'No journal files were opened due to insufficient permissions.' >&2\nexit 1\n")
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "insufficient permissions" in run.stdout and "insufficient permissions" in mail.read_text()
