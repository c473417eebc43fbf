"""setup/setup.sh, the script itself on a copy of its lists: `make setup` runs `npm ci` in every
npm folder except the on-demand ones, once (a stamp), and `setup.sh npm FOLDER` installs one
folder alone. npm is a stand-in on PATH that records where it ran; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkout(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A copy of setup/ with no system programs to check and two npm folders (``always``,
    ``later`` on-demand); a fake npm that makes node_modules and appends its folder to
    npm.log."""
    root = tmp_path / "repo"
    (root / "setup").mkdir(parents=True)
    shutil.copy(ROOT / "setup" / "setup.sh", root / "setup" / "setup.sh")
    (root / "setup" / "apt.txt").write_text("# nothing to check\n")
    (root / "setup" / "npm.txt").write_text("# folders\nalways\nlater  on-demand\n")
    for folder in ("always", "later"):
        (root / folder).mkdir()
        (root / folder / "package-lock.json").write_text("{}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "npm.log"
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\nmkdir -p node_modules\necho "$(basename "$PWD") $*" >> {log}\n')
    npm.chmod(0o755)
    return root, log, {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def setup(root: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run([str(root / "setup" / "setup.sh"), *args], env=env, check=True,
                   capture_output=True, timeout=60)


def test_make_setup_leaves_the_on_demand_folders_out_and_installs_once(tmp_path: Path) -> None:
    root, log, env = checkout(tmp_path)
    setup(root, env)
    assert log.read_text().splitlines() == ["always ci --no-audit --no-fund --loglevel=error"]
    assert (root / "always" / "node_modules" / ".installed").exists()
    assert not (root / "later" / "node_modules").exists()
    setup(root, env)  # stamped: nothing to do
    assert len(log.read_text().splitlines()) == 1


def test_setup_npm_installs_one_on_demand_folder(tmp_path: Path) -> None:
    root, log, env = checkout(tmp_path)
    setup(root, env, "npm", "later")
    assert log.read_text().splitlines() == ["later ci --no-audit --no-fund --loglevel=error"]
    assert (root / "later" / "node_modules" / ".installed").exists()
    assert not (root / "always" / "node_modules").exists()
