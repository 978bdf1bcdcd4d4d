import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_py_typed_and_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        timeout=240,
    )
    [wheel] = tmp_path.glob("asgi_cleanup-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "asgi_cleanup/py.typed" in names
    assert "asgi_cleanup/__init__.py" in names
    assert not any(name.startswith("tests/") for name in names)

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=240
    )
    probe = (
        "import asgi_cleanup, importlib.metadata as m;"
        "print(sorted(asgi_cleanup.__all__));"
        "print(m.requires('asgi-cleanup'))"
    )
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "'CleanupMiddleware'" in result.stdout
    assert "anyio" in result.stdout
    check = subprocess.run(
        [str(env / "bin" / "asgi-cleanup"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0
    assert "check" in check.stdout
