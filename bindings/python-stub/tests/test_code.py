"""CodeBox contexts (run_code, create_context) on a real box of the code-interpreter test image
(python3 with matplotlib and numpy), async and sync. One box for the async cases, on one event loop
(contexts live in the loop that made them), and one for the sync twin."""

import asyncio
import base64

import boxlite
import pytest
from boxlite.sync_api import SyncCodeBox

IMAGE = "code-interpreter:latest"


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def cbox(loop, art):
    box = loop.run_until_complete(boxlite.CodeBox(image=IMAGE, runtime=art, memory_mib=512).start())
    yield box
    loop.run_until_complete(box.shutdown())


def test_state_lasts_from_cell_to_cell(loop, cbox):
    async def main():
        context = await cbox.create_context()
        first = await cbox.run_code("import os\nx = 41\nos.chdir('/tmp')", context=context)
        assert (first.results, first.stdout, first.error, first.timed_out) == ([], "", None, False)
        value = await cbox.run_code("x + 1", context=context)
        assert value.results == [boxlite.CodeResult({"text/plain": "42"}, True)]
        assert value.results[0].text == "42"
        assert (await cbox.run_code("os.getcwd()", context=context.id)).results[0].text == "'/tmp'"

    loop.run_until_complete(main())


def test_output_streams_and_errors(loop, cbox):
    async def main():
        seen = []
        code = "import os, sys\nprint('out')\nprint('err', file=sys.stderr)\nos.system('echo child')\n1 / 0"
        execution = await cbox.run_code(code, on_stdout=lambda t: seen.append(("out", t)), on_stderr=lambda t: seen.append(("err", t)))
        assert execution.stdout == "out\nchild\n"
        assert execution.stderr == "err\n"
        assert ("out", "out\n") in seen and ("err", "err\n") in seen
        assert (execution.error.name, execution.error.value) == ("ZeroDivisionError", "division by zero")
        assert "1 / 0" in execution.error.traceback and "_code_driver" not in execution.error.traceback

    loop.run_until_complete(main())


def test_timeout_interrupts_and_keeps_the_context(loop, cbox):
    async def main():
        context = await cbox.create_context()
        await cbox.run_code("kept = 'yes'", context=context)
        execution = await cbox.run_code("import time\ntime.sleep(600)", context=context, timeout=1.5)
        assert execution.timed_out and execution.error.name == "KeyboardInterrupt"
        assert (await cbox.run_code("kept", context=context)).results[0].text == "'yes'"

    loop.run_until_complete(main())


def test_a_dead_interpreter_is_reported_and_a_new_context_works(loop, cbox):
    async def main():
        context = await cbox.create_context()
        execution = await cbox.run_code("import os\nos._exit(3)", context=context)
        assert execution.error.name == "ContextDied" and "code 3" in execution.error.value
        with pytest.raises(boxlite.InvalidStateError, match="create_context"):
            await cbox.run_code("1", context=context)
        with pytest.raises(boxlite.NotFoundError, match="no-such"):
            await cbox.run_code("1", context="no-such")
        with pytest.raises(boxlite.InvalidArgumentError, match="language"):
            await cbox.create_context(language="ruby")
        other = await cbox.create_context(cwd="/tmp", env={"WHO": "other"})
        assert (await cbox.run_code("import os; (os.getcwd(), os.environ['WHO'])", context=other)).results[0].text == "('/tmp', 'other')"
        assert (await cbox.run_code("'x' in globals()", context=other)).results[0].text == "False"
        await cbox.remove_context(other)
        assert other not in cbox.list_contexts()

    loop.run_until_complete(main())


def test_a_javascript_context(loop, cbox):
    async def main():
        context = await cbox.create_context(language="javascript")
        await cbox.run_code("let n = 20", context=context)
        execution = await cbox.run_code("console.log('from node'); n + 22", context=context)
        assert (execution.stdout, execution.results[0].text) == ("from node\n", "42")
        stuck = await cbox.run_code("while (true) {}", context=context, timeout=1.5)
        assert stuck.timed_out and stuck.error.name == "KeyboardInterrupt"
        assert (await cbox.run_code("n", context=context)).results[0].text == "20"

    loop.run_until_complete(main())


def test_matplotlib_figure_and_rich_formats(loop, cbox):
    async def main():
        chart = await cbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nNone", timeout=120)
        assert chart.error is None, chart.error
        [image] = [r for r in chart.results if "image/png" in r.data]
        assert base64.b64decode(image.data["image/png"]).startswith(b"\x89PNG\r\n\x1a\n")
        html = await cbox.run_code("class T:\n    def _repr_html_(self): return '<b>t</b>'\ndisplay(1)\nT()")
        assert [r.is_main_result for r in html.results] == [False, True]
        assert html.results[1].data["text/html"] == "<b>t</b>"

    loop.run_until_complete(main())


def test_huge_output_is_truncated_with_a_marker(loop, cbox):
    execution = loop.run_until_complete(cbox.run_code("print('y' * 3_000_000)", timeout=120))
    assert len(execution.stdout) < boxlite.CODE_OUTPUT_LIMIT + 4096
    assert "[output truncated:" in execution.stdout


def test_the_sync_twin(home, registry):
    rt = boxlite.sync_api.SyncBoxlite(boxlite.Options(home_dir=home, image_registries=[f"http://{registry}"]))
    with SyncCodeBox(image=IMAGE, runtime=rt, memory_mib=256) as box:
        context = box.create_context()
        box.run_code("n = 20", context=context)
        assert box.run_code("n + 22", context=context).results[0].text == "42"
        assert box.run_code("print('default')").stdout == "default\n"
        assert box.list_contexts() == [context]
    rt.close()


@pytest.fixture(scope="module")
def package_index(tmp_path_factory):
    """A PEP 503 package index on this host's 127.0.0.1 serving one wheel, boxlite-probe 1.0,
    built here (pip wheel of a one-module project)."""
    import functools
    import subprocess
    import sys
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path_factory.mktemp("index")
    project = root / "project"
    (project / "boxlite_probe").mkdir(parents=True)
    (project / "boxlite_probe" / "__init__.py").write_text("VALUE = 'installed-from-the-host-index'\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "boxlite-probe"\nversion = "1.0"\n')
    served = root / "served"
    (served / "simple" / "boxlite-probe").mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(served / "simple" / "boxlite-probe"), str(project)], check=True)
    [wheel] = (served / "simple" / "boxlite-probe").glob("*.whl")
    (served / "simple" / "boxlite-probe" / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_install_packages_from_an_index_on_the_host(loop, cbox, package_index):
    """The FAQ's install_packages: pip in the box, the index reached through host.docker.internal
    (the host's 127.0.0.1), chosen by pip's own config; the package imports afterwards, in a new
    interpreter and in a new context."""
    async def main():
        config = f"[global]\nindex-url = http://host.docker.internal:{package_index}/simple\ntrusted-host = host.docker.internal\n"
        await cbox.files.write("/etc/pip.conf", config)
        result = await cbox.install_packages("boxlite-probe")
        assert result.exit_code == 0, result.stderr
        assert await cbox.run("import boxlite_probe; print(boxlite_probe.VALUE)") == "installed-from-the-host-index\n"
        context = await cbox.create_context()
        assert (await cbox.run_code("import boxlite_probe; boxlite_probe.VALUE", context=context)).results[0].text == "'installed-from-the-host-index'"
        missing = await cbox.install_packages("no-such-package-anywhere")
        assert missing.exit_code != 0 and "no-such-package-anywhere" in missing.stderr

    loop.run_until_complete(main())
