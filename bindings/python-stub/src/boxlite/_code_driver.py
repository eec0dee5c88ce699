"""The in-box side of a CodeBox context: one long-lived python3 that runs cells in one namespace.

Started by the host SDKs (`@boxlite/simple` and this package) as `python3 -u -c <this file>`; it
needs only the standard library, and only the parts that Debian's python3-minimal has (no json,
no queue). Protocol, one message per line:
  host -> driver (stdin):  {"type": "run", "id": "7", "code": "..."} | {"type": "interrupt", "id": "7"}
                           (Python literals: strings and dicts only)
  driver -> host (the exec's stdout, kept as a private fd): JSON objects
    {"type": "ready"}                                   once, when the context can take cells
    {"type": "stdout" | "stderr", "id", "text"}         output of the running cell, as it comes
    {"type": "result", "id", "data": {mime: str}, "main": 0|1}
    {"type": "error", "id", "name", "value", "traceback": [str]}
    {"type": "done", "id"}                              the cell ended (after all of the above)
The cell's fds 1 and 2 are pipes read here, so output of subprocesses and C code is captured too.
"""

import ast
import base64
import builtins
import codecs
import linecache
import os
import signal
import sys
import threading
import traceback

OUTPUT_LIMIT = int(os.environ.pop("BOXLITE_CODE_OUTPUT_LIMIT", str(1 << 20)))


def _encode(value):
    """JSON text of str, int, list and dict values (the json module is not in python3-minimal)."""
    if isinstance(value, str):
        out = ['"']
        for ch in value:
            if ch == '"' or ch == "\\":
                out.append("\\" + ch)
            elif ch < " " or "\ud800" <= ch <= "\udfff":
                out.append("\\u%04x" % ord(ch))
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(_encode(str(k)) + ":" + _encode(v) for k, v in value.items()) + "}"
    return _encode(str(value))


_protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace")
_protocol_lock = threading.Lock()


def _send(**message):
    line = _encode(message) + "\n"
    with _protocol_lock:
        _protocol.write(line)
        _protocol.flush()


class _Capture:
    """Points fd `fd` at a pipe and forwards what is written to it as events of the running cell."""

    def __init__(self, fd, name):
        self.name = name
        self.cell = None
        self.sent = 0
        self.dropped = 0
        self.synced = threading.Event()
        self.marker = b""
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.read_end = read_end
        threading.Thread(target=self._pump, daemon=True).start()

    def start(self, cell):
        self.cell, self.sent, self.dropped = cell, 0, 0

    def sync(self, fd):
        """Waits until everything written to `fd` before now has been forwarded."""
        self.marker = b"\0boxlite-sync-" + os.urandom(8).hex().encode() + b"\0"
        self.synced.clear()
        os.write(fd, self.marker)
        self.synced.wait()

    def finish(self):
        """Says how much output past the limit was dropped, if any."""
        if self.dropped:
            note = "\n[output truncated: %d more bytes of %s were dropped]\n" % (self.dropped, self.name)
            _send(type=self.name, id=self.cell, text=note)

    def _pump(self):
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = b""
        while True:
            chunk = os.read(self.read_end, 65536)
            if not chunk:
                return
            pending += chunk
            marker = self.marker
            at = pending.find(marker) if marker else -1
            if at >= 0:
                self._forward(decoder, pending[:at], final=True)
                pending = pending[at + len(marker):]
                self.marker = b""
                self.synced.set()
            # Keeps a tail that may be the start of a marker split across reads.
            keep = len(marker) - 1 if self.marker else 0
            cut = max(0, len(pending) - keep)
            self._forward(decoder, pending[:cut], final=False)
            pending = pending[cut:]

    def _forward(self, decoder, data, final):
        if self.cell is None:
            return
        room = OUTPUT_LIMIT - self.sent
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[:max(room, 0)]
        self.sent += len(data)
        text = decoder.decode(data, final)
        if text:
            _send(type=self.name, id=self.cell, text=text)


def _bundle(obj):
    """The MIME bundle of `obj`, from its IPython-style `_repr_*_` methods."""
    data = {}
    mimebundle = getattr(obj, "_repr_mimebundle_", None)
    if callable(mimebundle):
        try:
            got = mimebundle()
            if isinstance(got, tuple):
                got = got[0]
            for mime, value in (got or {}).items():
                data[mime] = _as_text(mime, value)
        except Exception:
            pass
    for method, mime in (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
                         ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png"),
                         ("_repr_jpeg_", "image/jpeg"), ("_repr_latex_", "text/latex"),
                         ("_repr_json_", "application/json")):
        fn = getattr(obj, method, None)
        if mime in data or not callable(fn):
            continue
        try:
            value = fn()
        except Exception:
            continue
        if value is not None:
            data[mime] = _as_text(mime, value)
    if _is_figure(obj) and "image/png" not in data:
        data["image/png"] = _figure_png(obj)
    if "text/plain" not in data:
        try:
            data["text/plain"] = repr(obj)
        except Exception as e:
            data["text/plain"] = "<repr failed: %s>" % e
    return data


def _as_text(mime, value):
    if isinstance(value, tuple):  # (data, metadata)
        value = value[0]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if mime == "application/json" and not isinstance(value, str):
        return _encode(value)
    return str(value)


def _is_figure(obj):
    figure = sys.modules.get("matplotlib.figure")
    return figure is not None and isinstance(obj, figure.Figure)


def _figure_png(fig):
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


class Context:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.cell = None
        self.count = 0
        self.running = threading.Event()
        self.lock = threading.Lock()
        self.requests = []
        self.wake = threading.Condition(self.lock)
        builtins.display = self.display
        sys.stdout = open(1, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)
        self.outputs = [(_Capture(1, "stdout"), 1, sys.stdout), (_Capture(2, "stderr"), 2, sys.stderr)]

    def display(self, *objs):
        """Shows each object as a result of the running cell, as Jupyter's display() does."""
        for obj in objs:
            self._flush_output()
            _send(type="result", id=self.cell, data=_bundle(obj), main=0)

    def _flush_output(self):
        for capture, fd, stream in self.outputs:
            stream.flush()
            capture.sync(fd)

    def read_requests(self, requests):
        for line in requests:
            try:
                request = ast.literal_eval(line)
                kind = request["type"]
            except Exception:
                continue
            if kind == "interrupt":
                with self.lock:
                    if self.cell is not None and self.cell == request.get("id"):
                        os.kill(os.getpid(), signal.SIGINT)
            elif kind == "run":
                with self.lock:
                    self.requests.append(request)
                    self.wake.notify()
        with self.lock:
            self.requests.append(None)
            self.wake.notify()

    def serve(self):
        # Requests come on the exec's stdin; the cells get /dev/null (input() sees end of file).
        requests = os.fdopen(os.dup(0), "r", encoding="utf-8", errors="replace")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        threading.Thread(target=self.read_requests, args=(requests,), daemon=True).start()
        _send(type="ready")
        while True:
            try:
                with self.lock:
                    while not self.requests:
                        self.wake.wait()
                    request = self.requests.pop(0)
                    if request is None:
                        return
                    self.cell = str(request.get("id"))
                self.run(self.cell, str(request.get("code", "")))
            except KeyboardInterrupt:
                pass  # an interrupt that came as the cell ended

    def run(self, cell, code):
        for capture, _, _ in self.outputs:
            capture.start(cell)
        try:
            try:
                self._execute(code)
            except KeyboardInterrupt as e:
                self._report(e)
            self._show_figures()
            self._flush_output()
        except KeyboardInterrupt:
            self._flush_output()
        finally:
            for capture, _, _ in self.outputs:
                capture.finish()
            with self.lock:
                self.cell = None
            _send(type="done", id=cell)

    def _execute(self, code):
        self.count += 1
        filename = "<cell %d>" % self.count
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, filename, "exec"), self.namespace)
            if last is not None:
                value = eval(compile(last, filename, "eval"), self.namespace)
                if value is not None:
                    self.namespace["_"] = value
                    if not (_is_figure(value) and self._pyplot_owns(value)):
                        self._flush_output()
                        _send(type="result", id=self.cell, data=_bundle(value), main=1)
        except (Exception, SystemExit) as e:
            self._report(e)

    def _report(self, e):
        # The frames of this driver are not the user's business: start at the cell's own.
        tb = e.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
            tb = tb.tb_next
        lines = traceback.format_exception(type(e), e, tb) if tb else traceback.format_exception_only(type(e), e)
        self._flush_output()
        _send(type="error", id=self.cell, name=type(e).__name__, value=str(e), traceback=lines)

    def _pyplot_owns(self, fig):
        pyplot = sys.modules.get("matplotlib.pyplot")
        return pyplot is not None and fig.number in pyplot.get_fignums()

    def _show_figures(self):
        """Every pyplot figure left open by the cell becomes an image/png result, then is closed."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        try:
            for number in pyplot.get_fignums():
                fig = pyplot.figure(number)
                _send(type="result", id=self.cell, data=_bundle(fig), main=0)
            pyplot.close("all")
        except Exception as e:
            self._report(e)


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.argv = [""]
    Context().serve()
