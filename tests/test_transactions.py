"""Transactions: staged operations are invisible until commit; commit applies them all at
once (one Raft entry) or none; rollback discards them."""
import pytest
from appwrite.exception import AppwriteException
from appwrite.query import Query


@pytest.fixture
def accounts(tables):
    tables.create(database_id="bank", name="bank")
    tables.create_table("bank", "acct", "Accounts")
    tables.create_varchar_column("bank", "acct", "owner", 32, True)
    tables.create_integer_column("bank", "acct", "balance", False, min=0)
    tables.create_rows("bank", "acct", [
        {"$id": "a", "owner": "ann", "balance": 100},
        {"$id": "b", "owner": "bob", "balance": 0},
    ])
    return tables


def balances(t):
    return {r.id: r.data["balance"] for r in t.list_rows("bank", "acct").rows}


def test_commit_applies_everything_at_once(accounts):
    t = accounts
    tx = t.create_transaction(ttl=60)
    assert tx.status == "pending" and tx.operations == 0
    t.decrement_row_column("bank", "acct", "a", "balance", value=30, min=0, transaction_id=tx.id)
    t.increment_row_column("bank", "acct", "b", "balance", value=30, transaction_id=tx.id)
    staged = t.create_row("bank", "acct", "c", {"owner": "cy", "balance": 5}, transaction_id=tx.id)
    assert staged.id == "c"
    t.create_operations(tx.id, [
        {"action": "update", "databaseId": "bank", "tableId": "acct", "rowId": "a", "data": {"owner": "ann2"}},
        {"action": "bulkCreate", "databaseId": "bank", "tableId": "acct", "data": [{"$id": "d", "owner": "dee"}]},
    ])
    assert t.get_transaction(tx.id).operations == 5
    # Staged operations are invisible until commit.
    assert balances(t) == {"a": 100, "b": 0}
    with pytest.raises(AppwriteException):
        t.get_row("bank", "acct", "c")
    done = t.update_transaction(tx.id, commit=True)
    assert done.status == "committed"
    assert balances(t) == {"a": 70, "b": 30, "c": 5, "d": None}
    assert t.get_row("bank", "acct", "a").data["owner"] == "ann2"
    with pytest.raises(AppwriteException) as e:
        t.update_transaction(tx.id, commit=True)
    assert e.value.type == "transaction_not_ready"


def test_failed_commit_changes_nothing(accounts):
    t = accounts
    tx = t.create_transaction()
    t.create_operations(tx.id, [
        {"action": "increment", "databaseId": "bank", "tableId": "acct", "rowId": "b", "data": {"column": "balance", "value": 50}},
        {"action": "create", "databaseId": "bank", "tableId": "acct", "rowId": "e", "data": {"owner": "eve", "balance": 1}},
        {"action": "decrement", "databaseId": "bank", "tableId": "acct", "rowId": "a", "data": {"column": "balance", "value": 500, "min": 0}},
    ])
    with pytest.raises(AppwriteException) as e:
        t.update_transaction(tx.id, commit=True)
    assert e.value.code == 400 and e.value.type == "transaction_failed"
    assert balances(t) == {"a": 100, "b": 0}
    assert t.get_transaction(tx.id).status == "failed"


def test_rollback_and_delete(accounts):
    t = accounts
    tx = t.create_transaction()
    t.update_rows("bank", "acct", {"balance": 1}, queries=[Query.equal("owner", "bob")], transaction_id=tx.id)
    t.delete_rows("bank", "acct", queries=[Query.equal("owner", "ann")], transaction_id=tx.id)
    rolled = t.update_transaction(tx.id, rollback=True)
    assert rolled.status == "failed"
    assert balances(t) == {"a": 100, "b": 0}
    with pytest.raises(AppwriteException) as e:
        t.create_operations(tx.id, [{"action": "delete", "databaseId": "bank", "tableId": "acct", "rowId": "a"}])
    assert e.value.type == "transaction_not_ready"
    assert any(x.id == tx.id for x in t.list_transactions().transactions)
    t.delete_transaction(tx.id)
    with pytest.raises(AppwriteException) as e:
        t.get_transaction(tx.id)
    assert e.value.code == 404 and e.value.type == "transaction_not_found"


def test_transaction_input_errors(accounts):
    t = accounts
    with pytest.raises(AppwriteException) as e:
        t.create_transaction(ttl=5)
    assert e.value.code == 400 and e.value.type == "general_argument_invalid"
    tx = t.create_transaction()
    cases = [
        (lambda: t.update_transaction(tx.id), "general_bad_request"),
        (lambda: t.update_transaction(tx.id, commit=True, rollback=True), "general_bad_request"),
        (lambda: t.create_operations(tx.id, []), "general_bad_request"),
        (lambda: t.create_operations(tx.id, [{"action": "explode", "databaseId": "bank", "tableId": "acct"}]), "general_argument_invalid"),
        (lambda: t.create_operations(tx.id, [{"action": "create", "databaseId": "bank", "tableId": "nope", "rowId": "x", "data": {}}]), "collection_not_found"),
        (lambda: t.create_operations("missing", [{"action": "delete", "databaseId": "bank", "tableId": "acct", "rowId": "a"}]), "transaction_not_found"),
        (lambda: t.create_operations(tx.id, [{"action": "delete", "databaseId": "bank", "tableId": "acct", "rowId": f"r{i}"} for i in range(101)]), "transaction_limit_exceeded"),
    ]
    for call, typ in cases:
        with pytest.raises(AppwriteException) as e:
            call()
        assert e.value.type == typ
    assert t.get_transaction(tx.id).operations == 0


def test_reads_inside_a_transaction_see_its_staged_writes(accounts):
    t = accounts
    tx = t.create_transaction()
    t.create_row("bank", "acct", "z", {"owner": "zed", "balance": 9}, transaction_id=tx.id)
    t.update_row("bank", "acct", "a", {"balance": 1}, transaction_id=tx.id)
    t.delete_row("bank", "acct", "b", transaction_id=tx.id)
    inside = {r.id: r.data["balance"] for r in t.list_rows("bank", "acct", transaction_id=tx.id).rows}
    assert inside == {"a": 1, "z": 9}
    assert t.get_row("bank", "acct", "z", transaction_id=tx.id).data["owner"] == "zed"
    assert t.list_rows("bank", "acct", [Query.greater_than("balance", 5)], transaction_id=tx.id).total == 1
    # Outside the transaction nothing changed.
    assert balances(t) == {"a": 100, "b": 0}
    t.update_transaction(tx.id, commit=True)
    assert balances(t) == {"a": 1, "z": 9}
    with pytest.raises(AppwriteException) as e:
        t.list_rows("bank", "acct", transaction_id=tx.id)
    assert e.value.type == "transaction_not_ready"
