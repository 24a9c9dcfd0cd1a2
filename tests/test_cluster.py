"""The cluster path: cluster.yaml validates offline with Ray's own schema, and the real `ray up` / `ray submit` /
`ray down` flow runs against an SSH server on 127.0.0.1 that this test installs (Debian openssh-server, rsync), starts
with its own config and keys, and stops by its pid. Everything stays on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
VENV_BIN = Path(sys.executable).parent


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(cfg)
    validate_config(cfg)
    return cfg


def test_cluster_yaml_validates_and_exposes_nothing():
    text = (ROOT / "cluster.yaml").read_text()
    cfg = _validate(yaml.safe_load(text))
    types = cfg["available_node_types"]
    gpu_types = [t for t in types.values() if "GPU" in t.get("resources", {})]
    assert gpu_types and all(isinstance(t["resources"]["GPU"], int) and t["resources"]["GPU"] >= 1 for t in gpu_types)
    assert all(t["max_workers"] >= t["min_workers"] for t in types.values())
    assert "GPU" not in types[cfg["head_node_type"]]["resources"]  # CPU head
    # dashboard on the head's loopback only; no secrets in the file
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in text
    assert not re.search(r"(?i)(aws_secret|secret_access_key|password|token)\s*[:=]", text)
    # the same torch pin as pyproject.toml, and the project itself installed on every node
    pins = re.findall(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    setup = " ".join(cfg["setup_commands"])
    assert pins and f"torch=={pins[0]}" in setup and "pip install -q -e ~/raydgp" in setup


def test_local_cluster_template_validates():
    t = string.Template((ROOT / "examples" / "local-cluster.yaml").read_text()).safe_substitute(
        CLUSTER_NAME="x", HEAD_IP="127.0.0.1", SSH_USER="me", SSH_KEY="/tmp/k", SSH_PROXY="ssh -W %h:22 x",
        RAY_PORT=6390, NUM_CPUS=2)
    cfg = _validate(yaml.safe_load(t))
    assert cfg["provider"]["type"] == "local"


def test_a_wrong_cluster_file_is_refused_clearly():
    bad = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    bad["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5  # fractional GPU resources are invalid
    with pytest.raises(Exception) as e:
        _validate(bad)
    assert "GPU" in str(e.value) or "integer" in str(e.value)


# -- the real flow on 127.0.0.1 ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_ssh_tools():
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd and shutil.which("rsync"):
        return sshd
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run(sudo + ["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
    p = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server", "rsync"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"could not install openssh-server and rsync: {p.stderr[-1500:]}"
    return shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture
def ssh_server(tmp_path):
    """An sshd of our own on 127.0.0.1 (key-only, own host key, own HOME for its sessions), stopped by its pid."""
    sshd = _ensure_ssh_tools()
    d = tmp_path / "ssh"
    home = tmp_path / "home"
    d.mkdir()
    home.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    port = _free_port()
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    env_lines = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
        "RAYDGP_HOME": str(tmp_path / "raydgp_home"), "RAYDGP_CACHE": str(tmp_path / "raydgp_cache"),
        "PYTHONPATH": str(ROOT),
    }
    (home / ".bashrc").write_text("".join(f"export {k}={v}\n" for k, v in env_lines.items()))
    (home / ".bash_profile").write_text("source ~/.bashrc\n")
    cfg = d / "sshd_config"
    cfg.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
PidFile {d / 'sshd.pid'}
SetEnv HOME={home}
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sshd, "-f", str(cfg)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    deadline = time.time() + 20
    while not (d / "sshd.pid").exists() and time.time() < deadline:
        time.sleep(0.1)
    pid = int((d / "sshd.pid").read_text())
    try:
        yield {"port": port, "key": d / "user_key", "user": user, "home": home}
    finally:
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.alone
def test_ray_up_submit_down_on_this_machine(tmp_path, ssh_server):
    port, key, user, home = ssh_server["port"], ssh_server["key"], ssh_server["user"], ssh_server["home"]
    ray_port = _free_port()
    opts = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    proxy = f"ssh {opts} -i {key} -p {port} -W %h:{port} {user}@127.0.0.1"
    text = string.Template((ROOT / "examples" / "local-cluster.yaml").read_text()).safe_substitute(
        CLUSTER_NAME=f"raydgp-test-{ray_port}", HEAD_IP="127.0.0.1", SSH_USER=user, SSH_KEY=str(key),
        SSH_PROXY=json.dumps(proxy), RAY_PORT=ray_port, NUM_CPUS=2)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(text)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_USAGE_STATS_ENABLED="0", PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    ray = str(VENV_BIN / "ray")
    out = tmp_path / "run"

    def run(*args, timeout=900):
        return subprocess.run([ray, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)

    up = run("up", "-y", "--no-config-cache", str(cluster))
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        sub = run("submit", str(cluster), "scripts/tune.py", "--", "--model", "tiny_cnn", "--trials", "5",
                  "--searcher", "random", "--no-default-history", "--warmup", "1", "--chunk", "2",
                  "--out", str(out), "--no-reference")
        assert sub.returncode == 0, sub.stdout[-4000:] + sub.stderr[-3000:]
        s = json.loads((out / "summary.json").read_text())
        assert s["verified"] is True and s["trials_total"] == 5
        # the run joined the cluster that `ray up` started (its port), not an embedded Ray of its own
        assert f"ray: 127.0.0.1:{ray_port}" in sub.stdout, sub.stdout[-2000:]
    finally:
        down = run("down", "-y", str(cluster))
    assert down.returncode == 0
    assert "Stopped all" in down.stdout + down.stderr, down.stdout[-2000:] + down.stderr[-2000:]
    st = subprocess.run([ray, "status", "--address", f"127.0.0.1:{ray_port}"], capture_output=True, text=True,
                        timeout=120, env=env)
    assert st.returncode != 0, "Ray is still running after ray down"
