"""The in-process tier: the real app on fake engines, no subprocess, no model (tests/helpers/in_process.py).

One app per test module (building one takes about 0.3 s, mostly Sanic's router): a module's tests
run in the module's event loop (`pytestmark = pytest.mark.asyncio(loop_scope="module")`) and must
leave nothing queued on the fake engines.
"""

from __future__ import annotations

import pytest_asyncio

from tests.helpers.in_process import served_app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory):
    async with served_app(tmp_path_factory.mktemp("served")) as app:
        yield app
