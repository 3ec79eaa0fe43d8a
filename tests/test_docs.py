"""Every example in README.md and docs/*.md runs as written.

Each fenced ```bash / ```sh / ```console and ```python block is extracted and run; blocks of one file run in order, in
one shared temporary directory (so a later block can use what an earlier one wrote), with the repository's top-level
folders (``configs/`` ...) linked into it. Shell blocks run in bash with the interpreter's ``bin/`` first on PATH and
the repository on PYTHONPATH; ``console`` blocks run their ``$ `` lines. Python blocks run in a fresh process each,
forked from one per file (itself forked from one per test process that has imported the libraries); so do the
``vpt``, ``textpt``, ``vlmpt`` and ``python -m <module of the project>`` commands of shell blocks: a small client in
their place on PATH hands the command line, folder, environment and standard streams to that process, which runs the
command's ``main`` (or the module as ``__main__``) in a forked child and returns its exit status (what the command
would do, without importing torch again for every command); a signal sent to the client goes to the command. Any other ``python`` command, and any command under a distributed launcher
(``torchrun $(which vpt)``), runs the real one. Other blocks (```text, ```yaml ...) only show things and are not run.

HTML comments right before a block change how it runs (several may be stacked):

- ``<!-- doctest: skip (reason) -->``: not run; the reason is required.
- ``<!-- doctest: sub OLD -> NEW -->``: every OLD in the block is replaced by NEW before it runs (a hub name by a tiny
  local model, a long run by a short one). OLD must occur in the block.
- ``<!-- doctest: library-warning TEXT (reason) -->``: a third-party warning line holding TEXT may appear in the
  output (one the docs cannot avoid, such as a library's warning about another library's call; the text around the
  block says so). Every other one fails the block (``LIBRARY_WARNING``).
- ``<!-- doctest: expect KEY >= NUMBER -->`` (or ``<=``): the last ``"KEY": number`` the block prints must satisfy the
  comparison, so a number the text claims is checked by the run that shows it.

A comment ``# trainable params: A || all params: B || trainable%: C`` in a block must be what the block prints.

A doc named in ``RUN_BY`` is run, the same way, by the test named there (``run_doc``), which also checks what it wrote.

No block may print the warning of prompts loaded into a backbone other than the one they were trained on
(:meth:`promptcore.model.PromptedModel.check_prompt_config`): every example meets its own backbone. Nor may a block
print a third-party library's warning line (``LIBRARY_WARNING``) or a traceback: what the docs show is what a user
sees.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "console", "shell"}
PYTHON = {"python", "py"}
BLOCK_TIMEOUT_S = 300
# A name ending in "*" is loaded in full (every name of its __all__ looked up, as ``from name import *`` does): the
# toolkit's packages import their modules on first use (promptcore.plugins.lazy_exports), so importing them is not enough.
PRELOAD = ("torch", "timm", "open_clip", "transformers", "promptcore*", "vpt*", "vpt.clip*", "textpt*", "vlmpt*")

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)[^\n]*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doctest:\s*(?P<body>.*?)\s*-->\s*$")
_COUNT_COMMENT = re.compile(r"#\s*(trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: [\d.]+)")
FOREIGN_BACKBONE_WARNING = "was trained on backbone"  # both of check_prompt_config's warnings say it
# A third-party library's warning line: Python's default warning format (``path.py:12: FutureWarning: ...``), the
# glog-style lines of torch's loggers (``W1207 22:45:14.915000 ...``) and DeepSpeed's (``[2026-...] [WARNING] ...``).
LIBRARY_WARNING = re.compile(r"^(\S+\.py:\d+: \w*Warning: |[WE]\d{4} \d\d:\d\d:\d\d|\[\d{4}-\d\d-\d\d [^]]*\] \[WARNING\])", re.M)
_EXPECT = re.compile(r"^(?P<key>[\w.-]+)\s*(?P<op>>=|<=)\s*(?P<value>[-+0-9.eE]+)$")


@dataclass
class Block:
    name: str  # the file, relative to the repository
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None
    subs: list[tuple[str, str]] = field(default_factory=list)
    expects: list[tuple[str, str, float]] = field(default_factory=list)
    allowed_warnings: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.name}:{self.line}"


def parse_directive(body: str, where: str, block: Block) -> None:
    if body.startswith("skip"):
        reason = body[len("skip") :].strip().strip("()").strip()
        if not reason:
            raise ValueError(f"{where}: 'doctest: skip' needs a reason: <!-- doctest: skip (why) -->")
        block.skip = reason
    elif body.startswith("sub "):
        old, sep, new = body[len("sub ") :].partition(" -> ")
        if not sep or not old:
            raise ValueError(f"{where}: expected <!-- doctest: sub OLD -> NEW -->, found {body!r}")
        block.subs.append((old, new))
    elif body.startswith("library-warning "):
        text, _, reason = body[len("library-warning ") :].partition(" (")
        if not text.strip() or not reason.strip(") "):
            raise ValueError(f"{where}: expected <!-- doctest: library-warning TEXT (why the docs cannot avoid it) -->, found {body!r}")
        block.allowed_warnings.append(text.strip())
    elif body.startswith("expect "):
        m = _EXPECT.match(body[len("expect ") :].strip())
        if not m:
            raise ValueError(f"{where}: expected <!-- doctest: expect KEY >= NUMBER -->, found {body!r}")
        block.expects.append((m["key"], m["op"], float(m["value"])))
    else:
        raise ValueError(f"{where}: unknown doctest directive {body!r} (skip, sub, expect, library-warning)")


def library_noise(block: Block, output: str) -> re.Match | None:
    """The first line of ``output`` that is a third-party library's warning (but one the block allows) or the
    start of a traceback; None when there is none."""
    for match in LIBRARY_WARNING.finditer(output):
        line = output[match.start() : output.find("\n", match.start()) % (len(output) + 1)]
        if not any(text in line for text in block.allowed_warnings):
            return match
    return re.search(r"^Traceback \(most recent call last\)", output, re.M)


def extract_blocks(path: Path, root: Path = ROOT) -> list[Block]:
    """The fenced blocks of a Markdown file with the directives in the comment lines right before each."""
    name = str(path.relative_to(root))
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive:
            pending.append((i + 1, directive["body"]))
            i += 1
            continue
        fence = _FENCE.match(line)
        if not fence:
            if line.strip():
                pending = []  # a directive belongs to the block right after it
            i += 1
            continue
        indent, marker = len(fence["indent"]), fence["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(marker) and lines[j].strip().strip(marker[0]) == ""):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        block = Block(name, i + 1, fence["lang"].lower(), "\n".join(body) + "\n")
        for lineno, text in pending:
            parse_directive(text, f"{name}:{lineno}", block)
        pending = []
        blocks.append(block)
        i = j + 1
    return blocks


def runnable(block: Block) -> bool:
    return block.lang in SHELL | PYTHON


def prepared_code(block: Block) -> str:
    code = block.code
    for old, new in block.subs:
        if old not in code:
            raise AssertionError(f"{block.where}: 'doctest: sub' text {old!r} is not in the block")
        code = code.replace(old, new)
    if block.lang == "console":
        code = "".join(line[2:] + "\n" for line in code.splitlines() if line.startswith("$ "))
    return code


def check_expectations(block: Block, output: str) -> None:
    for key, op, value in block.expects:
        found = re.findall(rf"[\"']{re.escape(key)}[\"']:\s*([-+0-9.eE]+)", output)
        assert found, f"{block.where}: expected the output to report {key!r}; output:\n{output[-3000:]}"
        got = float(found[-1])
        ok = got >= value if op == ">=" else got <= value
        assert ok, f"{block.where}: {key} = {got}, the text claims {op} {value}"
    for claimed in _COUNT_COMMENT.findall(block.code):
        shown = claimed.strip()
        assert shown in output, f"{block.where}: the comment says {shown!r}; the run printed:\n{output[-3000:]}"


# The preloaded interpreter of one doc file: Python blocks arrive as JSON lines on stdin (the reply goes to stdout),
# commands on the Unix socket argv[1] (JSON, with the client's stdin, stdout and stderr as passed descriptors).
_WORKER = r"""
import importlib, json, os, runpy, select, socket, sys, tempfile, traceback
server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])
server.listen(64)
proto = os.fdopen(os.dup(1), "w")


# run() in a forked child with streams ({fd: file descriptor}) as its standard streams, ended as a process's main
# ends; returns the child's exit code. started(pid) is called once the child runs.
def in_child(streams, run, started=lambda pid: None):
    pid = os.fork()
    if pid == 0:
        for target, fd in streams.items():
            os.dup2(fd, target)
        try:
            status = run()
            status = status if isinstance(status, int) else (0 if status is None else 1)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    started(pid)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def run_command(conn):
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 16)
        if not more:
            break
        data += more
    request = json.loads(data)

    def command():
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if "OMP_NUM_THREADS" in os.environ and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        sys.argv = request["argv"]
        if "run_module" in request:  # python -m MODULE
            runpy.run_module(request["run_module"], run_name="__main__", alter_sys=True)
            return 0
        return importlib.import_module(request["main_of"]).main()

    code = in_child(dict(enumerate(fds)), command, lambda pid: conn.sendall(f"{pid}\n".encode()))
    for fd in fds:
        os.close(fd)
    conn.sendall(str(code).encode())


while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    ready, _, _ = select.select([sys.stdin, server], [], [])
    if server in ready:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            run_command(conn)
            os._exit(0)
        conn.close()
        continue
    line = sys.stdin.readline()
    if not line:
        break
    request = json.loads(line)
    with tempfile.TemporaryFile("w+") as log:
        code = in_child({1: log.fileno(), 2: log.fileno()}, lambda: exec(compile(request["code"], request["name"], "exec"), {"__name__": "__main__"}))
        log.seek(0)
        output = log.read()
    proto.write(json.dumps({"ok": code == 0, "output": output}) + "\n")
    proto.flush()
"""


# The process that imports the heavy libraries once per test process (argv[1]: its Unix socket, argv[2:]: the
# modules) and forks the interpreter of each doc file from them: a request (JSON: cwd, env, socket) comes with the
# new interpreter's stdin, stdout and stderr as passed descriptors; the reply is its pid. The forked interpreter
# leads a session of its own (what PythonWorker.close stops) and runs _WORKER; this process reaps it when it ends,
# and ends when the test process that started it is gone.
_PRELOADED = r"""
import json, os, select, signal, socket, sys, traceback


def reap(*_):
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


server = socket.socket(socket.AF_UNIX)
server.bind(sys.argv[1])  # first: a request that comes during the imports waits for them, queued
server.listen(64)
for name in sys.argv[2:]:
    try:
        module = __import__(name.rstrip("*"), fromlist=["__name__"])
        for attr in getattr(module, "__all__", ()) if name.endswith("*") else ():
            getattr(module, attr)
    except Exception:
        pass
signal.signal(signal.SIGCHLD, reap)
parent = os.getppid()
while os.getppid() == parent:
    if not select.select([server], [], [], 1.0)[0]:
        continue
    conn, _ = server.accept()
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while data and not data.endswith(b"\n"):
        data += conn.recv(1 << 16)
    if not data:
        continue
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        server.close()
        conn.close()
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["-c", request["socket"]]
        try:
            exec(compile(request["worker"], "<doc worker>", "exec"), {"__name__": "__main__"})
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(0)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    conn.close()
"""


class Preloaded:
    """The process of :data:`_PRELOADED` for one set of modules, started on first use and kept for the test process
    (a doc file's interpreter is forked from it instead of importing torch, timm, transformers ... again)."""

    _started: dict[tuple[str, ...], "Preloaded"] = {}

    def __init__(self, preload: tuple[str, ...], env: dict[str, str]) -> None:
        self.socket = Path(f"/tmp/doc-preloaded-{os.getpid()}-{len(self._started)}.sock")
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PRELOADED, str(self.socket), *preload], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        atexit.register(self.stop)

    @classmethod
    def get(cls, preload: tuple[str, ...], env: dict[str, str]) -> "Preloaded":
        if preload not in cls._started or cls._started[preload].proc.poll() is not None:
            cls._started[preload] = cls(preload, env)
        return cls._started[preload]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.socket.unlink(missing_ok=True)

    def fork(self, cwd: Path, env: dict[str, str], socket_path: Path, stdin: int, stdout: int, stderr: int) -> int:
        """Starts a doc file's interpreter (:data:`_WORKER`) with these standard streams; returns its pid."""
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(BLOCK_TIMEOUT_S)
        with client:
            deadline = time.monotonic() + BLOCK_TIMEOUT_S
            while True:  # it listens before its imports start
                try:
                    client.connect(str(self.socket))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    assert self.proc.poll() is None and time.monotonic() < deadline, "the preloaded interpreter did not start"
                    time.sleep(0.05)
            data = json.dumps({"cwd": str(cwd), "env": env, "socket": str(socket_path), "worker": _WORKER}).encode() + b"\n"
            sent = socket.send_fds(client, [data], [stdin, stdout, stderr])
            if sent < len(data):  # not after a whole send: it may have answered and closed already
                client.sendall(data[sent:])
            reply = b""
            while not reply.endswith(b"\n"):
                more = client.recv(64)
                assert more, "the preloaded interpreter did not start a doc interpreter"
                reply += more
        return int(reply)


# The client that stands in for a command on PATH: {python}, {socket}, {module} (the console script's module; None
# for python itself, served only as `python -m <a module of the project>`) and {real} (the real command) are filled in.
_CLIENT = """#!{python} -S
import json, os, signal, socket, sys
args, module = sys.argv[1:], {module!r}
if module is not None:
    request = {{"main_of": module, "argv": [{real!r}, *args]}}
elif len(args) >= 2 and args[0] == "-m" and args[1].split(".")[0] in ("promptcore", "vpt", "textpt", "vlmpt"):
    request = {{"run_module": args[1], "argv": [args[1], *args[2:]]}}
else:
    request = None
if request is None or "LOCAL_RANK" in os.environ or not os.path.exists({socket!r}):  # e.g. a launcher's process
    os.execv({real!r}, [{real!r}, *args])
request.update(cwd=os.getcwd(), env=dict(os.environ))
client = socket.socket(socket.AF_UNIX)
client.connect({socket!r})
data = json.dumps(request).encode() + b"\\n"
sent = socket.send_fds(client, [data], [0, 1, 2])
client.sendall(data[sent:])
# The reply: the command's pid, a line, then its exit status. A signal to this client (`kill $(cat server.pid)`) goes
# to the command, as it would to the real one.
reply = b""
while b"\\n" not in reply and (more := client.recv(64)):
    reply += more
pid, _, reply = reply.partition(b"\\n")
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda sig, _: os.kill(int(pid), sig))
while more := client.recv(64):
    reply += more
sys.exit(int(reply) if reply else 1)
"""
COMMANDS = {"vpt": "vpt.cli", "textpt": "textpt.cli", "vlmpt": "vlmpt.cli", "python": None}  # served by the preloaded interpreter


class PythonWorker:
    """One interpreter per doc file, with the heavy libraries imported (forked from :class:`Preloaded`), that runs
    each Python block, and each ``vpt`` / ``textpt`` / ``vlmpt`` / ``python -m <project module>`` command of a shell
    block, in a forked child: every block starts from the same clean state (no global settings, registrations or
    names left by an earlier block), as a fresh process would.

    ``bin`` is a folder of clients, one per command of :data:`COMMANDS`, to put first on PATH.
    """

    def __init__(self, cwd: Path, env: dict[str, str], log: Path, preload: tuple[str, ...] = PRELOAD) -> None:
        self._log_path = log
        self._log = log.open("w")
        self.socket = Path(f"/tmp/doc-worker-{os.getpid()}-{id(self)}.sock")  # short: socket paths are limited
        self.bin = cwd / ".doc-bin"
        self.bin.mkdir(exist_ok=True)
        for command, module in COMMANDS.items():
            client = self.bin / command
            real = sys.executable if module is None else str(Path(sys.executable).with_name(command))
            client.write_text(_CLIENT.format(python=sys.executable, socket=str(self.socket), module=module, real=real))
            client.chmod(0o755)
        # Its own process group: what a block leaves running (a server started with `&` runs in a forked child of
        # this worker) ends with the doc file, also when a block fails before the doc stops it.
        stdin, to_worker = os.pipe()
        from_worker, stdout = os.pipe()
        try:
            self.pid = Preloaded.get(preload, env).fork(cwd, env, self.socket, stdin, stdout, self._log.fileno())
        finally:
            os.close(stdin)
            os.close(stdout)
        self.stdin, self.stdout = os.fdopen(to_worker, "w"), os.fdopen(from_worker)
        # The interpreter binds its socket as it starts; until it has, a client would run the real command, which an
        # environment installed before a command was added does not have (a bounded wait).
        deadline = time.monotonic() + 60
        while not self.socket.exists() and psutil.pid_exists(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def run(self, code: str, name: str) -> tuple[bool, str]:
        self.stdin.write(json.dumps({"code": code, "name": name}) + "\n")
        self.stdin.flush()
        ready, _, _ = select.select([self.stdout], [], [], BLOCK_TIMEOUT_S)
        line = self.stdout.readline() if ready else ""
        if not line:
            self.close()
            log = self._log_path.read_text(errors="replace")[-3000:]
            return False, f"the block did not finish within {BLOCK_TIMEOUT_S} s or the interpreter died\n{log}"
        reply = json.loads(line)
        return reply["ok"], reply["output"]

    def close(self) -> None:
        """Stops the worker, every process of its group and every process it started: SIGTERM (a server drains and
        stops), SIGKILL after ``GRACE_S`` for what is left. A process that made a group of its own (``ray.init``
        does, for its cluster) is reached through the process tree, taken before anything is stopped."""
        group = self.pid
        try:
            descendants = [psutil.Process(group), *psutil.Process(group).children(recursive=True)]
        except psutil.NoSuchProcess:
            descendants = []
        for sig, grace in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
            for child in descendants:
                try:
                    child.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and (_group_alive(group) or any(map(_running, descendants))):
                time.sleep(0.1)
        self.stdin.close()
        self.stdout.close()
        self._log.close()
        self.socket.unlink(missing_ok=True)


GRACE_S = 15.0


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def doc_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["MPLBACKEND"] = "Agg"
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[key] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_doc(path: Path, tmp: Path, root: Path = ROOT, preload: tuple[str, ...] = PRELOAD) -> None:
    for entry in root.iterdir():
        if entry.name in ("configs", "demo", "bench", "docs") and not (tmp / entry.name).exists():
            (tmp / entry.name).symlink_to(entry)
    env = doc_env(tmp)
    worker: PythonWorker | None = None
    try:
        for block in extract_blocks(path, root):
            if not runnable(block) or block.skip:
                continue
            code = prepared_code(block)
            worker = worker or PythonWorker(tmp, env, tmp / ".python-worker.log", preload)
            if block.lang in PYTHON:
                ok, output = worker.run(code, block.where)
            else:
                try:
                    done = subprocess.run(
                        ["bash", "-euo", "pipefail", "-c", code], cwd=tmp, env={**env, "PATH": f"{worker.bin}{os.pathsep}{env['PATH']}"}, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT_S,
                    )
                    ok, output = done.returncode == 0, done.stdout
                except subprocess.TimeoutExpired as e:
                    ok, output = False, f"timed out after {BLOCK_TIMEOUT_S} s\n{e.stdout or ''}"
            assert ok, f"{block.where}: the {block.lang} block failed:\n{code}\n--- output ---\n{output[-6000:]}"
            assert FOREIGN_BACKBONE_WARNING not in output, (
                f"{block.where}: prompts met a backbone other than the one they were trained on:\n{code}\n--- output ---\n{output[-6000:]}"
            )
            noise = library_noise(block, output)
            assert noise is None, f"{block.where}: {noise.group(0)!r}: a library's warning or a traceback reached the output:\n{code}\n--- output ---\n{output[-6000:]}"
            check_expectations(block, output)
    finally:
        if worker is not None:
            worker.close()


# Docs whose examples another test runs (with run_doc) and checks further, so they do not run twice: file -> test.
RUN_BY = {"docs/serving_demo.md": "tests/test_serving_demo.py"}


@pytest.mark.parametrize("path", [p for p in DOC_FILES if str(p.relative_to(ROOT)) not in RUN_BY], ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.slow
def test_doc_examples_run(path: Path, tmp_path: Path) -> None:
    run_doc(path, tmp_path)


@pytest.mark.parametrize("doc, test", sorted(RUN_BY.items()))
def test_docs_left_to_another_test_are_run_by_it(doc: str, test: str) -> None:
    assert (ROOT / doc).is_file() and f'"{Path(doc).name}"' in (ROOT / test).read_text() and "run_doc(" in (ROOT / test).read_text()


def test_every_skip_states_its_reason_and_skips_stay_rare() -> None:
    blocks = [b for p in DOC_FILES for b in extract_blocks(p) if runnable(b)]
    skipped = [b for b in blocks if b.skip]
    assert all(b.skip for b in skipped)
    assert len(skipped) <= len(blocks) // 4, [f"{b.where}: {b.skip}" for b in skipped]


def test_harness_parses_directives_and_fails_a_failing_block(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n<!-- doctest: sub hf:big -> random:tiny -->\n<!-- doctest: expect accuracy >= 0.5 -->\n"
        "```bash\necho '{\"accuracy\": 0.75}' hf:big\n```\n\n<!-- doctest: skip (needs a GPU) -->\n```python\n"
        "import cuda_only\n```\n\n```text\nnot run\n```\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(doc, tmp_path)
    assert [b.lang for b in blocks] == ["bash", "python", "text"]
    assert blocks[0].subs == [("hf:big", "random:tiny")] and blocks[1].skip == "needs a GPU"
    assert "random:tiny" in prepared_code(blocks[0])
    check_expectations(blocks[0], '{"accuracy": 0.75}')
    check_expectations(blocks[0], "{'accuracy': 0.75}")
    with pytest.raises(AssertionError, match="the text claims"):
        check_expectations(blocks[0], '{"accuracy": 0.25}')
    with pytest.raises(AssertionError, match="failed"):
        _run_outside(tmp_path, "```bash\nfalse\n```\n")
    with pytest.raises(AssertionError, match="failed"):
        _run_outside(tmp_path, "```python\nraise SystemExit(3)\n```\n")
    _run_outside(tmp_path, "```python\nx = 1\n```\n\n```python\nassert 'x' not in globals()\n```\n")
    _run_outside(tmp_path, "```python\nimport os\nos.environ['DOC_X'] = '1'\n```\n\n"
                           "```python\nimport os\nassert 'DOC_X' not in os.environ\n```\n")
    with pytest.raises(AssertionError, match="the comment says"):
        _run_outside(tmp_path, "```python\nprint('trainable params: 1 || all params: 2 || trainable%: 50.0')"
                               "  # trainable params: 1 || all params: 3 || trainable%: 33.3\n```\n")
    with pytest.raises(AssertionError, match="other than the one they were trained on"):
        _run_outside(tmp_path, "```python\nimport warnings\nwarnings.warn('prompt folder p was trained on backbone x')\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        _run_outside(tmp_path, "<!-- doctest: skip -->\n```bash\ntrue\n```\n")
    note = "echo 'W1207 23:09:45.971000 1 torch/utils/_pytree.py:630] a note'"
    with pytest.raises(AssertionError, match="a library's warning or a traceback"):
        _run_outside(tmp_path, f"```bash\n{note}\n```\n")
    with pytest.raises(AssertionError, match="a library's warning or a traceback"):
        _run_outside(tmp_path, "```bash\necho '/x/lib.py:3: FutureWarning: old' 1>&2\n```\n")
    with pytest.raises(AssertionError, match="a library's warning or a traceback"):
        _run_outside(tmp_path, "```python\nimport traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    traceback.print_exc()\n```\n")
    _run_outside(tmp_path, f"<!-- doctest: library-warning a note (said in the text) -->\n```bash\n{note}\n```\n")
    with pytest.raises(ValueError, match="library-warning TEXT"):
        _run_outside(tmp_path, "<!-- doctest: library-warning a note -->\n```bash\ntrue\n```\n")


def _run_outside(tmp: Path, text: str) -> None:
    doc = tmp / "case.md"
    doc.write_text(text, encoding="utf-8")
    work = tmp / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    run_doc(doc, work, root=tmp, preload=())


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    dead = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        resolved = (path.parent / target.split("#")[0]).resolve()
        if not resolved.exists():
            dead.append(target)
    assert not dead, f"{path.relative_to(ROOT)}: dead links {dead}"
