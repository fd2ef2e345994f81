"""Finding each component's process tree and reading its resource use (the psutil adapter)."""

from __future__ import annotations

import functools
import os
import pwd
import re
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psutil

from glyph_guard.common.config import Component, Matcher


@dataclass(frozen=True)
class ProcessStats:
    """One process of a tree, as read in one pass."""

    pid: int
    create_time: float
    rss_bytes: int
    cpu_seconds: float
    threads: int
    open_fds: int | None  # None when /proc/PID/fd is not readable
    uid: int | None = None  # the real user; None when not readable


@dataclass(frozen=True)
class ProcessTree:
    """A component's main processes and all their descendants."""

    roots: tuple[int, ...] = ()
    processes: tuple[ProcessStats, ...] = ()

    @property
    def pids(self) -> frozenset[int]:
        return frozenset(p.pid for p in self.processes)

    @property
    def start_time(self) -> float | None:
        """Creation time of the oldest main process (changes when the component restarts)."""
        times = [p.create_time for p in self.processes if p.pid in self.roots]
        return min(times) if times else None


@dataclass
class _Seen:
    proc: psutil.Process
    ppid: int
    argv: tuple[str, ...]
    uid: int | None
    cmdline: str = ""  # argv joined by spaces
    program: str = ""  # see program_and_args
    args: str = ""  # the program's own arguments, joined by spaces
    stats: ProcessStats | None = None  # as last read

    def __post_init__(self) -> None:
        self.cmdline = " ".join(self.argv)
        program, args = program_and_args(self.argv)
        self.program, self.args = program, " ".join(args)

    @property
    def may_exec(self) -> bool:
        """A shell often ends by exec'ing what it set up (`sh -c 'setup; exec vllm serve'`)."""
        return bool(self.argv) and os.path.basename(self.argv[0]) in SHELLS


FRESH_SECONDS = 5.0  # a process this young may still exec: read its command line again
MEMBERS_EVERY = 5  # main processes are read on every pass, the rest of a tree on every fifth
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
_PYTHON = re.compile(r"python[0-9.]*|pypy[0-9.]*")
_INTERPRETER = re.compile(rf"{_PYTHON.pattern}|(ba|da|z|k|a)?sh|perl|ruby|node")
_VALUED = frozenset({"-W", "-X", "-o", "-O", "+o", "+O", "--rcfile", "--init-file"})


def program_and_args(argv: tuple[str, ...] | list[str]) -> tuple[str, tuple[str, ...]]:
    """The program a command line runs and that program's own arguments.

    The program is argv[0]'s basename, except under an interpreter: there it is the script's
    basename (`python3 /usr/bin/vllm serve ...` runs `vllm`) or python's `-m` module. Code
    given inline (`sh -c '...'`, `python -c '...'`) is an argument of the interpreter, so a
    wrapper whose code merely mentions a program is never taken for that program.
    """
    if not argv:
        return "", ()
    name = os.path.basename(argv[0])
    if not _INTERPRETER.fullmatch(name):
        return name, tuple(argv[1:])
    python = bool(_PYTHON.fullmatch(name))
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            index += 1
            break
        if not arg.startswith(("-", "+")) or arg in ("-", "+"):
            break
        if arg in _VALUED:
            index += 2
            continue
        flags = arg[1:] if not arg.startswith("--") else ""
        if "c" in flags:
            return name, tuple(argv[1:])  # inline code: the interpreter is the program
        if python and "m" in flags:
            rest = flags[flags.index("m") + 1 :]
            if rest:
                return rest, tuple(argv[index + 1 :])
            if index + 1 < len(argv):
                return argv[index + 1], tuple(argv[index + 2 :])
            return name, ()
        index += 1
    if index < len(argv):
        return os.path.basename(argv[index]), tuple(argv[index + 1 :])
    return name, ()


def _argv_mismatch(matcher: Matcher, program: str, args: str, cmdline: str) -> str | None:
    if matcher.program is not None:
        if not _compiled(matcher.program).fullmatch(program):
            return "program"
        if matcher.args is not None and not _compiled(matcher.args).search(args):
            return "args"
    if matcher.cmdline is not None and not _compiled(matcher.cmdline).search(cmdline):
        return "cmdline"
    return None


def argv_matches(matcher: Matcher, argv: tuple[str, ...] | list[str]) -> bool:
    """Whether a command line satisfies the matcher's program, args and cmdline rules."""
    program, args = program_and_args(argv)
    return _argv_mismatch(matcher, program, " ".join(args), " ".join(argv)) is None


def protected_pids() -> frozenset[int]:
    """PIDs no matcher may ever name: init, this process and every one of its ancestors."""
    pids = {0, 1, os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pids.add(os.getppid())
    return frozenset(pids)


@dataclass
class ProcessTable:
    """Knows every process's parent and command line; reads each only when a process is new.

    A scan lists /proc and looks only at new (or very young) PIDs, and at shells (which may
    exec another program under the same PID), so its cost does not grow with the number of
    long-lived processes. A tree's main processes are read on every find(), so their death
    is seen at once (and with it the departure of their children); a PID that leaves /proc
    leaves its tree at once too, and the other members' figures are refreshed on every
    MEMBERS_EVERY-th pass.
    """

    protected: frozenset[int] = field(default_factory=protected_pids)
    _seen: dict[int, _Seen] = field(default_factory=dict)
    _passes: int = 0
    listed: list[int] = field(default_factory=list)  # every PID in /proc at the last refresh

    def refresh(self) -> None:
        """List the processes; read parent and command line of the new ones."""
        now = time.time()
        current: dict[int, _Seen] = {}
        self.listed = psutil.pids()
        for pid in self.listed:
            old = self._seen.get(pid)
            settled = old is not None and now - old.proc.create_time() > FRESH_SECONDS
            if old is not None and settled and (not old.may_exec or _same_argv(old)):
                current[pid] = old
                continue
            try:
                proc = old.proc if old is not None else psutil.Process(pid)
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue  # it has exited; only its parent has not reaped it yet
                    argv = tuple(proc.cmdline())
                    if old is not None and old.argv == argv:
                        old.ppid = proc.ppid()  # it may have been re-parented
                        current[pid] = old
                    else:
                        current[pid] = _Seen(proc, proc.ppid(), argv, _uid(proc))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self._seen = current

    def find(self, components: Iterable[Component]) -> dict[str, ProcessTree]:
        """Each component's tree, from the last refresh, with fresh resource figures."""
        self._passes += 1
        children: dict[int, list[int]] = {}
        for pid, seen in self._seen.items():
            children.setdefault(seen.ppid, []).append(pid)
        return {c.name: self._tree(c.match, children) for c in components}

    def _tree(self, matcher: Matcher, children: Mapping[int, list[int]]) -> ProcessTree:
        matched = self._matching(matcher)
        roots = sorted(pid for pid in matched if not self._has_matched_ancestor(pid, matched))
        members: dict[int, None] = {}  # insertion-ordered set: parents before children
        stack = list(reversed(roots))
        while stack:
            pid = stack.pop()
            if pid not in members and pid not in self.protected:
                members[pid] = None
                stack.extend(children.get(pid, ()))
        kept: dict[int, ProcessStats] = {}
        every = self._passes % MEMBERS_EVERY == 0
        for pid in members:
            seen = self._seen[pid]
            if every or seen.stats is None or pid in roots:
                seen.stats = read_stats(seen.proc)
            # A child whose parent died has been re-parented: it left the tree with it.
            if seen.stats is not None and (pid in roots or seen.ppid in kept):
                kept[pid] = seen.stats
        return ProcessTree(tuple(pid for pid in roots if pid in kept), tuple(kept.values()))

    def _matching(self, matcher: Matcher) -> set[int]:
        if matcher.pidfile is not None:
            pid = read_pidfile(matcher.pidfile)
            candidates: Iterable[int] = (pid,) if pid is not None else ()
        else:
            candidates = self._seen
        return {pid for pid in candidates if self._mismatch(matcher, pid) is None}

    def _mismatch(self, matcher: Matcher, pid: int) -> str | None:
        """Which rule PID breaks (a constant, cheap on the hot path), or None when it proves."""
        if pid in self.protected:
            return "protected"
        seen = self._seen.get(pid)
        if seen is None:
            return "gone"
        wrong = _argv_mismatch(matcher, seen.program, seen.args, seen.cmdline)
        if wrong is None and matcher.user is not None and seen.uid != user_id(matcher.user):
            return "user"
        return wrong

    def rejection(self, matcher: Matcher, pid: int) -> str | None:
        """Why PID is not the component's main process, or None when it proves to be."""
        rule = self._mismatch(matcher, pid)
        seen = self._seen.get(pid)
        if rule is None:
            return None
        if rule == "protected":
            return f"PID {pid} is init, this service or one of its ancestors"
        if rule == "gone" or seen is None:
            return f"PID {pid} is not running (or not ours to read)"
        if rule == "user":
            return f"PID {pid} runs as UID {seen.uid}, not as {matcher.user}"
        if rule == "program":
            return f"PID {pid} runs {seen.program!r}, not a program matching the config"
        return f"PID {pid}'s {'arguments' if rule == 'args' else 'command line'} do not match"

    def _has_matched_ancestor(self, pid: int, matched: set[int]) -> bool:
        hops = 0
        parent = self._seen[pid].ppid
        while parent in self._seen and hops < 256:  # bounded: ppid loops cannot happen, but
            if parent in matched:  # a racing table could show one
                return True
            parent = self._seen[parent].ppid
            hops += 1
        return False


def _same_argv(seen: _Seen) -> bool:
    """Whether the process still runs the command line it had (False once gone or exec'd)."""
    try:
        return tuple(seen.proc.cmdline()) == seen.argv
    except psutil.Error:
        return False


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _uid(proc: psutil.Process) -> int | None:
    try:
        return int(proc.uids().real)
    except psutil.AccessDenied:
        return None


@functools.lru_cache(maxsize=64)
def user_id(user: str) -> int | None:
    """A configured user (name or UID) as a UID; None (matching nobody) when unknown here."""
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


PIDFILE_MAX_BYTES = 32


def read_pidfile(path: os.PathLike[str] | str) -> int | None:
    """The PID in a pidfile, or None when it is missing, malformed or not a regular file.

    A FIFO, a device or a symlink is refused before it is opened (and again through the
    descriptor, opened without blocking or following links), so nobody can make a reader
    wait on it or point it at another file.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, PIDFILE_MAX_BYTES).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def read_stats(proc: psutil.Process) -> ProcessStats | None:
    """Resource figures of one process, or None if it is gone."""
    try:
        with proc.oneshot():
            rss = proc.memory_info().rss
            if rss == 0:  # a zombie (exited, not reaped yet): no memory, no port, not alive
                return None
            cpu = proc.cpu_times()
            return ProcessStats(
                pid=proc.pid,
                create_time=proc.create_time(),
                rss_bytes=rss,
                cpu_seconds=cpu.user + cpu.system,
                threads=proc.num_threads(),
                open_fds=_open_fds(proc),
                uid=_uid(proc),
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _open_fds(proc: psutil.Process) -> int | None:
    """None when /proc/PID/fd is not ours to read."""
    try:
        return proc.num_fds()
    except psutil.AccessDenied:
        return None
