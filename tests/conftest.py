import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from appwrite.client import Client  # noqa: E402
from appwrite.services.databases import Databases  # noqa: E402
from appwrite.services.tables_db import TablesDB  # noqa: E402

from harness import TEMP_DIRS, Node, TestCluster, create_project  # noqa: E402

_counter = itertools.count()


@pytest.fixture(scope="module")
def cluster():
    """Three nodes for a module, for the tests that load both cores beside them (a browser, a
    flood of events): a heartbeat may time out then, which is not an error of the cluster (no
    node is stopped); any other error a node logs fails the module. Modules that want no such
    allowance define their own `cluster`."""
    c = TestCluster(3).start()
    for n in c.nodes:
        n.allowed_errors = TestCluster.PEER_DOWN
    yield c
    c.shutdown()
    assert not c.unexpected_errors(), "\n".join(c.unexpected_errors())


@pytest.fixture(scope="module")
def node():
    n = Node().start()
    yield n
    if n.proc.poll() is None:
        n.stop()
    errors = n.unexpected_errors()
    assert not errors, "node logged unexpected errors:\n" + "\n".join(errors)


class Project:
    def __init__(self, node, project_id, key):
        self.node = node
        self.id = project_id
        self.key = key

    def client(self, key=None):
        return (
            Client()
            .set_endpoint(self.node.url())
            .set_project(self.id)
            .set_key(key if key is not None else self.key)
        )

    def tables(self):
        return TablesDB(self.client())

    def databases(self):
        return Databases(self.client())

    def headers(self):
        return {"X-Appwrite-Project": self.id, "X-Appwrite-Key": self.key}


@pytest.fixture
def project(node):
    pid = f"p{os.getpid()}x{next(_counter)}"
    return Project(node, pid, create_project(node, pid))


@pytest.fixture
def tables(project):
    return project.tables()


def pytest_sessionfinish(session, exitstatus):
    """A passing run leaves nothing behind (a run's data dirs add up to gigabytes); a failing
    one keeps its nodes' data and logs for a look."""
    if exitstatus == 0:
        import shutil
        for d in TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
