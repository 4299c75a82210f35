"""The Node peers: installing them from the npm registry and making uWebSockets.js load.

``benchmarks/peers/package.json`` pins the exact versions; :func:`prepare_peers` copies it
into ``benchmarks/.build/peers/`` and runs ``npm install --prefix`` there unless the
installed versions already match. The Linux build of ``@btc-vision/uwebsockets.js`` (a
republish of uWebSockets.js; the official builds are not on the registry) is linked
against glibc 2.38 for three C23 symbols. On an older glibc (Debian 12 has 2.36) the
harness compiles ``benchmarks/peers/isoc23_shim.c`` with gcc, loads it with LD_PRELOAD, and
marks the binary's ``GLIBC_2.38`` version requirement weak (``VER_FLG_WEAK`` in its
``.gnu.version_r``), so the dynamic loader takes the symbols from the shim instead of
refusing the file. Everything measured is recorded: package, version, node, the shim.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

from .config import BUILD, HERE, Result

PEERS_SRC = HERE / "peers"
PEERS_BUILD = BUILD / "peers"
SHIM_SRC = PEERS_SRC / "isoc23_shim.c"
UWS_PACKAGE = "@btc-vision/uwebsockets.js"
WS_PACKAGE = "ws"
INSTALL_TIMEOUT_S = 240.0
# The peer servers: report name, script, npm package.
PEERS: dict[str, tuple[str, str]] = {
    "uws": ("uws_server.js", UWS_PACKAGE),
    "node-ws": ("ws_server.js", WS_PACKAGE),
}
LABELS = {"uws": "Node + uWebSockets.js", "node-ws": "Node + ws"}
SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2
C23_VERSION = b"GLIBC_2.38"


def wanted_versions() -> dict[str, str]:
    """The exact versions benchmarks/peers/package.json pins."""
    doc = json.loads((PEERS_SRC / "package.json").read_text(encoding="utf-8"))
    return dict(doc["dependencies"])


def installed_version(package: str) -> str | None:
    """The version of ``package`` in benchmarks/.build/peers, or None."""
    meta = PEERS_BUILD / "node_modules" / package / "package.json"
    try:
        return str(json.loads(meta.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; its stdout, or RuntimeError with the reason on failure or timeout."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{shlex.join(cmd)} timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise RuntimeError(f"{cmd[0]}: {exc.strerror}") from exc
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise RuntimeError(f"{shlex.join(cmd[:3])} exit {done.returncode}: {' '.join(why[-3:])}")
    return done.stdout.strip()


def npm_install() -> None:
    """Install the pinned packages into benchmarks/.build/peers unless already there."""
    want = wanted_versions()
    if all(installed_version(p) == v for p, v in want.items()):
        return
    if shutil.which("npm") is None:
        raise RuntimeError("npm not found")
    PEERS_BUILD.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PEERS_SRC / "package.json", PEERS_BUILD / "package.json")
    run(["npm", "install", "--prefix", str(PEERS_BUILD), "--no-audit", "--no-fund",
         "--omit=dev", "--no-save", "--fetch-retries=1"], INSTALL_TIMEOUT_S)  # fmt: skip
    for package, version in want.items():
        got = installed_version(package)
        if got != version:
            raise RuntimeError(f"npm installed {package} {got}, not the pinned {version}")


def build_shim() -> Path:
    """Compile the C23 shim into benchmarks/.build/peers unless the library is newer."""
    lib = PEERS_BUILD / "isoc23_shim.so"
    if lib.exists() and lib.stat().st_mtime >= SHIM_SRC.stat().st_mtime:
        return lib
    PEERS_BUILD.mkdir(parents=True, exist_ok=True)
    tmp = PEERS_BUILD / f"isoc23_shim.{os.getpid()}.tmp"
    run(["gcc", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o", str(tmp), str(SHIM_SRC)], 60)
    os.replace(tmp, lib)
    return lib


def weaken_version(binary: Path, version: bytes) -> bool:
    """Mark ``version`` weak in an ELF64 file's version needs; False if nothing changed.

    A weak requirement the loaded libc lacks is no longer fatal to the dynamic loader; the
    symbols bound to it are then looked up like unversioned ones (the preloaded shim).
    """
    data = bytearray(binary.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise RuntimeError(f"{binary.name}: not a little-endian ELF64 file")
    shoff, shentsize, shnum = (struct.unpack_from("<Q", data, 0x28)[0],
                               *struct.unpack_from("<HH", data, 0x3A))  # fmt: skip
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    found = False
    for _, kind, _, _, offset, _, link, count, _, _ in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strtab = sections[link][4]
        need = offset
        for _ in range(count):
            _, cnt, _, aux_off, next_need = struct.unpack_from("<HHIII", data, need)
            aux = need + aux_off
            for _ in range(cnt):
                _, flags, _, name, next_aux = struct.unpack_from("<IHHII", data, aux)
                end = data.index(b"\0", strtab + name)
                if bytes(data[strtab + name : end]) == version and not flags & VER_FLG_WEAK:
                    struct.pack_into("<H", data, aux + 4, flags | VER_FLG_WEAK)
                    found = True
                aux += next_aux
            need += next_need
    if found:
        tmp = binary.with_name(binary.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, binary)
    return found


def glibc_version() -> str:
    """The running glibc's version, e.g. "2.36" ("0" if it cannot be told)."""
    text = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    return text.split()[-1] if text else "0"


def uws_binary(node_abi: str) -> Path:
    """The uWebSockets.js addon node loads on this machine (the names its uws.js builds)."""
    arch = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return PEERS_BUILD / "node_modules" / UWS_PACKAGE / f"uws_linux_{arch}_{node_abi}.node"


def make_uws_load(node_abi: str) -> tuple[dict[str, str], str]:
    """The environment that makes the addon load here, and how (for the report)."""
    binary = uws_binary(node_abi)
    if not binary.exists():
        raise RuntimeError(f"{UWS_PACKAGE} has no {binary.name} for this node")
    if tuple(int(x) for x in glibc_version().split(".")[:2] if x.isdigit()) >= (2, 38):
        return {}, f"{binary.name} as published"
    published = PEERS_BUILD / f"{binary.name}.published.sha256"
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    if weaken_version(binary, C23_VERSION):
        published.write_text(digest + "\n", encoding="ascii")
    lib = build_shim()
    origin = published.read_text(encoding="ascii").strip() if published.exists() else "unknown"
    how = (
        f"{binary.name} (published sha256 {origin}…) with its GLIBC_2.38 requirement "
        f"marked weak (now {hashlib.sha256(binary.read_bytes()).hexdigest()[:16]}…), and "
        "benchmarks/peers/isoc23_shim.c (gcc -O2, LD_PRELOAD) for __isoc23_strtol, "
        f"__isoc23_strtoul and __isoc23_sscanf on glibc {glibc_version()}"
    )
    return {"LD_PRELOAD": str(lib)}, how


def prepare_peers() -> dict[str, Result]:
    """Per peer: how to start it (``argv``, ``env``, ``measured``) or ``status`` "not measured"."""
    out: dict[str, Result] = {}
    try:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found")
        node_version = run([node, "--version"], 30)
        abi = run([node, "-p", "process.versions.modules"], 30)
        npm_install()
    except RuntimeError as exc:
        return {name: {"status": f"not measured: {exc}"} for name in PEERS}
    base = {"NODE_PATH": str(PEERS_BUILD / "node_modules")}
    for name, (script, package) in PEERS.items():
        try:
            env, how = make_uws_load(abi) if package == UWS_PACKAGE else ({}, "as published")
            env = {**base, **env}
            probe = f"require({json.dumps(package)})"
            run([node, "-e", probe], 30, {**os.environ, **env})
        except (RuntimeError, OSError, ValueError, struct.error) as exc:  # a malformed ELF too
            out[name] = {"status": f"not measured: {exc}"}
            continue
        out[name] = {
            "status": "ready",
            "argv": [node, str(PEERS_SRC / script)],
            "env": env,
            "measured": f"node {node_version} + {package} {installed_version(package)} "
            f"(benchmarks/peers/{script}); {how}",
        }
    return out
