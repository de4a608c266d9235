"""Canaries for the hostile corpus: everything an escaped attack would leave behind.

``Canaries`` prepares, inside temporary folders the test owns, the targets the hostile
candidates aim at (a canary folder per attack with a file to overwrite, a secret file, a
fake home with ``.ssh``, a fake run folder, the space's files), starts a loopback TCP
listener, a UDP socket and Unix sockets (a path and an abstract name) that record every
byte they receive, and a sacrificial ``sleep`` process the attacks try to signal. It sets
canary secrets in the parent's environment and a session marker in ``TZ`` (one of the few
variables the runner passes to the child), so that any process a candidate leaves behind
can be found by scanning ``/proc/*/environ``; each attack also puts its own marker in the
command line of anything it tries to start.

Candidate files are templates: ``@NAME@`` inside a string literal is replaced by the value
of ``NAME`` (``@CANARY@``, ``@MARKER@``, ``@TCP_PORT@`` ...), so the files stay valid
Python on disk. Their docstring says which route they try (first line), what must become
of them (``Expect: failed | ok | any``) and whether the static checks reject them
(``Static: rejected | passes``); an evading variant must pass the static checks, so that
the operating system's layers are what it tests.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HOSTILE_DIR = Path(__file__).resolve().parent
VICTIM_TEXT = "the canary file's original content\n"


@dataclass(frozen=True)
class Attack:
    name: str
    route: str
    expect: str  # failed | ok | any
    static: str  # rejected | passes
    timeout: float
    memory_mb: int
    template: str


def attacks() -> list[Attack]:
    out = []
    for p in sorted(HOSTILE_DIR.glob("*.py")):
        if p.name in ("__init__.py", "harness.py"):
            continue
        text = p.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        meta = dict(re.findall(r"^(Expect|Static|Timeout|Memory): *(\S+)", doc, re.M))
        assert doc and "Expect" in meta and "Static" in meta, f"{p.name}: docstring lacks metadata"
        out.append(Attack(p.stem, doc.splitlines()[0], meta["Expect"], meta["Static"],
                          float(meta.get("Timeout", 60)), int(meta.get("Memory", 4096)), text))
    return out


def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink)
    return out


class Canaries:
    def __init__(self, root: Path, space_file: Path, run_dir: Path | None = None) -> None:
        self.root = root
        # letters only: "<session>0" is a valid TZ (a zone named so, at UTC)
        self.session = "hycanary" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz")
                                            for _ in range(10))
        self.api_key = "sk-canary-" + secrets.token_hex(12)
        self.db_url = f"postgresql://canary:{secrets.token_hex(8)}@db.invalid/canary"
        self.file_secret = "hycanary-file-secret-" + secrets.token_hex(8)
        self.ssh_secret = "hycanary-ssh-key-" + secrets.token_hex(8)
        self.space_secret = "hycanary-space-" + secrets.token_hex(8)
        self.canary = root / "canary"
        self.canary.mkdir(parents=True)
        self.secret_file = root / "secret.txt"
        self.secret_file.write_text(self.file_secret + "\n")
        self.home = root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh" / "id_ed25519").write_text(self.ssh_secret + "\n")
        self.run_dir = run_dir or root / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "notes.txt").write_text(self.file_secret + "\n")
        self.space_file = space_file
        with space_file.open("a") as fh:
            fh.write(f"# {self.space_secret}\n")
        self.sock_dir = Path(tempfile.mkdtemp(prefix="hyc"))  # short: a Unix socket path
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Condition()  # listener threads notify what they receive
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.victim: subprocess.Popen | None = None
        self.before: dict[str, tuple] = {}

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, names: list[str]) -> Canaries:
        for n in names:  # one canary folder per attack, with a file to overwrite
            (self.canary / n).mkdir()
            (self.canary / n / "victim.txt").write_text(VICTIM_TEXT)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = str(self.sock_dir / "s")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(16)
        self.abstract_name = self.session
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(16)
        for s, kind in ((self.tcp, "tcp"), (self.unix, "unix"), (self.abstract, "abstract")):
            s.settimeout(0.2)
            t = threading.Thread(target=self._accept, args=(s, kind), daemon=True)
            t.start()
            self._threads.append(t)
        self.udp.settimeout(0.2)
        t = threading.Thread(target=self._recv_udp, daemon=True)
        t.start()
        self._threads.append(t)
        # a sacrificial process the attacks try to signal (its own session: its own group)
        self.victim = subprocess.Popen(["sleep", "900"], start_new_session=True,
                                       env={"PATH": "/usr/bin:/bin"})
        self.before = _snapshot(self.root)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for s in (self.tcp, self.udp, self.unix, self.abstract):
            s.close()
        if self.victim is not None and self.victim.poll() is None:
            self.victim.kill()
            self.victim.wait(timeout=10)
        try:
            os.unlink(self.unix_path)
            os.rmdir(self.sock_dir)
        except OSError:
            pass

    def _accept(self, s: socket.socket, kind: str) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.received.append((kind, b"<connection>"))
                self._lock.notify_all()
            conn.settimeout(1.0)
            try:
                data = conn.recv(1 << 16)
            except OSError:
                data = b""
            finally:
                conn.close()
            with self._lock:
                self.received.append((kind, data[:200]))
                self._lock.notify_all()

    def _recv_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.udp.recvfrom(1 << 16)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.received.append(("udp", data[:200]))
                self._lock.notify_all()

    # -- templates ----------------------------------------------------------------------
    def values(self, name: str) -> dict[str, str]:
        import hyarch

        d = self.canary / name

        return {
            "CANARY": str(d), "MARKER": self.marker(name), "TCP_PORT": str(self.tcp.getsockname()[1]),
            "UDP_PORT": str(self.udp.getsockname()[1]), "UNIX_PATH": self.unix_path,
            "ABSTRACT": self.abstract_name, "PARENT_PID": str(os.getpid()),
            "PARENT_PGID": str(os.getpgid(0)), "VICTIM_PID": str(self.victim.pid),
            "SECRET_FILE": str(self.secret_file), "FAKE_HOME": str(self.home),
            "RUN_DIR": str(self.run_dir), "SPACE_FILE": str(self.space_file),
            "CACHE_DIR": os.environ.get("HYARCH_CACHE", str(self.root)),
            "PACKAGE_DIR": os.path.dirname(os.path.realpath(hyarch.__file__)),
        }

    def marker(self, name: str) -> str:
        return f"{self.session}-{name}"

    def source(self, attack: Attack) -> str:
        text = attack.template
        for k, v in self.values(attack.name).items():
            text = text.replace(f"@{k}@", v)
        return text

    # -- checks -------------------------------------------------------------------------
    def secrets(self) -> list[str]:
        return [self.api_key, self.db_url, self.file_secret, self.ssh_secret, self.space_secret]

    def leaks(self, text: str) -> list[str]:
        """Canary secrets in ``text``, and ``[redacted]``: the runner's scrubbing is a last
        resort, a secret that had to be redacted had reached the child."""
        found = [s for s in self.secrets() if s in text]
        if "[redacted]" in text:
            found.append("[redacted]")
        return found

    def leftovers(self, marker: str | None = None) -> list[str]:
        """Live processes carrying the session marker in their environment, or ``marker``
        (an attack's own) in their command line or environment."""
        out = []
        me = os.getpid()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                env = b""
            hit = self.session.encode() in env
            if marker is not None:
                hit = marker.encode() in cmd or marker.encode() in env
            if hit:
                try:
                    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
                except OSError:
                    continue
                if state != "Z":
                    shown = cmd.replace(b"\0", b" ").decode(errors="replace")[:200]
                    out.append(f"pid {pid}: {shown}")
        return out

    def wait_no_leftovers(self, marker: str | None = None, grace: float = 3.0) -> list[str]:
        deadline = time.monotonic() + grace
        while True:
            left = self.leftovers(marker)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)  # a PID namespace is torn down asynchronously

    def file_changes(self) -> list[str]:
        after = _snapshot(self.root)
        out = [f"new: {p}" for p in sorted(set(after) - set(self.before))]
        out += [f"gone: {p}" for p in sorted(set(self.before) - set(after))]
        out += [f"changed: {p}" for p in sorted(set(after) & set(self.before))
                if after[p] != self.before[p] and not os.path.isdir(p)]
        return out

    def wait_received(self, needle: bytes, timeout: float = 5.0) -> bool:
        """Wait (on the listeners' notifications) until some received bytes hold ``needle``."""
        with self._lock:
            return self._lock.wait_for(lambda: any(needle in x[1] for x in self.received),
                                       timeout)

    def network(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.received)

    def victim_alive(self) -> bool:
        return self.victim is not None and self.victim.poll() is None


def stray_files(markers: list[str], where: list[Path]) -> list[str]:
    """Files named after an attack's marker in well-known places outside the sandbox."""
    out = []
    for d in where:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        out += [str(d / n) for n in names if any(m in n for m in markers)]
    return out


def result_text(res) -> str:
    return json.dumps(res.result, default=str) + "\n" + res.stderr_tail + "\n" + json.dumps(
        res.extra, default=str)


__all__ = ["Attack", "Canaries", "attacks", "result_text", "stray_files", "signal"]
