"""Code contexts of a CodeBox: a long-lived python3 in the box (the driver, _code_driver.py) whose
variables, imports and working directory last from cell to cell, with Jupyter-style rich results.
The same protocol as @boxlite/simple's CodeContext; see docs/code-interpreter.md."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ._native import BOXLITE_STDERR, BOXLITE_STDOUT
from .errors import InvalidArgumentError, InvalidStateError, NotFoundError

if TYPE_CHECKING:
    from ._aio import Box, Execution

CODE_OUTPUT_LIMIT = 1 << 20
"""Bytes of stdout (and of stderr) kept per cell; past it output is dropped and a marker says so."""
_RESULTS_LIMIT = 16 << 20  # bytes of all results of one cell (a chart is ~20-100 KiB of base64)
_LINE_LIMIT = _RESULTS_LIMIT + (1 << 20)  # the longest message accepted; a longer one ends the context
_INTERRUPT_GRACE = 3.0  # seconds an interrupted cell has to end before its interpreter is killed
def _driver(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


# How each language's driver is started; JavaScript's messages come on its fd 3 (see the driver).
_DRIVERS = {
    "python": ["python3", "-u", "-c", _driver("_code_driver.py")],
    "javascript": ["sh", "-c", 'exec node -e "$0" 3>&1 1>&2', _driver("_code_driver.js")],
}


@dataclass
class CodeResult:
    """A result of a cell as Jupyter's display data: MIME type -> content (`text/plain`,
    `text/html`, `application/json`, `image/png` as base64, ...)."""

    data: Dict[str, str]
    is_main_result: bool
    """The value of the cell's last expression (True), or a display()ed value or figure (False)."""

    @property
    def text(self) -> Optional[str]:
        return self.data.get("text/plain")


@dataclass
class CodeError:
    """The exception a cell raised; `name` is `ContextDied` when the interpreter ended."""

    name: str
    value: str
    traceback: str


@dataclass
class CodeExecution:
    """What running a cell gave. A cell that raises is a result with `error`, not an exception."""

    results: List[CodeResult] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    error: Optional[CodeError] = None
    timed_out: bool = False
    """The cell ran past its timeout and was interrupted (`error` is its KeyboardInterrupt)."""


PIP_ENV = {"PIP_BREAK_SYSTEM_PACKAGES": "1", "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
"""install_packages' environment: in a box, pip may install over a distribution's python (PEP 668)."""

OutputCallback = Optional[Callable[[str], Any]]


class _Cell:
    """One running cell: the driver's messages, checked one by one (the box is not trusted)."""

    def __init__(self, cell_id: str, on_stdout: OutputCallback, on_stderr: OutputCallback):
        self.id = cell_id
        self.execution = CodeExecution()
        self.sizes = {"stdout": 0, "stderr": 0, "results": 0}
        self.callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self.done = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def handle(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("id") != self.id:
            return
        kind = message.get("type")
        if kind in ("stdout", "stderr") and isinstance(message.get("text"), str):
            self.output(kind, message["text"])
        elif kind == "result":
            data = message.get("data")
            if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                return
            size = sum(len(v) for v in data.values())
            if self.sizes["results"] + size > _RESULTS_LIMIT:
                self.output("stderr", f"[a result of {size} bytes was dropped: results of one cell are limited to {_RESULTS_LIMIT} bytes]\n")
                return
            self.sizes["results"] += size
            self.execution.results.append(CodeResult(dict(data), message.get("main") == 1))
        elif kind == "error":
            lines = message.get("traceback")
            self.execution.error = CodeError(
                str(message.get("name") or "Error"), str(message.get("value") or ""),
                "".join(line for line in lines if isinstance(line, str)) if isinstance(lines, list) else "")
        elif kind == "done":
            self.finish()

    def output(self, stream: str, text: str) -> None:
        # The driver truncates already; this bound holds whatever the box sends.
        room = CODE_OUTPUT_LIMIT + 4096 - self.sizes[stream]
        if room <= 0:
            return
        text = text[:room]
        self.sizes[stream] += len(text)
        setattr(self.execution, stream, getattr(self.execution, stream) + text)
        callback = self.callbacks[stream]
        if callback is not None:
            try:
                callback(text)
            except Exception:
                pass  # a failing callback must not stop this cell's messages


class CodeContext:
    """An interpreter in the box whose state lasts from cell to cell (CodeBox.create_context)."""

    def __init__(self, context_id: str, language: str, cwd: Optional[str], execution: "Execution"):
        self.id = context_id
        self.language = language
        self.cwd = cwd
        self.died: Optional[str] = None
        """Why the context's interpreter ended, or None while it runs."""
        self._execution = execution
        self._cell: Optional[_Cell] = None
        self._cells = 0
        self._lock = asyncio.Lock()
        self._ready = asyncio.get_running_loop().create_future()
        self._stderr_tail = ""
        self._pump_task = asyncio.ensure_future(self._pump())

    @classmethod
    async def _start(cls, box: "Box", context_id: str, language: str, cwd: Optional[str],
                     env: Optional[Dict[str, str]]) -> "CodeContext":
        if language not in _DRIVERS:
            raise InvalidArgumentError("INVALID_ARGUMENT", f"create_context: language must be 'python' or 'javascript', got {language!r}")
        env = {**(env or {}), "BOXLITE_CODE_OUTPUT_LIMIT": str(CODE_OUTPUT_LIMIT)}
        program, *args = _DRIVERS[language]
        execution = await box.exec(program, *args, env=env, cwd=cwd)
        context = cls(context_id, language, cwd, execution)
        await context._ready
        return context

    async def _run(self, code: str, timeout: Optional[float], on_stdout: OutputCallback,
                   on_stderr: OutputCallback) -> CodeExecution:
        async with self._lock:  # the cells of one context run one after another
            if self.died is not None:
                raise InvalidStateError("INVALID_STATE", f"context {self.id} has ended ({self.died}): create a new one with create_context()")
            self._cells += 1
            cell = self._cell = _Cell(str(self._cells), on_stdout, on_stderr)
            loop = asyncio.get_running_loop()
            timers: List[asyncio.TimerHandle] = []

            def interrupt() -> None:
                cell.execution.timed_out = True
                if self.language == "javascript":  # a looping cell keeps node from reading its stdin
                    asyncio.ensure_future(self._signal(2))
                else:
                    asyncio.ensure_future(self._send({"type": "interrupt", "id": cell.id}))
                # An interpreter stuck where KeyboardInterrupt cannot reach (C code, SIGINT ignored).
                timers.append(loop.call_later(_INTERRUPT_GRACE, lambda: asyncio.ensure_future(self._kill())))

            if timeout is not None:
                timers.append(loop.call_later(timeout, interrupt))
            try:
                await self._send({"type": "run", "id": cell.id, "code": code})
                await cell.done
            finally:
                for timer in timers:
                    timer.cancel()
                self._cell = None
            return cell.execution

    async def _close(self) -> None:
        if self.died is None:
            self.died = "the context was removed"
        await self._kill()

    async def _kill(self) -> None:
        await self._signal(9)

    async def _signal(self, signal: int) -> None:
        try:
            await self._execution.kill(signal)
        except Exception:
            pass  # it has ended already

    async def _send(self, request: Dict[str, str]) -> None:
        # Strings only, so that the driver can parse the line as a Python literal.
        try:
            await self._execution.stdin().write(json.dumps(request) + "\n")
        except Exception:
            if self.died is None:
                raise

    async def _pump(self) -> None:
        """Reads the driver's messages until its stdout ends."""
        execution = self._execution
        execution._state.take(BOXLITE_STDOUT)
        execution._state.take(BOXLITE_STDERR)
        out, err = (execution._state.handle.streams[s] for s in (BOXLITE_STDOUT, BOXLITE_STDERR))
        pending = ""
        try:
            while True:
                pending += out.decoder.decode(out.take(), out.ended)
                self._stderr_tail = (self._stderr_tail + err.decoder.decode(err.take(), err.ended))[-2000:]
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._handle(line)
                if len(pending) > _LINE_LIMIT:
                    raise ValueError(f"the interpreter sent a message longer than {_LINE_LIMIT} bytes")
                if execution._state.handle.done():
                    break
                await execution._step()
            code = execution._state.handle.result[0] if execution._state.handle.result else -1
            tail = " | ".join(self._stderr_tail.strip().splitlines()[-3:])
            self._end(f"its interpreter exited with code {code}" + (f": {tail}" if tail else ""))
        except Exception as e:  # a broken message stream: the context cannot go on
            self._end(str(e))
            await self._kill()

    def _handle(self, line: str) -> None:
        if not self._ready.done():
            if line.startswith('{"type":"ready"'):
                self._ready.set_result(None)
            return
        if self._cell is None:
            return
        try:
            message = json.loads(line)
        except ValueError:
            return
        self._cell.handle(message)

    def _end(self, reason: str) -> None:
        if self.died is None:
            self.died = reason
        if not self._ready.done():
            self._ready.set_exception(InvalidStateError("INVALID_STATE", f"the context's interpreter did not start: {self.died}"))
        cell = self._cell
        if cell is not None:
            cell.execution.error = CodeError(
                "ContextDied", f"the context ended while the cell ran ({self.died}): create a new one with create_context()", "")
            cell.finish()

    def __repr__(self) -> str:
        return f"CodeContext(id={self.id!r}, language={self.language!r})"


class CodeContexts:
    """The contexts of one CodeBox, and its default context (made on first use, and again when
    its interpreter died)."""

    def __init__(self) -> None:
        self._contexts: Dict[str, CodeContext] = {}
        self._default: Optional[CodeContext] = None
        self._default_lock: Optional[asyncio.Lock] = None

    async def create(self, box: "Box", language: str, cwd: Optional[str], env: Optional[Dict[str, str]]) -> CodeContext:
        context = await CodeContext._start(box, str(uuid.uuid4()), language, cwd, env)
        self._contexts[context.id] = context
        return context

    def list(self) -> List[CodeContext]:
        return list(self._contexts.values())

    async def remove(self, context: "CodeContext | str") -> None:
        found = self.find(context)
        del self._contexts[found.id]
        await found._close()

    def find(self, context: "CodeContext | str") -> CodeContext:
        context_id = context if isinstance(context, str) else context.id
        found = self._contexts.get(context_id)
        if found is None:
            raise NotFoundError("NOT_FOUND", f"no context {context_id} in this CodeBox (removed, or never made here): create one with create_context()")
        return found

    async def run(self, box: "Box", code: str, context: "CodeContext | str | None", timeout: Optional[float],
                  on_stdout: OutputCallback, on_stderr: OutputCallback) -> CodeExecution:
        if not isinstance(code, str):
            raise InvalidArgumentError("INVALID_ARGUMENT", f"run_code: code must be a str, got {type(code).__name__}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidArgumentError("INVALID_ARGUMENT", f"run_code: timeout must be a positive number of seconds, got {timeout!r}")
        target = await self._default_context(box) if context is None else self.find(context)
        return await target._run(code, timeout, on_stdout, on_stderr)

    async def _default_context(self, box: "Box") -> CodeContext:
        if self._default_lock is None:
            self._default_lock = asyncio.Lock()
        async with self._default_lock:
            if self._default is None or self._default.died is not None:
                self._default = await CodeContext._start(box, "default", "python", None, None)
            return self._default

    async def close(self) -> None:
        """Before the box ends: the contexts stop reading (their interpreters end with the box)."""
        contexts = [*self._contexts.values(), *([self._default] if self._default else [])]
        for context in contexts:
            if context.died is None:
                context.died = "the box was shut down"
            context._pump_task.cancel()
        await asyncio.gather(*(c._pump_task for c in contexts), return_exceptions=True)
        self._contexts.clear()
        self._default = None
