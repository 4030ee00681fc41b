"""Assert-style tests judged on the trusted side of the code sandbox.

The test code never runs in the sandboxed process, and the program never runs in the judge. The
sandboxed process (`serve`) executes the program and answers calls; the judge (`judge`, in the
sandbox's supervisor, outside the sandbox's namespaces and uid) executes the test statements in a
namespace where each function the program defined is a `Stub` that calls it over a pipe. Only
plain builtin values cross (exact types: a subclass of int with a rigged `__eq__` is refused), so
every comparison in an assert runs on trusted objects. What the program does in its own process -
print pass lines, walk frames, patch the harness, exit early with status 0 - cannot move the count,
which the judge alone reports. Standard library only (imported as a sibling by the child).

Limits of the protocol: values other than None/bool/int/float/complex/str/bytes and lists, tuples,
sets, frozensets and dicts of them do not cross (generators, map/filter/zip results become
lists); callables cannot be passed except the program's own functions (a test that passes a
lambda fails); a program's classes can be called only if the result is such a value; in-place
mutation of list/dict/set arguments is copied back; the test code cannot assign the program's
globals.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import os
import select
import struct
import time
import types

MAX_DEPTH = 100
_ITERATORS = (types.GeneratorType, map, filter, zip)
# Modules the program imported that the judge imports too (tests such as MBPP's often use the
# program's `import math`): side-effect-free ones only, since the program names them.
_IMPORTABLE = frozenset(
    "array bisect cmath collections copy datetime decimal enum fractions functools hashlib heapq "
    "itertools json math numbers operator random re statistics string sys time typing".split()
)


class Stub:
    """The judge's stand-in for a function defined by the program."""

    def __init__(self, name: str, channel: Channel):
        self.name, self.__name__, self._channel = name, name, channel

    def __call__(self, *args, **kwargs):
        return self._channel.call(self.name, args, kwargs)

    def __repr__(self):
        return f"<sandboxed {self.name}>"


def encode(x, depth: int = 0):
    """Plain builtin value -> JSON-able tree; anything else raises TypeError."""
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if depth > MAX_DEPTH:
        raise TypeError("value nested too deeply")
    sub = depth + 1
    if t is list:
        return ["L", [encode(v, sub) for v in x]]
    if t is tuple:
        return ["T", [encode(v, sub) for v in x]]
    if t is set or t is frozenset:
        return ["S" if t is set else "F", [encode(v, sub) for v in x]]
    if t is dict:
        return ["D", [[encode(k, sub), encode(v, sub)] for k, v in x.items()]]
    if t is bytes:
        return ["B", x.hex()]
    if t is complex:
        return ["C", x.real, x.imag]
    if t is Stub:
        return ["R", x.name]
    raise TypeError(f"a {t.__name__} cannot cross the sandbox boundary")


def decode(x, refs=None, depth: int = 0):
    """Inverse of `encode`, building only builtin objects; ["R", name] -> refs[name] if given."""
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is not list or len(x) < 2 or depth > MAX_DEPTH:
        raise TypeError("malformed value from the sandbox")
    tag, body, sub = x[0], x[1], depth + 1
    if tag in ("L", "T", "S", "F"):
        items = [decode(v, refs, sub) for v in body]
        return {"L": list, "T": tuple, "S": set, "F": frozenset}[tag](items)
    if tag == "D":
        return {decode(k, refs, sub): decode(v, refs, sub) for k, v in body}
    if tag == "B":
        return bytes.fromhex(body)
    if tag == "C" and len(x) == 3:
        return complex(float(x[1]), float(x[2]))
    if tag == "R" and refs is not None and callable(refs.get(body)):
        return refs[body]
    raise TypeError("malformed value from the sandbox")


def send(fd: int, msg) -> None:
    data = json.dumps(msg).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def recv(fd: int, deadline: float | None, max_bytes: int):
    """One message, or None on EOF, timeout or an oversized/garbled message."""

    def read(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = read(4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = read(n) if n <= max_bytes else None
    try:
        return None if body is None else json.loads(body)
    except (ValueError, RecursionError):
        return None


# ------------------------------------------------------------------ inside the sandbox (untrusted)


def _materialize(x):
    return list(x) if isinstance(x, _ITERATORS) else x


def serve(fd: int, program: str, max_bytes: int) -> None:
    """Run `program`, send what it defined, then answer calls until the judge hangs up."""
    ns = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(program, "<solution>", "exec"), ns)
    except BaseException as e:  # noqa: BLE001 - SystemExit included: the tests then all fail
        send(fd, ["dead", type(e).__name__])
        return
    manifest = {}
    for name, value in ns.items():
        if name.startswith("__"):
            continue
        if isinstance(value, types.ModuleType):
            manifest[name] = ["mod", value.__name__]
        elif callable(value):
            manifest[name] = ["fn"]
        else:
            try:
                manifest[name] = ["val", encode(value)]
            except TypeError:
                pass
    send(fd, ["ready", manifest])
    while (msg := recv(fd, None, max_bytes)) is not None:
        try:
            args = [decode(a, ns) for a in msg[2]]
            kwargs = {k: decode(v, ns) for k, v in msg[3].items()}
            out = encode(_materialize(ns[msg[1]](*args, **kwargs)))
            back = []
            for a in args:
                try:
                    back.append(encode(a) if type(a) in (list, dict, set) else None)
                except TypeError:
                    back.append(None)
            reply = ["ok", out, back]
        except BaseException as e:  # noqa: BLE001 - the judge turns it into a failed call
            reply = ["raise", type(e).__name__]
        send(fd, reply)


# --------------------------------------------------------------------- the judge (trusted side)


class Channel:
    def __init__(self, fd: int, deadline: float, max_bytes: int):
        self.fd, self.deadline, self.max_bytes = fd, deadline, max_bytes
        self.alive, self.errors = True, {"MemoryError": 0}

    def call(self, name: str, args: tuple, kwargs: dict):
        if not self.alive:
            raise RuntimeError("the sandboxed program is gone")
        msg = ["call", name, [encode(a) for a in args], {k: encode(v) for k, v in kwargs.items()}]
        try:
            send(self.fd, msg)
        except OSError:
            self.alive = False
            raise RuntimeError("the sandboxed program is gone") from None
        reply = recv(self.fd, self.deadline, self.max_bytes)
        if not isinstance(reply, list) or not reply:
            self.alive = False  # died, timed out or garbled: later calls fail fast
            raise RuntimeError("no answer from the sandboxed program")
        if reply[0] == "ok" and len(reply) == 3:
            for a, new in zip(args, reply[2]):
                if new is not None and type(a) in (list, dict, set):
                    new = decode(new)
                    if type(new) is type(a):  # the program mutated its argument in place
                        a.clear()
                        (a.extend if type(a) is list else a.update)(new)
            return decode(reply[1])
        name = reply[1] if len(reply) > 1 and isinstance(reply[1], str) else "Exception"
        if name in self.errors:
            self.errors[name] += 1
        exc = getattr(builtins, name, None)
        if isinstance(exc, type) and issubclass(exc, Exception):
            raise exc(f"raised in the sandboxed program: {name}")
        raise RuntimeError(f"raised in the sandboxed program: {name}")


def _namespace(manifest, channel: Channel) -> dict:
    ns = {"__name__": "__tests__", "__builtins__": builtins}
    if not isinstance(manifest, dict):
        return ns
    for name, entry in manifest.items():
        if not isinstance(entry, list) or not entry or not isinstance(name, str):
            continue
        try:
            if entry[0] == "fn":
                ns[name] = Stub(name, channel)
            elif entry[0] == "val":
                ns[name] = decode(entry[1])
            elif entry[0] == "mod" and entry[1] in _IMPORTABLE:
                ns[name] = importlib.import_module(entry[1])
        except (TypeError, ValueError, ImportError):
            pass
    return ns


def count_tests(stmts) -> int:
    return sum(isinstance(s, (ast.Assert, ast.Expr)) for s in stmts)


def judge(fd: int, test_code: str, deadline: float, max_bytes: int) -> dict:
    """Run the test statements against the program behind `fd`: each top-level assert or bare
    expression is one test; a failed setup statement fails the tests after it; test code without
    tests passes if it runs through. Returns {"passed": n, "memory_errors": n}."""
    channel = Channel(fd, deadline, max_bytes)
    first = recv(fd, deadline, max_bytes)
    if not isinstance(first, list) or len(first) != 2 or first[0] != "ready":
        return {"passed": 0, "memory_errors": int(first == ["dead", "MemoryError"])}
    ns = _namespace(first[1], channel)
    stmts = ast.parse(test_code).body
    passed = 0
    for stmt in stmts:
        if time.monotonic() >= deadline:
            break
        try:
            exec(compile(ast.Module([stmt], []), "<tests>", "exec"), ns)
            ok = True
        except Exception:
            ok = False
        if isinstance(stmt, (ast.Assert, ast.Expr)):
            passed += ok
        elif not ok:
            break
    else:
        passed += not count_tests(stmts)
    return {"passed": passed, "memory_errors": channel.errors["MemoryError"]}
