"""Operating-system isolation for the process that runs candidate code.

Three layers, each from the kernel rather than from Python:

- **bubblewrap** (Debian's ``bubblewrap``), when it is installed and the kernel lets it make
  namespaces: a new user (uid ``nobody``, no capabilities), PID, network (loopback only,
  nothing listening), IPC, UTS and mount namespace in which only the Python installation,
  hyarch's package and the shared libraries exist, read-only, plus a small private ``/tmp``;
  the whole namespace dies with its parent.
- **Landlock** (Linux 5.13+), applied by the child to itself before it runs candidate code:
  reads only under those same roots, writes only in its scratch folder, no TCP, and (ABI 6+)
  no signals to processes outside itself.
- **seccomp**, also applied by the child to itself: no ``execve``, no new processes (threads
  only), no sockets, no ``ptrace``, no signals but to itself, no namespaces or mounts, no
  kernel keyrings, BPF, ``io_uring`` or module loading.

Resource limits (address space, CPU seconds, file size, open files, no core dumps) are set
before the child starts, and the runner kills the child's whole process group (and, with
bubblewrap, its PID namespace) at the wall-clock limit or when the parent dies.

``detect()`` says which layers this machine offers; the runner warns once when one is
missing and uses the strongest combination that works, never nothing without saying so.
``HYARCH_SANDBOX_NO_BWRAP``, ``HYARCH_SANDBOX_NO_LANDLOCK`` and ``HYARCH_SANDBOX_NO_SECCOMP``
switch a layer off (tests of the fall-back paths, and the overhead benchmark); the
runner then says so.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import shutil
import signal
import site
import struct
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

# -- what this machine offers ------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    bwrap: str | None  # path of a working bubblewrap, or None
    landlock_abi: int  # 0 when the kernel has no Landlock
    seccomp: bool
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = []
        parts.append("namespaces (bubblewrap)" if self.bwrap else "no namespaces")
        parts.append(f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else "no Landlock")
        parts.append("seccomp" if self.seccomp else "no seccomp")
        return ", ".join(parts)


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_ARCH = platform.machine()
_NR = {  # the few syscalls we call directly, by architecture
    "x86_64": {"landlock_create_ruleset": 444, "landlock_add_rule": 445,
               "landlock_restrict_self": 446},
    "aarch64": {"landlock_create_ruleset": 444, "landlock_add_rule": 445,
                "landlock_restrict_self": 446},
}


def landlock_abi() -> int:
    if sys.platform != "linux" or _ARCH not in _NR:
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(ctypes.c_long(_NR[_ARCH]["landlock_create_ruleset"]), None,
                     ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    return int(r) if r > 0 else 0


def _bwrap_works(path: str) -> bool:
    try:
        r = subprocess.run(
            [path, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
             "--cap-drop", "ALL", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
             "--dev", "/dev", "--", "true"],
            capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@functools.lru_cache(maxsize=1)
def detect() -> Capabilities:
    """Probe once per process which isolation layers work here."""
    notes = []
    bwrap = None
    if os.environ.get("HYARCH_SANDBOX_NO_BWRAP"):  # for tests of the fall-back path
        notes.append("bubblewrap disabled by HYARCH_SANDBOX_NO_BWRAP")
    else:
        path = shutil.which("bwrap")
        if path is None:
            notes.append("bubblewrap is not installed (Debian/Ubuntu: apt-get install"
                         " bubblewrap): candidate code runs without private namespaces")
        elif _bwrap_works(path):
            bwrap = path
        else:
            notes.append(f"{path} cannot create namespaces on this kernel (user namespaces"
                         " disabled?): candidate code runs without private namespaces")
    abi = 0 if os.environ.get("HYARCH_SANDBOX_NO_LANDLOCK") else landlock_abi()
    if os.environ.get("HYARCH_SANDBOX_NO_LANDLOCK"):
        notes.append("Landlock disabled by HYARCH_SANDBOX_NO_LANDLOCK")
    elif not abi:
        notes.append("this kernel has no Landlock: file access is limited by namespaces only")
    seccomp = sys.platform == "linux" and _ARCH in _SYSCALLS
    if os.environ.get("HYARCH_SANDBOX_NO_SECCOMP"):
        seccomp = False
        notes.append("seccomp disabled by HYARCH_SANDBOX_NO_SECCOMP")
    elif not seccomp:
        notes.append(f"no seccomp filter for {sys.platform}/{_ARCH}: process and socket"
                     " creation are not blocked by the kernel")
    return Capabilities(bwrap, abi, seccomp, tuple(notes))


# -- what the child may read -------------------------------------------------------------


def read_roots(package_dir: str) -> list[str]:
    """Directories the child needs to read: the Python installation, its site-packages,
    hyarch's own package and the system's shared libraries. Nothing else (no home, no
    working directory, no run folders)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
             sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
             package_dir, os.path.dirname(os.path.realpath(sys.executable))}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # some virtualenvs
        pass
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if user and os.path.isdir(user):
        roots.add(user)
    # packages installed in editable mode elsewhere (a ``.pth`` line or a finder's mapping)
    # are reached through their own directories; torch and numpy are regular installs
    for mod in ("torch", "numpy", "torchdiffeq", "scipy", "sklearn", "pysindy"):
        m = sys.modules.get(mod)
        f = getattr(m, "__file__", None) if m else None
        if f:
            roots.add(os.path.dirname(os.path.dirname(os.path.realpath(f))))
    for sys_dir in ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
                    "/usr/share/zoneinfo", "/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(sys_dir):
            roots.add(sys_dir)
    out = []
    for r in sorted({os.path.realpath(r) for r in roots if r and os.path.exists(r)}):
        if not any(r.startswith(o.rstrip("/") + "/") for o in out):
            out.append(r)
    return out


def bwrap_command(bwrap: str, package_dir: str, scratch_mb: int, gpu: bool) -> list[str]:
    """The bubblewrap prefix: a private, read-only view and every namespace unshared."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
           "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv",
           "--hostname", "sandbox",
           # the private /tmp first: read-only binds below it (a venv or a checkout under
           # /tmp) are mounted on top of it, not hidden by it
           "--size", str(scratch_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    roots = read_roots(package_dir)
    for r in roots:
        cmd += ["--ro-bind", r, r]
    # the interpreter may be reached through symlinks (/usr/bin/python3 -> python3.11)
    exe = sys.executable
    if not any(exe.startswith(r.rstrip("/") + "/") for r in roots):
        cmd += ["--ro-bind", exe, exe]
    for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/localtime"):
        if os.path.islink(link):  # merged-/usr systems: the loader is reached through these
            cmd += ["--symlink", os.readlink(link), link]
    if os.path.isdir("/sys/devices/system/cpu"):  # torch's CPU detection reads it
        cmd += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--chdir", "/tmp"]
    if gpu:
        for dev in sorted(os.listdir("/dev")):
            if dev.startswith("nvidia"):
                cmd += ["--dev-bind", f"/dev/{dev}", f"/dev/{dev}"]
        if os.path.isdir("/sys"):
            cmd += ["--ro-bind", "/sys", "/sys"]
    return cmd


# -- applied by the child to itself ------------------------------------------------------

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_PDEATHSIG = 1
SECCOMP_MODE_FILTER = 2


def set_parent_death_signal() -> None:
    """Die with the parent (used in the fall-back path, where bubblewrap does not)."""
    if sys.platform == "linux":
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _no_new_privs() -> None:
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


# Landlock access rights (uapi/linux/landlock.h)
_LL_EXECUTE, _LL_WRITE_FILE, _LL_READ_FILE, _LL_READ_DIR = 1, 2, 4, 8
_LL_FS_V1 = (1 << 13) - 1  # every right of ABI 1
_LL_REFER, _LL_TRUNCATE, _LL_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_LL_FILE_RIGHTS = _LL_EXECUTE | _LL_WRITE_FILE | _LL_READ_FILE | _LL_TRUNCATE | _LL_IOCTL_DEV


def apply_landlock(abi: int, read: list[str], write: list[str]) -> None:
    """Allow reading under ``read`` and everything under ``write``; deny the rest of the
    file system, TCP (ABI 4+), and signals or abstract sockets outside the process (ABI 6+)."""
    libc = _libc()
    nr = _NR[_ARCH]
    fs = _LL_FS_V1
    if abi >= 2:
        fs |= _LL_REFER
    if abi >= 3:
        fs |= _LL_TRUNCATE
    if abi >= 5:
        fs |= _LL_IOCTL_DEV
    net = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP
    scoped = 3 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    if abi >= 6:
        attr = struct.pack("QQQ", fs, net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", fs, net)
    else:
        attr = struct.pack("Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(ctypes.c_long(nr["landlock_create_ruleset"]), buf,
                      ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        def allow(path: str, rights: int) -> None:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                return
            try:
                if not os.path.isdir(path):
                    rights &= _LL_FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights & fs, pfd), 12)
                if libc.syscall(ctypes.c_long(nr["landlock_add_rule"]), ctypes.c_int(fd),
                                ctypes.c_int(1), rule, ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(pfd)

        for p in read:
            allow(p, _LL_EXECUTE | _LL_READ_FILE | _LL_READ_DIR)
        for p in write:
            allow(p, fs)
        _no_new_privs()
        if libc.syscall(ctypes.c_long(nr["landlock_restrict_self"]), ctypes.c_int(fd),
                        ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)


# seccomp: syscalls refused with EPERM, by architecture (from the kernel's syscall tables)
_DENY_COMMON = (
    "execve", "execveat", "socket", "socketpair", "connect", "bind", "listen", "accept",
    "accept4", "ptrace", "process_vm_readv", "process_vm_writev", "tkill", "pidfd_open",
    "pidfd_send_signal", "pidfd_getfd", "mount", "umount2", "unshare", "setns", "chroot",
    "pivot_root", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load",
    "init_module", "finit_module", "delete_module", "reboot", "personality", "setsid",
    "setpgid", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "kexec_file_load", "name_to_handle_at", "open_by_handle_at",
)
_SYSCALLS = {
    "x86_64": {
        "audit_arch": 0xC000003E, "clone": 56, "clone3": 435, "kill": 62, "tgkill": 234,
        "fork": 57, "vfork": 58,
        "execve": 59, "execveat": 322, "socket": 41, "socketpair": 53, "connect": 42,
        "bind": 49, "listen": 50, "accept": 43, "accept4": 288, "ptrace": 101,
        "process_vm_readv": 310, "process_vm_writev": 311, "tkill": 200, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "mount": 165, "umount2": 166,
        "unshare": 272, "setns": 308, "chroot": 161, "pivot_root": 155, "keyctl": 250,
        "add_key": 248, "request_key": 249, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "kexec_load": 246, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "reboot": 169, "personality": 135, "setsid": 112,
        "setpgid": 109, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kexec_file_load": 320,
        "name_to_handle_at": 303, "open_by_handle_at": 304,
    },
    "aarch64": {
        "audit_arch": 0xC00000B7, "clone": 220, "clone3": 435, "kill": 129, "tgkill": 131,
        "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199, "connect": 203,
        "bind": 200, "listen": 201, "accept": 202, "accept4": 242, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "tkill": 130, "pidfd_open": 434,
        "pidfd_send_signal": 424, "pidfd_getfd": 438, "mount": 40, "umount2": 39,
        "unshare": 97, "setns": 268, "chroot": 51, "pivot_root": 41, "keyctl": 219,
        "add_key": 217, "request_key": 218, "bpf": 280, "perf_event_open": 241,
        "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "kexec_load": 104, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "reboot": 142, "personality": 92, "setsid": 157,
        "setpgid": 154, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kexec_file_load": 294,
        "name_to_handle_at": 264, "open_by_handle_at": 265,
    },
}

# classic BPF opcodes
_LD_W_ABS, _JEQ_K, _JSET_K, _RET_K = 0x20, 0x15, 0x45, 0x06
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_EPERM, _RET_ENOSYS = 0x00050000 | 1, 0x00050000 | 38
_CLONE_THREAD = 0x00010000


def _ins(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_program(pid: int) -> bytes:
    """A filter that refuses the syscalls above, clones that are not threads, and signals
    to any process but ``pid`` (the child itself)."""
    table = _SYSCALLS[_ARCH]
    deny = [table[n] for n in _DENY_COMMON] + [table[n] for n in ("fork", "vfork") if n in table]
    prog = [
        _ins(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _ins(_JEQ_K, 1, 0, table["audit_arch"]),
        _ins(_RET_K, 0, 0, _RET_KILL),
        _ins(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if _ARCH == "x86_64":  # the x32 ABI's numbers have bit 30 set: refuse them all
        prog += [_ins(0x35, 0, 1, 0x40000000),  # JGE
                 _ins(_RET_K, 0, 0, _RET_EPERM)]
    for nr in deny:
        prog += [_ins(_JEQ_K, 0, 1, nr), _ins(_RET_K, 0, 0, _RET_EPERM)]
    # clone3 cannot be inspected (its flags are behind a pointer): ENOSYS makes the C
    # library fall back to clone, whose flags we can check
    prog += [_ins(_JEQ_K, 0, 1, table["clone3"]), _ins(_RET_K, 0, 0, _RET_ENOSYS)]
    # clone: threads only (CLONE_THREAD in the low word of the first argument)
    prog += [_ins(_JEQ_K, 0, 4, table["clone"]),
             _ins(_LD_W_ABS, 0, 0, 16),
             _ins(_JSET_K, 1, 0, _CLONE_THREAD),
             _ins(_RET_K, 0, 0, _RET_EPERM),
             _ins(_RET_K, 0, 0, _RET_ALLOW)]
    # kill and tgkill: only to itself (first argument == pid)
    for name in ("kill", "tgkill"):
        prog += [_ins(_JEQ_K, 0, 4, table[name]),
                 _ins(_LD_W_ABS, 0, 0, 16),
                 _ins(_JEQ_K, 1, 0, pid),
                 _ins(_RET_K, 0, 0, _RET_EPERM),
                 _ins(_RET_K, 0, 0, _RET_ALLOW)]
    prog.append(_ins(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)


def apply_seccomp() -> None:
    prog = seccomp_program(os.getpid())
    n = len(prog) // 8
    buf = ctypes.create_string_buffer(prog, len(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(n, ctypes.cast(buf, ctypes.c_void_p))
    _no_new_privs()
    if _libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
