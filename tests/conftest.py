import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from appwrite.client import Client  # noqa: E402
from appwrite.services.databases import Databases  # noqa: E402
from appwrite.services.tables_db import TablesDB  # noqa: E402

from harness import Node, create_project  # noqa: E402

_counter = itertools.count()


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
