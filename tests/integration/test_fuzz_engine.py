"""benchmarks/fuzz_engine.py keeps working: a short run executes inputs through the engine loaded from its
sources (instrumented, even beside a compiled build) and finds nothing, and its checks do fail on output that
breaks them, so a clean run means something."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.scripts import BENCHMARKS, load_benchmark

SCRIPT = BENCHMARKS / "fuzz_engine.py"


def load() -> ModuleType:
    return load_benchmark("fuzz_engine")


FUZZ = load()

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
RELAYED_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-fuzz-relayed: 1\r\n\r\nok"


def test_a_short_run_executes_inputs_and_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "-runs=2000", "-max_total_time=20", "-seed=1", str(corpus)],
        cwd=tmp_path,  # where libFuzzer would write a crash's input
        capture_output=True,
        timeout=180,
        check=False,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr[-4000:]
    assert "INFO: Instrumenting serving.http.connection" in stderr
    done = re.search(r"Done (\d+) runs in \d+ second", stderr)
    assert done is not None, stderr[-2000:]
    assert int(done.group(1)) > 0
    stats = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", stderr)
    assert stats, stderr[-2000:]
    cov, features, _ = map(int, stats[-1])
    assert cov > 0
    assert features > 0
    assert len(list(corpus.iterdir())) >= len(FUZZ.seeds())


def test_the_sources_are_found_where_an_extension_shadows_them(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 1\n")
    (package / "mod.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")
    spec = FUZZ.SourceFinder(tmp_path, ["pkg"]).find_spec("pkg.mod")
    assert spec is not None
    assert spec.origin == str(package / "mod.py")
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    assert FUZZ.SourceFinder(tmp_path, ["pkg"]).find_spec("other.mod") is None


def check(output: bytes, client: bytes = GET, *, answers: int = 1, scripted: bool = False) -> None:
    """What the harness checks of the proxy's output after one input."""
    case = FUZZ.Case((client,), (b"answer",) if scripted else ())
    scan = FUZZ.ClientScan.of(client)
    FUZZ.check_replies(FUZZ.read_replies(output, scan), scan, case, answers)


@pytest.mark.parametrize(
    ("output", "client", "scripted"),
    [
        pytest.param(RELAYED_OK, GET, False, id="relayed"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-fuzz-relayed: 1\r\n\r\n", HEAD, False, id="head"
        ),
        pytest.param(b"", GET, False, id="nothing"),
        pytest.param(RELAYED_OK[:20], GET, False, id="cut-off"),
        pytest.param(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n", GET, True, id="upstream-fault"
        ),
        pytest.param(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            False,
            id="400",
        ),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + RELAYED_OK, GET, False, id="interim"),
    ],
)
def test_the_checks_pass_well_formed_output(output: bytes, client: bytes, scripted: bool) -> None:
    check(output, client, scripted=scripted)


@pytest.mark.parametrize(
    ("output", "client", "answers", "expected"),
    [
        pytest.param(RELAYED_OK + b"XYZ", GET, 1, "malformed response", id="bytes-after-response"),
        pytest.param(RELAYED_OK, HEAD, 1, "malformed response", id="body-after-head"),
        pytest.param(RELAYED_OK.replace(b"1.1", b"1.0"), GET, 1, "not an HTTP/1.1", id="http10"),
        pytest.param(RELAYED_OK + RELAYED_OK, GET, 2, "2 responses to 1", id="two-responses"),
        pytest.param(RELAYED_OK + RELAYED_OK, GET + GET, 1, "upstream sent 1", id="more-than-upstream-sent"),
        pytest.param(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n", GET, 1, "500", id="own-500"
        ),
        pytest.param(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n", GET, 1, "502", id="own-502"),
        pytest.param(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n" + RELAYED_OK,
            GET + GET,
            1,
            "after the engine's own 400",
            id="after-own-error",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: 5\r\nx-fuzz-relayed: 1\r\nContent-Length: 0\r\n\r\n",
            GET,
            1,
            "hop-by-hop",
            id="relayed-keep-alive",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nx-fuzz-relayed: 1\r\n\r\nto the close",
            GET,
            1,
            "delimited by the close",
            id="eof",
        ),
        pytest.param(b"HTTP/1.1 101 Switching\r\nx-fuzz-relayed: 1\r\n\r\n", GET, 1, "101", id="101-to-get"),
        pytest.param(b"HTTP/1.1 103 Early Hints\r\n\r\n" + RELAYED_OK, GET, 1, "interim", id="relayed-103"),
    ],
)
def test_the_checks_fail_on_output_that_breaks_them(
    output: bytes, client: bytes, answers: int, expected: str
) -> None:
    with pytest.raises(FUZZ.EngineFault, match=re.escape(expected)):
        check(output, client, answers=answers)


def test_the_smuggling_check_fails_on_what_the_client_did_not_send() -> None:
    scan = FUZZ.ClientScan.of(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
    seen = FUZZ.Seen("POST", "/p", [("host", "a")], b"hi")
    FUZZ.check_upstream(FUZZ.Recorder([seen]), scan)
    extra = FUZZ.Seen("GET", "/smuggled", [("host", "a")])
    with pytest.raises(FUZZ.EngineFault, match="read 2 requests"):
        FUZZ.check_upstream(FUZZ.Recorder([seen, extra]), scan)
    with pytest.raises(FUZZ.EngineFault, match="the client sent POST /p"):
        FUZZ.check_upstream(FUZZ.Recorder([FUZZ.Seen("POST", "/p", [], b"h")]), scan)
    with pytest.raises(FUZZ.EngineFault, match="rejected"):
        FUZZ.check_upstream(FUZZ.Recorder([], ["invalid method"]), scan)


def test_an_input_round_trips_through_its_encoding() -> None:
    case = FUZZ.Case((GET, b"POST"), (b"HTTP/1.1 200 OK\r\n\r\n", b""), keep_open=True, timed=True)
    assert FUZZ.Case.decode(case.encode()) == case
    assert FUZZ.Case.decode(b"") == FUZZ.Case(())
