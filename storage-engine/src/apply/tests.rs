//! Apply: atomic entries, savepoints per envelope, exactly-once, authorisation against the
//! committed state, and leader time that never goes backwards.

use crate::engine::Engine;
use model::command::{
    Actor, Batch, DocOp, DocTarget, DocumentsOp, Envelope, KeyOp, Op, ProjectOp, RequestId,
    SchemaOp, TransactionOp,
};
use model::reader::StateReader;
use model::schema::{ApiKey, AttrKind, Attribute, Collection, Database};
use model::{ErrorCode, Outcome, Value};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn rid() -> RequestId {
    RequestId(NEXT_ID.fetch_add(1, Ordering::SeqCst) as u128)
}

fn env(actor: Actor, op: Op, at: i64) -> Envelope {
    Envelope {
        at,
        ..Envelope::new("p", rid(), actor, op)
    }
}

fn key_actor(scopes: &[&str]) -> Actor {
    Actor::Key {
        id: "k".into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    eng: Engine,
    index: u64,
}

impl Fixture {
    /// A project `p` with key `k` (rows.write, tables.write), database `d`, table `c`
    /// with an integer column `n` and a unique string column `name`.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let eng = Engine::open(dir.path()).unwrap();
        let mut f = Fixture {
            _dir: dir,
            eng,
            index: 0,
        };
        let setup = vec![
            env(
                Actor::Operator,
                Op::Projects(ProjectOp::Create { name: "P".into() }),
                1,
            ),
            env(
                Actor::Operator,
                Op::Keys(KeyOp::Create {
                    key: ApiKey {
                        id: "k".into(),
                        project: "p".into(),
                        name: "k".into(),
                        scopes: vec!["rows.write".into(), "tables.write".into()],
                        expire: Some(1_000_000),
                        secret_sha256: "abc".into(),
                        created_at: 0,
                        updated_at: 0,
                    },
                }),
                2,
            ),
            env(
                Actor::Operator,
                Op::Schema(SchemaOp::CreateDatabase {
                    database: Database {
                        id: "d".into(),
                        name: "d".into(),
                        enabled: true,
                        kind: "tablesdb".into(),
                        created_at: 0,
                        updated_at: 0,
                    },
                }),
                3,
            ),
            env(
                Actor::Operator,
                Op::Schema(SchemaOp::CreateCollection {
                    collection: Collection {
                        id: "c".into(),
                        database: "d".into(),
                        name: "c".into(),
                        enabled: true,
                        permissions: vec![],
                        document_security: false,
                        attributes: vec![
                            Attribute::new("n", AttrKind::Integer, 0),
                            Attribute {
                                size: Some(32),
                                ..Attribute::new("name", AttrKind::String, 0)
                            },
                        ],
                        indexes: vec![model::Index {
                            key: "uniq".into(),
                            kind: model::IndexKind::Unique,
                            attributes: vec!["name".into()],
                            orders: vec![],
                            lengths: vec![],
                            status: Default::default(),
                            created_at: 0,
                            updated_at: 0,
                        }],
                        reshapes: vec![],
                        relations: Default::default(),
                        created_at: 0,
                        updated_at: 0,
                    },
                }),
                4,
            ),
        ];
        for o in f.apply(setup) {
            assert!(!matches!(o, Outcome::Failed(_)), "{o:?}");
        }
        f
    }

    fn apply(&mut self, envs: Vec<Envelope>) -> Vec<Outcome> {
        self.index += 1;
        self.eng
            .apply_entry(Some(&Batch(envs)), self.index, b"record")
            .unwrap()
            .0
    }

    fn rows(&self) -> Vec<(String, Value)> {
        let view = self.eng.view().unwrap();
        let coll = view.collection("p", "d", "c").unwrap().unwrap();
        let spec = model::query::Spec::parse(&[]).unwrap();
        view.find("p", &coll, &spec, true)
            .unwrap()
            .documents
            .into_iter()
            .map(|d| (d.id.clone(), d.get("n")))
            .collect()
    }
}

fn create(id: &str, n: i64, name: &str) -> Op {
    Op::Documents(DocumentsOp::Write {
        ops: vec![DocTarget {
            database: "d".into(),
            collection: "c".into(),
            op: DocOp::Create {
                id: id.into(),
                data: [
                    ("n".to_string(), Value::Int(n)),
                    ("name".to_string(), Value::Str(name.into())),
                ]
                .into_iter()
                .collect(),
                permissions: None,
            },
        }],
    })
}

fn increment(id: &str) -> Op {
    Op::Documents(DocumentsOp::Write {
        ops: vec![DocTarget {
            database: "d".into(),
            collection: "c".into(),
            op: DocOp::Increment {
                id: id.into(),
                attr: "n".into(),
                by: Value::Int(1),
                bound: None,
            },
        }],
    })
}

fn failed(o: &Outcome) -> Option<ErrorCode> {
    match o {
        Outcome::Failed(e) => Some(e.code),
        _ => None,
    }
}

#[test]
fn an_entry_is_one_write_and_a_failing_envelope_fails_alone() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let out = f.apply(vec![
        env(w.clone(), create("a", 1, "x"), 10),
        // Unique violation against the first envelope of the same entry: undone alone.
        env(w.clone(), create("b", 2, "x"), 10),
        env(w.clone(), create("c", 3, "y"), 10),
    ]);
    assert_eq!(failed(&out[0]), None);
    assert_eq!(failed(&out[1]), Some(ErrorCode::DocumentUniqueViolation));
    assert_eq!(failed(&out[2]), None);
    assert_eq!(
        f.rows(),
        vec![("a".into(), Value::Int(1)), ("c".into(), Value::Int(3))]
    );
    // The second's index entries were undone with it: "x" still belongs to "a" only, and
    // the name "y" is taken by "c".
    let out = f.apply(vec![env(w, create("d", 4, "y"), 11)]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::DocumentUniqueViolation));
    assert_eq!(f.eng.view().unwrap().applied_index(), f.index);
}

#[test]
fn a_repeated_request_id_is_applied_once_and_answers_the_first_outcome() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    f.apply(vec![env(w.clone(), create("a", 0, "x"), 10)]);
    let inc = env(w.clone(), increment("a"), 11);
    let first = f.apply(vec![inc.clone()]);
    // A retry in a later entry, and one in the same entry.
    let again = f.apply(vec![
        Envelope {
            at: 12,
            ..inc.clone()
        },
        inc.clone(),
    ]);
    assert_eq!(again[0], first[0]);
    assert_eq!(again[1], first[0]);
    assert_eq!(f.rows(), vec![("a".into(), Value::Int(1))]);
    // A new request id increments again.
    f.apply(vec![env(w, increment("a"), 13)]);
    assert_eq!(f.rows(), vec![("a".into(), Value::Int(2))]);
}

#[test]
fn request_ids_are_forgotten_after_the_window() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    f.apply(vec![env(w.clone(), create("a", 0, "x"), 10)]);
    let inc = env(w.clone(), increment("a"), 20);
    f.apply(vec![inc.clone()]);
    // Much later (leader time), a few new requests sweep out the old ids...
    let later = 20 + super::REQUEST_WINDOW_MS + 1;
    for _ in 0..3 {
        f.apply(vec![env(w.clone(), increment("a"), later)]);
    }
    assert_eq!(f.rows(), vec![("a".into(), Value::Int(4))]);
    // ...so the old id is new again (its retry horizon is long gone).
    f.apply(vec![Envelope { at: later, ..inc }]);
    assert_eq!(f.rows(), vec![("a".into(), Value::Int(5))]);
}

#[test]
fn actors_are_checked_against_the_committed_state() {
    let mut f = Fixture::new();
    let out = f.apply(vec![
        env(key_actor(&["rows.write"]), create("a", 1, "a"), 10),
        // Scope the key lacks.
        env(key_actor(&["databases.write"]), create("b", 1, "b"), 10),
        // A key may not create keys or projects.
        env(
            key_actor(&["rows.write"]),
            Op::Keys(KeyOp::Delete { id: "k".into() }),
            10,
        ),
        // Unknown key.
        env(
            Actor::Key {
                id: "nope".into(),
                scopes: vec!["rows.write".into()],
            },
            create("c", 1, "c"),
            10,
        ),
    ]);
    assert_eq!(failed(&out[0]), None);
    assert_eq!(failed(&out[1]), Some(ErrorCode::GeneralUnauthorizedScope));
    assert_eq!(failed(&out[2]), Some(ErrorCode::UserUnauthorized));
    assert_eq!(failed(&out[3]), Some(ErrorCode::UserUnauthorized));
    // Expired at the leader's time of the write.
    let out = f.apply(vec![env(
        key_actor(&["rows.write"]),
        create("d", 1, "d"),
        1_000_000,
    )]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::ProjectKeyExpired));
    // Revoked in one entry, refused in the next.
    f.apply(vec![env(
        Actor::Operator,
        Op::Keys(KeyOp::Delete { id: "k".into() }),
        11,
    )]);
    let out = f.apply(vec![env(
        key_actor(&["rows.write"]),
        create("e", 1, "e"),
        12,
    )]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::UserUnauthorized));
    assert_eq!(f.rows(), vec![("a".into(), Value::Int(1))]);
}

#[test]
fn leader_time_never_goes_backwards() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let a = f.apply(vec![env(w.clone(), create("a", 1, "a"), 5_000)]);
    // A new leader whose clock is behind: stamped earlier, applied no earlier.
    let b = f.apply(vec![env(w, create("b", 1, "b"), 4_000)]);
    let at = |o: &Outcome| match o {
        Outcome::Documents(d) => d[0].created_at,
        other => panic!("{other:?}"),
    };
    assert_eq!(at(&a[0]), 5_000);
    assert_eq!(at(&b[0]), 5_000);
}

#[test]
fn a_failed_commit_keeps_only_the_transaction_status() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let tx = |op| env(w.clone(), Op::Transactions(op), 10);
    f.apply(vec![env(w.clone(), create("a", 1, "x"), 10)]);
    let staged = vec![DocTarget {
        database: "d".into(),
        collection: "c".into(),
        op: DocOp::Delete { id: "a".into() },
    }];
    let dup = match create("a", 9, "z") {
        Op::Documents(DocumentsOp::Write { ops }) => ops,
        _ => unreachable!(),
    };
    let out = f.apply(vec![
        tx(TransactionOp::Create {
            id: "t".into(),
            ttl_ms: 60_000,
        }),
        tx(TransactionOp::Stage {
            id: "t".into(),
            ops: [dup, staged].concat(),
        }),
        // Fails (a exists when the create runs), in the same entry as a good write.
        tx(TransactionOp::Commit { id: "t".into() }),
        env(w.clone(), create("b", 2, "y"), 10),
    ]);
    assert_eq!(failed(&out[2]), Some(ErrorCode::TransactionFailed));
    assert_eq!(failed(&out[3]), None);
    let view = f.eng.view().unwrap();
    let t = view.transaction("p", "t").unwrap().unwrap();
    assert_eq!(t.status, model::schema::TransactionStatus::Failed);
    assert_eq!(
        f.rows(),
        vec![("a".into(), Value::Int(1)), ("b".into(), Value::Int(2))]
    );
}

#[test]
fn a_view_is_one_point_in_time() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    f.apply(vec![env(w.clone(), create("a", 1, "a"), 10)]);
    let before = f.eng.view().unwrap();
    f.apply(vec![env(w, create("b", 1, "b"), 11)]);
    assert_eq!(before.applied_index() + 1, f.index);
    let coll = before.collection("p", "d", "c").unwrap().unwrap();
    assert!(before.document("p", &coll, "b").unwrap().is_none());
    assert!(f
        .eng
        .view()
        .unwrap()
        .document("p", &coll, "b")
        .unwrap()
        .is_some());
}

#[test]
fn entries_without_commands_record_their_index() {
    let f = Fixture::new();
    f.eng.apply_entry(None, 99, b"r").unwrap();
    assert_eq!(f.eng.view().unwrap().applied_index(), 99);
    assert_eq!(f.eng.applied_meta().unwrap().as_deref(), Some(&b"r"[..]));
}

fn schema(op: SchemaOp, at: i64) -> Envelope {
    env(Actor::Operator, Op::Schema(op), at)
}

/// An index over the column `n`, as a client asks for it.
fn index_on_n(key: &str, kind: model::IndexKind) -> model::Index {
    model::Index {
        key: key.into(),
        kind,
        attributes: vec!["n".into()],
        orders: vec![],
        lengths: vec![],
        status: Default::default(),
        created_at: 0,
        updated_at: 0,
    }
}

fn index_status(f: &Fixture, key: &str) -> model::schema::IndexStatus {
    let view = f.eng.view().unwrap();
    let coll = view.collection("p", "d", "c").unwrap().unwrap();
    coll.index(key).unwrap().status.clone()
}

#[test]
fn an_index_over_existing_rows_is_built_in_bounded_chunks() {
    use model::schema::IndexStatus;
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let rows = super::schema::INDEX_BUILD_CHUNK * 2 + 7;
    for i in 0..rows {
        f.apply(vec![env(
            w.clone(),
            create(&format!("r{i}"), (i % 10) as i64, &format!("n{i}")),
            10,
        )]);
    }
    let by_n = index_on_n("by_n", model::IndexKind::Key);
    let out = f.apply(vec![schema(
        SchemaOp::CreateIndex {
            database: "d".into(),
            collection: "c".into(),
            index: by_n,
        },
        20,
    )]);
    assert!(
        matches!(&out[0], Outcome::Index(i) if i.status == IndexStatus::Processing),
        "{out:?}"
    );
    let build = || {
        schema(
            SchemaOp::BuildIndex {
                database: "d".into(),
                collection: "c".into(),
                key: "by_n".into(),
            },
            21,
        )
    };
    let spec =
        model::query::Spec::parse(&[r#"{"method":"equal","attribute":"n","values":[3]}"#.into()])
            .unwrap();
    let count = |f: &Fixture| {
        let view = f.eng.view().unwrap();
        let coll = view.collection("p", "d", "c").unwrap().unwrap();
        (
            view.find("p", &coll, &spec, true).unwrap().total,
            view.jobs(10).unwrap().len(),
        )
    };
    // Two full chunks, then the rest: available, and its job is gone.
    f.apply(vec![build()]);
    assert_eq!(index_status(&f, "by_n"), IndexStatus::Processing);
    // A row written during the build is indexed by its own write (and counted once when the
    // build reaches it); rows changed during the build, behind it and ahead of it, too.
    let ahead = format!("r{}", rows - 7);
    f.apply(vec![
        env(w.clone(), create("late", 3, "late"), 22),
        env(w.clone(), increment("r3"), 22),
        env(w.clone(), increment("r2"), 22),
        env(w.clone(), increment(&ahead), 22),
    ]);
    f.apply(vec![build()]);
    assert_eq!(index_status(&f, "by_n"), IndexStatus::Processing);
    // "late" joined the threes; r3 left them and r2 joined them.
    let mut threes = (0..rows).filter(|i| i % 10 == 3).count() as u64 + 1;
    threes -= u64::from((rows - 7) % 10 == 3);
    threes += u64::from((rows - 7) % 10 == 2);
    assert_eq!(count(&f), (threes, 1), "queries stay right while it builds");
    f.apply(vec![build()]);
    assert_eq!(index_status(&f, "by_n"), IndexStatus::Available);
    // Now answered from the index's count of n = 3, which must equal a count of the rows.
    assert_eq!(count(&f), (threes, 0));
    let view = f.eng.view().unwrap();
    let coll = view.collection("p", "d", "c").unwrap().unwrap();
    let checked = model::query::Spec::parse(&[
        r#"{"method":"equal","attribute":"n","values":[3]}"#.into(),
        r#"{"method":"startsWith","attribute":"name","values":[""]}"#.into(),
    ])
    .unwrap();
    assert_eq!(view.find("p", &coll, &checked, true).unwrap().total, threes);
    // A chunk after the end (a late retry) is a no-op.
    let out = f.apply(vec![build()]);
    assert_eq!(out, vec![Outcome::Done]);
    assert_eq!(index_status(&f, "by_n"), IndexStatus::Available);
}

#[test]
fn removing_a_row_during_a_unique_build_leaves_the_entry_another_row_owns() {
    use model::schema::IndexStatus;
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    for i in 0..20 {
        f.apply(vec![env(
            w.clone(),
            create(&format!("r{i}"), i, &format!("n{i}")),
            10,
        )]);
    }
    f.apply(vec![schema(
        SchemaOp::CreateIndex {
            database: "d".into(),
            collection: "c".into(),
            index: index_on_n("uniq_n", model::IndexKind::Unique),
        },
        20,
    )]);
    // Ahead of the build, "x" takes n = 5 (r5 is not indexed yet), then r5 goes.
    f.apply(vec![env(w.clone(), create("x", 5, "x"), 21)]);
    let out = f.apply(vec![env(
        w,
        Op::Documents(DocumentsOp::Write {
            ops: vec![DocTarget {
                database: "d".into(),
                collection: "c".into(),
                op: DocOp::Delete { id: "r5".into() },
            }],
        }),
        22,
    )]);
    assert_eq!(failed(&out[0]), None);
    while index_status(&f, "uniq_n") == IndexStatus::Processing {
        f.apply(vec![schema(
            SchemaOp::BuildIndex {
                database: "d".into(),
                collection: "c".into(),
                key: "uniq_n".into(),
            },
            23,
        )]);
    }
    assert_eq!(index_status(&f, "uniq_n"), IndexStatus::Available);
    let view = f.eng.view().unwrap();
    let coll = view.collection("p", "d", "c").unwrap().unwrap();
    let spec =
        model::query::Spec::parse(&[r#"{"method":"equal","attribute":"n","values":[5]}"#.into()])
            .unwrap();
    let page = view.find("p", &coll, &spec, true).unwrap();
    let ids: Vec<&str> = page.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!((ids, page.total), (vec!["x"], 1));
}

#[test]
fn a_unique_index_over_duplicates_ends_failed_and_empty() {
    use model::schema::IndexStatus;
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    f.apply(vec![
        env(w.clone(), create("a", 1, "a"), 10),
        env(w.clone(), create("b", 1, "b"), 10),
    ]);
    let uniq = index_on_n("uniq_n", model::IndexKind::Unique);
    f.apply(vec![schema(
        SchemaOp::CreateIndex {
            database: "d".into(),
            collection: "c".into(),
            index: uniq,
        },
        20,
    )]);
    f.apply(vec![schema(
        SchemaOp::BuildIndex {
            database: "d".into(),
            collection: "c".into(),
            key: "uniq_n".into(),
        },
        21,
    )]);
    assert!(matches!(
        index_status(&f, "uniq_n"),
        IndexStatus::Failed { .. }
    ));
    // A failed index holds no entries and constrains nothing.
    let out = f.apply(vec![env(w, create("c", 1, "c"), 22)]);
    assert_eq!(failed(&out[0]), None);
}

#[test]
fn a_range_chunk_looks_at_a_bounded_run_of_rows_and_says_where_to_go_on() {
    use model::command::RangeChange;
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let rows = super::documents::RANGE_SCAN + 100;
    for i in 0..rows {
        f.apply(vec![env(
            w.clone(),
            create(&format!("r{i}"), (i % 4) as i64, &format!("n{i}")),
            10,
        )]);
    }
    let spec =
        model::query::Spec::parse(&[r#"{"method":"equal","attribute":"n","values":[1]}"#.into()])
            .unwrap();
    let range = |after, max, change| {
        env(
            w.clone(),
            Op::Documents(DocumentsOp::Range {
                database: "d".into(),
                collection: "c".into(),
                spec: spec.clone(),
                change,
                after,
                max,
            }),
            20,
        )
    };
    // Stops at `max` matches, at the last row it looked at.
    let out = f.apply(vec![range(0, 3, RangeChange::Delete)]);
    let Outcome::Range { documents, next } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        documents.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r5", "r9"]
    );
    assert_eq!(*next, Some(10));
    // Looks at RANGE_SCAN rows at most, then says where it stopped; then finishes.
    let data: model::command::Data = [("n".to_string(), Value::Int(100))].into_iter().collect();
    let out = f.apply(vec![range(
        10,
        100_000,
        RangeChange::Update { data: data.clone() },
    )]);
    let Outcome::Range { documents, next } = &out[0] else {
        panic!("{out:?}")
    };
    let next = next.expect("a full scan window goes on");
    assert_eq!(next, 10 + super::documents::RANGE_SCAN as u64);
    assert_eq!(documents.len(), super::documents::RANGE_SCAN / 4);
    let out = f.apply(vec![range(next, 100_000, RangeChange::Update { data })]);
    let Outcome::Range { documents, next } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(*next, None);
    let ones = (0..rows).filter(|i| i % 4 == 1).count();
    assert_eq!(documents.len(), ones - 3 - super::documents::RANGE_SCAN / 4);
    let view = f.eng.view().unwrap();
    let coll = view.collection("p", "d", "c").unwrap().unwrap();
    let all = model::query::Spec::parse(&[]).unwrap();
    assert_eq!(
        view.find("p", &coll, &all, true).unwrap().total,
        (rows - 3) as u64
    );
    assert_eq!(view.find("p", &coll, &spec, true).unwrap().total, 0);
}

#[test]
fn renamed_and_deleted_columns_are_whole_at_once_and_rewritten_in_chunks() {
    use model::command::AttributePatch;
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let rows = super::schema::RESHAPE_CHUNK * 2 + 7;
    for i in 0..rows {
        f.apply(vec![env(
            w.clone(),
            create(&format!("r{i}"), i as i64, &format!("n{i}")),
            10,
        )]);
    }
    let column = |f: &Fixture, key: &str| {
        let view = f.eng.view().unwrap();
        let coll = view.collection("p", "d", "c").unwrap().unwrap();
        let spec = model::query::Spec::parse(&[]).unwrap();
        let page = view.find("p", &coll, &spec, true).unwrap();
        let values: Vec<Value> = page.documents.iter().map(|d| d.get(key)).collect();
        (values, coll.reshapes.len(), view.jobs(10).unwrap().len())
    };
    let out = f.apply(vec![schema(
        SchemaOp::UpdateAttribute {
            database: "d".into(),
            collection: "c".into(),
            key: "n".into(),
            kind: AttrKind::Integer,
            patch: AttributePatch {
                new_key: Some("m".into()),
                ..Default::default()
            },
        },
        20,
    )]);
    assert!(
        matches!(&out[0], Outcome::Attribute(a) if a.key == "m"),
        "{out:?}"
    );
    // Every read answers the new name at once, none the old one.
    let (m, reshapes, jobs) = column(&f, "m");
    assert_eq!(m.first(), Some(&Value::Int(0)));
    assert!(m.iter().all(|v| !v.is_null()));
    assert!(column(&f, "n").0.iter().all(Value::is_null));
    assert_eq!((reshapes, jobs), (1, 1));
    // The old name cannot be taken while stored rows may still hold it.
    let new_n = || {
        schema(
            SchemaOp::CreateAttribute {
                database: "d".into(),
                collection: "c".into(),
                attribute: Attribute::new("n", AttrKind::Integer, 0),
            },
            21,
        )
    };
    assert_eq!(
        failed(&f.apply(vec![new_n()])[0]),
        Some(ErrorCode::AttributeAlreadyExists)
    );
    // A write during the rewrite is stored in the new layout.
    let out = f.apply(vec![env(
        w.clone(),
        Op::Documents(DocumentsOp::Write {
            ops: vec![DocTarget {
                database: "d".into(),
                collection: "c".into(),
                op: DocOp::Update {
                    id: "r1".into(),
                    data: [("m".to_string(), Value::Int(-1))].into_iter().collect(),
                    permissions: None,
                },
            }],
        }),
        22,
    )]);
    assert_eq!(failed(&out[0]), None, "{out:?}");
    // Deleting it too: gone at once; the rewrite starts over and settles both changes.
    f.apply(vec![schema(
        SchemaOp::DeleteAttribute {
            database: "d".into(),
            collection: "c".into(),
            key: "m".into(),
        },
        23,
    )]);
    assert!(column(&f, "m").0.iter().all(Value::is_null));
    let chunk = || {
        schema(
            SchemaOp::Reshape {
                database: "d".into(),
                collection: "c".into(),
            },
            24,
        )
    };
    f.apply(vec![chunk()]);
    f.apply(vec![chunk()]);
    assert_eq!(column(&f, "m").1, 2, "not through yet");
    f.apply(vec![chunk()]);
    let (_, reshapes, jobs) = column(&f, "m");
    assert_eq!((reshapes, jobs), (0, 0));
    // Stored rows hold neither name now: a new column `n` starts empty everywhere.
    assert_eq!(failed(&f.apply(vec![new_n()])[0]), None);
    let (n, _, _) = column(&f, "n");
    assert_eq!(n.len(), 25);
    assert!(n.iter().all(Value::is_null), "{n:?}");
    let view = f.eng.view().unwrap();
    let coll = view.collection("p", "d", "c").unwrap().unwrap();
    let doc = view.document("p", &coll, "r1").unwrap().unwrap();
    assert_eq!(doc.data.keys().collect::<Vec<_>>(), vec!["name"]);
    // A chunk after the end is a no-op.
    assert_eq!(f.apply(vec![chunk()]), vec![Outcome::Done]);
}

fn cluster(op: model::command::ClusterOp, at: i64) -> Envelope {
    env(Actor::Operator, Op::Cluster(op), at)
}

#[test]
fn join_tokens_admit_once_and_ids_keep_their_key() {
    use model::command::{ClusterOp, TokenUse};
    let mut f = Fixture::new();
    let token = |secret: &str| {
        Some(TokenUse {
            id: "t1".into(),
            secret_sha256: secret.into(),
        })
    };
    let admit = |node, key: &str, t| ClusterOp::Admit {
        node,
        key_sha256: key.into(),
        token: t,
    };
    let issue = ClusterOp::IssueToken {
        id: "t1".into(),
        secret_sha256: "s".into(),
        expires: 5_000,
    };
    let out = f.apply(vec![
        cluster(issue, 1_000),
        cluster(admit(4, "k4", token("wrong")), 1_100),
        cluster(admit(4, "k4", token("s")), 1_200),
        // A retry of the same admission (its answer lost): accepted, changes nothing.
        cluster(admit(4, "k4", token("s")), 1_300),
        // The used token for another node, or the same id with another key: refused.
        cluster(admit(5, "k5", token("s")), 1_400),
        cluster(admit(4, "other", None), 1_500),
    ]);
    let codes: Vec<_> = out.iter().map(failed).collect();
    let forbidden = Some(ErrorCode::GeneralAccessForbidden);
    assert_eq!(
        codes,
        vec![None, forbidden, None, None, forbidden, forbidden]
    );
    assert_eq!(f.eng.cluster_node(4).unwrap().unwrap().key_sha256, "k4");
    assert!(f.eng.cluster_node(5).unwrap().is_none());

    // Expired.
    let late = ClusterOp::IssueToken {
        id: "t2".into(),
        secret_sha256: "s2".into(),
        expires: 2_000,
    };
    let expired = ClusterOp::Admit {
        node: 6,
        key_sha256: "k6".into(),
        token: Some(TokenUse {
            id: "t2".into(),
            secret_sha256: "s2".into(),
        }),
    };
    let out = f.apply(vec![cluster(late, 1_600), cluster(expired, 2_000)]);
    assert_eq!(failed(&out[1]), forbidden);
}

#[test]
fn a_removal_retires_the_id_and_stales_the_root_key_until_it_rotates() {
    use model::command::ClusterOp;
    let mut f = Fixture::new();
    let root = |sha: &str, initial| ClusterOp::SetRootKey {
        sha256: sha.into(),
        initial,
    };
    let a = "a".repeat(64);
    let b = "b".repeat(64);
    let out = f.apply(vec![
        cluster(root(&a, true), 1_000),
        cluster(root(&b, true), 1_100), // a joiner's "initial" changes nothing
        cluster(
            ClusterOp::Admit {
                node: 2,
                key_sha256: "k2".into(),
                token: None,
            },
            1_200,
        ),
        cluster(ClusterOp::Retire { node: 2 }, 1_300),
        cluster(
            ClusterOp::Admit {
                node: 2,
                key_sha256: "k2".into(),
                token: None,
            },
            1_400,
        ),
    ]);
    assert_eq!(failed(&out[4]), Some(ErrorCode::GeneralAccessForbidden));
    let record = f.eng.cluster_root_key().unwrap().unwrap();
    assert_eq!(record.sha256, a);
    assert!(record.removed_since);
    assert!(f.eng.cluster_node(2).unwrap().unwrap().retired_at.is_some());
    f.apply(vec![cluster(root(&b, false), 1_500)]);
    let record = f.eng.cluster_root_key().unwrap().unwrap();
    assert_eq!(record.sha256, b);
    assert!(!record.removed_since);
}

#[test]
fn a_placement_policy_is_kept_only_if_it_can_be_in_force() {
    use model::command::ClusterOp;
    use model::schema::Placement;
    let mut f = Fixture::new();
    let regions = |rs: &[&str]| rs.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    let good = Placement {
        voters: regions(&["a", "b", "c"]),
        learners: regions(&["d"]),
        leader_region: Some("a".into()),
    };
    let bad = [
        Placement {
            leader_region: Some("d".into()), // a read-replica region cannot lead
            ..good.clone()
        },
        Placement {
            learners: regions(&["a"]), // named twice
            ..good.clone()
        },
        Placement {
            voters: vec![],
            ..good.clone()
        },
        Placement {
            voters: regions(&["a/b"]),
            ..Placement::default()
        },
    ];
    assert_eq!(f.eng.cluster_placement().unwrap(), Placement::default());
    let mut ops = vec![cluster(ClusterOp::SetPlacement(good.clone()), 1_000)];
    ops.extend(
        bad.iter()
            .map(|p| cluster(ClusterOp::SetPlacement(p.clone()), 1_100)),
    );
    let out = f.apply(ops);
    for o in &out[1..] {
        assert_eq!(failed(o), Some(ErrorCode::GeneralArgumentInvalid));
    }
    assert_eq!(f.eng.cluster_placement().unwrap(), good);
    assert!(good.votes("b") && !good.votes("d") && !good.votes("elsewhere"));
    assert!(Placement::default().votes("elsewhere"));

    let zone = |node, zone: &str| {
        cluster(
            ClusterOp::SetZone {
                node,
                zone: zone.into(),
            },
            1_200,
        )
    };
    let out = f.apply(vec![
        zone(2, "eu-1a"),
        zone(3, "eu 1b"),
        zone(4, "x"),
        zone(4, ""),
    ]);
    assert_eq!(failed(&out[1]), Some(ErrorCode::GeneralArgumentInvalid));
    let zones = f.eng.cluster_zones().unwrap();
    assert_eq!(
        zones.into_iter().collect::<Vec<_>>(),
        vec![(2, "eu-1a".to_string())]
    );
}

fn auth(op: model::command::AuthOp) -> Op {
    Op::Auth(op)
}

fn user(id: &str, email: &str) -> model::auth::User {
    model::auth::User {
        id: id.into(),
        created_at: 0,
        updated_at: 0,
        name: String::new(),
        email: email.into(),
        phone: String::new(),
        password: None,
        registration: 0,
        status: true,
        labels: Vec::new(),
        password_update: None,
        email_verification: false,
        phone_verification: false,
        mfa: false,
        prefs: "{}".into(),
        accessed_at: None,
        totp: None,
        recovery: None,
        password_history: Vec::new(),
    }
}

fn mail(kind: model::auth::MailKind) -> model::auth::Mail {
    model::auth::Mail {
        id: format!("m{}", NEXT_ID.fetch_add(1, Ordering::SeqCst)),
        project: String::new(),
        kind,
        due: 0,
        attempts: 0,
        user_id: String::new(),
        to: String::new(),
        to_name: String::new(),
        secret_of: String::new(),
        expire: 0,
        url: "http://localhost/x".into(),
        phrase: String::new(),
        team_id: String::new(),
        team_name: String::new(),
        inviter: String::new(),
    }
}

fn token(id: &str) -> model::auth::Token {
    model::auth::Token {
        id: id.into(),
        created_at: 0,
        user_id: String::new(),
        secret_sha256: String::new(),
        kind: String::new(),
        expire: 0,
    }
}

#[test]
fn emailed_secrets_are_derived_queued_used_once_and_change_only_what_their_kind_allows() {
    use model::auth::{mail_secret, sha256_hex, MailKind};
    use model::command::{AuthOp, TokenOwner, UserChange};
    let mut f = Fixture::new();
    let out = f.apply(vec![
        env(
            Actor::Operator,
            auth(AuthOp::InitJwtSecret {
                secret: "project-secret".into(),
            }),
            10,
        ),
        env(
            Actor::Guest,
            auth(AuthOp::CreateUser {
                user: Box::new(user("u1", "ann@example.com")),
            }),
            10,
        ),
        env(
            Actor::Guest,
            auth(AuthOp::EmailToken {
                owner: TokenOwner::Email {
                    email: "ann@example.com".into(),
                    create: None,
                },
                token: Box::new(token("t1")),
                mail: Box::new(mail(MailKind::Recovery)),
            }),
            20,
        ),
        // An invitation is an owner's, never a guest's; an unknown address recovers nothing.
        env(
            Actor::Guest,
            auth(AuthOp::EmailToken {
                owner: TokenOwner::Id("u1".into()),
                token: Box::new(token("t2")),
                mail: Box::new(mail(MailKind::Invitation)),
            }),
            20,
        ),
        env(
            Actor::Guest,
            auth(AuthOp::EmailToken {
                owner: TokenOwner::Email {
                    email: "bob@example.com".into(),
                    create: None,
                },
                token: Box::new(token("t3")),
                mail: Box::new(mail(MailKind::Recovery)),
            }),
            20,
        ),
    ]);
    let Outcome::Token(t) = &out[2] else {
        panic!("{out:?}")
    };
    assert_eq!((t.user_id.as_str(), t.kind.as_str()), ("u1", "recovery"));
    assert_eq!(t.expire, 20 + model::auth::TOKEN_TTL_MS);
    let secret = mail_secret("project-secret", MailKind::Recovery, "t1");
    assert_eq!(t.secret_sha256, sha256_hex(&secret));
    assert_eq!(failed(&out[3]), Some(ErrorCode::UserUnauthorized));
    assert_eq!(failed(&out[4]), Some(ErrorCode::UserNotFound));
    let queued = f.eng.view().unwrap().outbox(10).unwrap();
    assert_eq!(queued.len(), 1);
    let m = &queued[0];
    assert_eq!(
        (
            m.to.as_str(),
            m.user_id.as_str(),
            m.secret_of.as_str(),
            m.due
        ),
        ("ann@example.com", "u1", "t1", 20)
    );

    let redeem = |kind: &str, secret: &str, changes: Vec<UserChange>| {
        env(
            Actor::Guest,
            auth(AuthOp::RedeemToken {
                user: "u1".into(),
                kind: kind.into(),
                secret_sha256: sha256_hex(secret),
                changes,
            }),
            30,
        )
    };
    let cred = model::auth::Credential {
        algo: "argon2".into(),
        hash: "h".into(),
        options: String::new(),
    };
    let recover = vec![
        UserChange::Password(Some(cred)),
        UserChange::EmailVerification(true),
    ];
    let out = f.apply(vec![
        // The token does not unblock, label or verify anything else.
        redeem(
            "recovery",
            &secret,
            vec![UserChange::Labels(vec!["admin".into()])],
        ),
        redeem("recovery", &secret, vec![UserChange::Status(true)]),
        // Not a verification's token; not this secret.
        redeem(
            "verification",
            &secret,
            vec![UserChange::EmailVerification(true)],
        ),
        redeem("recovery", "guess", recover.clone()),
        redeem("recovery", &secret, recover.clone()),
        redeem("recovery", &secret, recover.clone()),
    ]);
    let codes: Vec<_> = out.iter().map(failed).collect();
    assert_eq!(
        codes,
        vec![
            Some(ErrorCode::UserUnauthorized),
            Some(ErrorCode::UserUnauthorized),
            Some(ErrorCode::UserInvalidToken),
            Some(ErrorCode::UserInvalidToken),
            None,
            Some(ErrorCode::UserInvalidToken),
        ]
    );
    let view = f.eng.view().unwrap();
    let doc = view
        .document("p", model::auth::users(), "u1")
        .unwrap()
        .unwrap();
    let u = model::auth::User::from_document(&doc);
    assert!(u.email_verification && u.password.is_some());

    // Only the operator (the leader's mail runner) moves the queue.
    let (due, id) = (m.due, m.id.clone());
    let out = f.apply(vec![
        env(
            Actor::Guest,
            auth(AuthOp::MailSent {
                due,
                id: id.clone(),
            }),
            40,
        ),
        env(
            Actor::Operator,
            auth(AuthOp::MailRetry {
                due,
                id: id.clone(),
                next: 1000,
            }),
            40,
        ),
    ]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::UserUnauthorized));
    let queued = f.eng.view().unwrap().outbox(10).unwrap();
    assert_eq!(
        (queued.len(), queued[0].due, queued[0].attempts),
        (1, 1000, 1)
    );
    f.apply(vec![env(
        Actor::Operator,
        auth(AuthOp::MailSent { due: 1000, id }),
        50,
    )]);
    assert!(f.eng.view().unwrap().outbox(10).unwrap().is_empty());
}

#[test]
fn audited_operations_log_the_users_event_once_and_refuse_nesting() {
    use model::command::AuthOp;
    let mut f = Fixture::new();
    let audited = |op: AuthOp, id: &str| AuthOp::Audited {
        op: Box::new(op),
        id: id.into(),
        ip: "127.0.0.1:9".into(),
        user_agent: "ua".into(),
    };
    let create = AuthOp::CreateUser {
        user: Box::new(user("u1", "log@example.com")),
    };
    let nested = audited(
        audited(AuthOp::DeleteSessions { user: "u1".into() }, "l2"),
        "l3",
    );
    let out = f.apply(vec![
        env(Actor::Guest, auth(audited(create, "l1")), 10),
        env(Actor::Guest, auth(nested), 11),
        // A failed operation logs nothing.
        env(
            Actor::Guest,
            auth(audited(AuthOp::DeleteUser { id: "u1".into() }, "l4")),
            12,
        ),
    ]);
    assert!(matches!(out[0], Outcome::User(_)), "{out:?}");
    assert_eq!(failed(&out[1]), Some(ErrorCode::GeneralArgumentInvalid));
    assert_eq!(failed(&out[2]), Some(ErrorCode::UserUnauthorized));
    let logs = |f: &Fixture| {
        let view = f.eng.view().unwrap();
        let spec = model::query::Spec::equal("userId", "u1", 100);
        view.find("p", model::auth::logs(), &spec, false)
            .unwrap()
            .documents
            .iter()
            .map(model::auth::LogEntry::from_document)
            .map(|l| (l.id, l.event, l.mode, l.ip))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        logs(&f),
        vec![(
            "l1".to_string(),
            "user.create".to_string(),
            "default".to_string(),
            "127.0.0.1:9".to_string()
        )]
    );
    // Deleting the user (the operator's, as a key's) takes its log with it.
    let out = f.apply(vec![env(
        Actor::Operator,
        auth(audited(AuthOp::DeleteUser { id: "u1".into() }, "l5")),
        13,
    )]);
    assert!(!matches!(out[0], Outcome::Failed(_)), "{out:?}");
    assert!(logs(&f).is_empty());
}

#[test]
fn a_users_transaction_is_theirs_checked_with_their_roles_and_bounded() {
    use model::command::AuthOp;
    let mut f = Fixture::new();
    let session = |id: &str, user: &str| model::auth::Session {
        id: id.into(),
        expire: 1_000_000,
        secret_sha256: format!("hash-of-{id}"),
        ..model::auth::Session::unbound(user)
    };
    let sign_up = |u: &str, s: &str| {
        env(
            Actor::Guest,
            auth(AuthOp::CreateSession {
                session: Box::new(session(s, u)),
                proof: None,
                max: 10,
                user: Some(Box::new(user(u, &format!("{u}@example.com")))),
                rehash: None,
            }),
            10,
        )
    };
    let ann = Actor::User {
        id: "ann".into(),
        session: "s1".into(),
    };
    let bob = Actor::User {
        id: "bob".into(),
        session: "s2".into(),
    };
    let tx = |who: &Actor, op, at| env(who.clone(), Op::Transactions(op), at);
    let row = |id: &str, n: i64| match create(id, n, id) {
        Op::Documents(DocumentsOp::Write { ops }) => ops,
        _ => unreachable!(),
    };
    let out = f.apply(vec![
        sign_up("ann", "s1"),
        sign_up("bob", "s2"),
        tx(
            &ann,
            TransactionOp::Create {
                id: "t1".into(),
                ttl_ms: 60_000,
            },
            10,
        ),
        // The table grants users nothing yet: staging a row is refused at once.
        tx(
            &ann,
            TransactionOp::Stage {
                id: "t1".into(),
                ops: row("a", 1),
            },
            10,
        ),
        // Another user, and a guest, are told it does not exist.
        tx(
            &bob,
            TransactionOp::Stage {
                id: "t1".into(),
                ops: row("b", 2),
            },
            10,
        ),
        tx(&bob, TransactionOp::Commit { id: "t1".into() }, 10),
        tx(
            &Actor::Guest,
            TransactionOp::Create {
                id: "t2".into(),
                ttl_ms: 60_000,
            },
            10,
        ),
    ]);
    assert!(matches!(out[1], Outcome::Session(_)), "{out:?}");
    assert!(matches!(out[2], Outcome::Transaction(_)), "{out:?}");
    assert_eq!(failed(&out[3]), Some(ErrorCode::UserUnauthorized));
    assert_eq!(failed(&out[4]), Some(ErrorCode::TransactionNotFound));
    assert_eq!(failed(&out[5]), Some(ErrorCode::TransactionNotFound));
    assert_eq!(failed(&out[6]), Some(ErrorCode::UserUnauthorized));

    let grant = |perms: &[&str]| {
        env(
            Actor::Operator,
            Op::Schema(SchemaOp::UpdateCollection {
                database: "d".into(),
                id: "c".into(),
                name: None,
                permissions: Some(perms.iter().map(|p| p.to_string()).collect()),
                document_security: Some(true),
                enabled: None,
            }),
            11,
        )
    };
    let bulk = vec![DocTarget {
        database: "d".into(),
        collection: "c".into(),
        op: DocOp::DeleteWhere {
            spec: model::query::Spec::parse(&[]).unwrap(),
        },
    }];
    let out = f.apply(vec![
        grant(&["create(\"users\")"]),
        tx(
            &ann,
            TransactionOp::Stage {
                id: "t1".into(),
                ops: row("a", 1),
            },
            11,
        ),
        tx(
            &ann,
            TransactionOp::Stage {
                id: "t1".into(),
                ops: bulk,
            },
            11,
        ),
        // Granting a role the user does not hold is refused when staged.
        tx(
            &ann,
            TransactionOp::Stage {
                id: "t1".into(),
                ops: vec![DocTarget {
                    database: "d".into(),
                    collection: "c".into(),
                    op: DocOp::Create {
                        id: "z".into(),
                        data: [("n".to_string(), Value::Int(0))].into_iter().collect(),
                        permissions: Some(vec!["read(\"user:bob\")".into()]),
                    },
                }],
            },
            11,
        ),
    ]);
    assert!(matches!(out[1], Outcome::Transaction(_)), "{out:?}");
    assert_eq!(failed(&out[2]), Some(ErrorCode::UserUnauthorized));
    assert_eq!(failed(&out[3]), Some(ErrorCode::UserUnauthorized));
    let view = f.eng.view().unwrap();
    assert_eq!(
        view.transaction("p", "t1")
            .unwrap()
            .unwrap()
            .operations
            .len(),
        1
    );
    assert_eq!(
        view.transaction_owner("p", "t1").unwrap().as_deref(),
        Some("ann")
    );
    assert_eq!(view.user_transactions("p", "ann").unwrap().len(), 1);
    assert!(view.user_transactions("p", "bob").unwrap().is_empty());

    // Committed with the roles the user has then: the grant is gone, so is the commit.
    let out = f.apply(vec![
        grant(&[]),
        tx(&ann, TransactionOp::Commit { id: "t1".into() }, 12),
    ]);
    assert_eq!(failed(&out[1]), Some(ErrorCode::TransactionFailed));
    assert!(f.rows().is_empty());

    // Granted again, a new transaction commits; the row is the user's.
    let out = f.apply(vec![
        grant(&["create(\"users\")"]),
        tx(
            &ann,
            TransactionOp::Create {
                id: "t3".into(),
                ttl_ms: 60_000,
            },
            13,
        ),
        tx(
            &ann,
            TransactionOp::Stage {
                id: "t3".into(),
                ops: row("a", 1),
            },
            13,
        ),
        tx(&ann, TransactionOp::Commit { id: "t3".into() }, 13),
    ]);
    assert!(matches!(out[3], Outcome::Transaction(_)), "{out:?}");
    assert_eq!(f.rows(), vec![("a".into(), Value::Int(1))]);
    let coll = f
        .eng
        .view()
        .unwrap()
        .collection("p", "d", "c")
        .unwrap()
        .unwrap();
    let a = f
        .eng
        .view()
        .unwrap()
        .document("p", &coll, "a")
        .unwrap()
        .unwrap();
    assert!(
        a.permissions.contains(&"update(\"user:ann\")".to_string()),
        "{:?}",
        a.permissions
    );

    // At most MAX_USER_TRANSACTIONS open at once; finished and expired ones make room.
    let max = super::transactions::MAX_USER_TRANSACTIONS;
    let open: Vec<Envelope> = (0..max)
        .map(|i| {
            tx(
                &bob,
                TransactionOp::Create {
                    id: format!("b{i}"),
                    ttl_ms: 60_000,
                },
                14,
            )
        })
        .collect();
    let out = f.apply(open);
    assert!(
        out.iter().all(|o| matches!(o, Outcome::Transaction(_))),
        "{out:?}"
    );
    let out = f.apply(vec![tx(
        &bob,
        TransactionOp::Create {
            id: "over".into(),
            ttl_ms: 60_000,
        },
        15,
    )]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::TransactionLimitExceeded));
    // After the first ones expire, a new one clears them.
    let out = f.apply(vec![tx(
        &bob,
        TransactionOp::Create {
            id: "later".into(),
            ttl_ms: 60_000,
        },
        60_014,
    )]);
    assert!(matches!(out[0], Outcome::Transaction(_)), "{out:?}");
    let view = f.eng.view().unwrap();
    assert_eq!(view.user_transactions("p", "bob").unwrap().len(), 1);
    assert!(view.transaction("p", "b0").unwrap().is_none());
    assert!(view.transaction_owner("p", "b0").unwrap().is_none());

    // A key may delete a user's transaction; deleting the user takes the rest.
    let key = key_actor(&["rows.write"]);
    let out = f.apply(vec![
        tx(&key, TransactionOp::Delete { id: "t3".into() }, 60_015),
        env(
            Actor::Operator,
            auth(AuthOp::DeleteUser { id: "bob".into() }),
            60_015,
        ),
    ]);
    assert!(
        !out.iter().any(|o| matches!(o, Outcome::Failed(_))),
        "{out:?}"
    );
    let view = f.eng.view().unwrap();
    let ids = |u: &str| -> Vec<String> {
        view.user_transactions("p", u)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect()
    };
    // Her failed t1 was cleared when she made t3; t3 went with the key's delete.
    assert!(ids("ann").is_empty());
    assert!(view.transaction("p", "t1").unwrap().is_none());
    assert!(view.transaction_owner("p", "t3").unwrap().is_none());
    assert!(view.user_transactions("p", "bob").unwrap().is_empty());
    assert!(view.transaction("p", "later").unwrap().is_none());
}

#[test]
fn changes_are_recorded_per_envelope_only_for_what_was_kept() {
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let tx = |op| env(w.clone(), Op::Transactions(op), 10);
    let write = |op: Op| match op {
        Op::Documents(DocumentsOp::Write { ops }) => ops,
        _ => unreachable!(),
    };
    f.index += 1;
    let (out, changes) = f
        .eng
        .apply_entry(
            Some(&Batch(vec![
                env(w.clone(), create("a", 1, "x"), 10),
                // Fails (unique name): it records nothing.
                env(w.clone(), create("b", 2, "x"), 10),
                tx(TransactionOp::Create {
                    id: "t".into(),
                    ttl_ms: 60_000,
                }),
                // Staged: tried in the overlay and undone, nothing recorded.
                tx(TransactionOp::Stage {
                    id: "t".into(),
                    ops: [
                        write(create("c", 3, "y")),
                        write(increment("c")),
                        write(increment("a")),
                    ]
                    .concat(),
                }),
            ])),
            f.index,
            b"r",
        )
        .unwrap();
    assert_eq!(failed(&out[1]), Some(ErrorCode::DocumentUniqueViolation));
    let ids = |env: &Vec<model::change::Change>| {
        env.iter()
            .map(|c| (c.id().to_string(), c.action))
            .collect::<Vec<_>>()
    };
    use model::change::Action;
    assert_eq!(changes.len(), 4);
    assert_eq!(ids(&changes[0]), vec![("a".to_string(), Action::Create)]);
    assert!(changes[1].is_empty() && changes[2].is_empty() && changes[3].is_empty());
    let c = &changes[0][0];
    assert!(c.old.is_none() && c.new.is_some() && c.enabled && c.tablesdb);
    assert_eq!(c.at, 10);

    // The commit: one change per row, first old to last new, after nothing else.
    f.index += 1;
    let (_, changes) = f
        .eng
        .apply_entry(
            Some(&Batch(vec![tx(TransactionOp::Commit { id: "t".into() })])),
            f.index,
            b"r",
        )
        .unwrap();
    assert_eq!(
        ids(&changes[0]),
        vec![
            ("c".to_string(), Action::Create),
            ("a".to_string(), Action::Update)
        ]
    );
    let c = &changes[0][0];
    assert!(c.old.is_none());
    assert_eq!(c.new.as_ref().unwrap().get("n"), Value::Int(4));
    let a = &changes[0][1];
    assert_eq!(a.old.as_ref().unwrap().get("n"), Value::Int(1));
    assert_eq!(a.new.as_ref().unwrap().get("n"), Value::Int(2));
}

/// A write of one row with operators (an update, or an upsert).
fn operate(id: &str, ops: &[(&str, serde_json::Value)], upsert: bool) -> Vec<DocTarget> {
    let ops: model::command::Ops = ops
        .iter()
        .map(|(k, v)| {
            let op = model::operator::Operator::detect(&serde_json::json!(v.to_string()));
            (k.to_string(), op.unwrap().unwrap())
        })
        .collect();
    let data = model::command::Data::new();
    let op = match upsert {
        true => DocOp::upsert(id.into(), data, ops, None),
        false => DocOp::update(id.into(), data, ops, None),
    };
    vec![DocTarget {
        database: "d".into(),
        collection: "c".into(),
        op,
    }]
}

fn write(ops: Vec<DocTarget>) -> Op {
    Op::Documents(DocumentsOp::Write { ops })
}

#[test]
fn operators_compute_from_the_row_as_the_log_has_it() {
    use serde_json::json;
    let mut f = Fixture::new();
    let w = key_actor(&["rows.write"]);
    let tags = Attribute {
        array: true,
        ..Attribute::new("tags", AttrKind::Integer, 0)
    };
    f.apply(vec![schema(
        SchemaOp::CreateAttribute {
            database: "d".into(),
            collection: "c".into(),
            attribute: tags,
        },
        5,
    )]);
    f.apply(vec![env(w.clone(), create("a", 10, "x"), 10)]);
    let row = |f: &Fixture, id: &str| {
        let view = f.eng.view().unwrap();
        let coll = view.collection("p", "d", "c").unwrap().unwrap();
        view.document("p", &coll, id).unwrap()
    };
    // Two increments and two appends in one entry: each sees the one before it.
    let inc = || {
        operate(
            "a",
            &[("n", json!({"method": "increment", "values": [5]}))],
            false,
        )
    };
    let append = |x: i64| {
        operate(
            "a",
            &[("tags", json!({"method": "arrayAppend", "values": [x]}))],
            false,
        )
    };
    let out = f.apply(vec![
        env(w.clone(), write(inc()), 11),
        env(w.clone(), write(inc()), 11),
        env(w.clone(), write(append(1)), 11),
        env(w.clone(), write(append(2)), 11),
    ]);
    assert!(out.iter().all(|o| failed(o).is_none()), "{out:?}");
    let a = row(&f, "a").unwrap();
    assert_eq!(a.get("n"), Value::Int(20));
    assert_eq!(
        a.get("tags"),
        Value::Array(vec![Value::Int(1), Value::Int(2)])
    );
    // An upsert that creates starts from the defaults (none here: zero and empty).
    let both = [
        ("n", json!({"method": "increment", "values": [5]})),
        ("tags", json!({"method": "arrayAppend", "values": [7]})),
    ];
    let out = f.apply(vec![env(w.clone(), write(operate("b", &both, true)), 12)]);
    assert_eq!(failed(&out[0]), None, "{out:?}");
    let b = row(&f, "b").unwrap();
    assert_eq!(b.get("n"), Value::Int(5));
    assert_eq!(b.get("tags"), Value::Array(vec![Value::Int(7)]));
    // Misuse fails alone and changes nothing: an array operator on a scalar, an item the
    // column cannot hold, an update of a row that does not exist.
    let wrong = operate(
        "a",
        &[("n", json!({"method": "arrayAppend", "values": [1]}))],
        false,
    );
    let bad_item = operate(
        "a",
        &[("tags", json!({"method": "arrayAppend", "values": ["text"]}))],
        false,
    );
    let out = f.apply(vec![
        env(w.clone(), write([wrong, inc()].concat()), 13),
        env(w.clone(), write(bad_item), 13),
        env(w.clone(), write(operate("zz", &both, false)), 13),
    ]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::DocumentInvalidStructure));
    assert_eq!(failed(&out[1]), Some(ErrorCode::DocumentInvalidStructure));
    assert_eq!(failed(&out[2]), Some(ErrorCode::DocumentNotFound));
    let Outcome::Failed(e) = &out[0] else {
        unreachable!()
    };
    assert_eq!(
        e.message.text(),
        "Invalid document structure: Cannot apply arrayAppend operator to non-array field 'n'"
    );
    assert_eq!(row(&f, "a").unwrap(), a);
    // In a transaction, staged appends apply in order at commit.
    let tx = |op| env(w.clone(), Op::Transactions(op), 14);
    let out = f.apply(vec![
        tx(TransactionOp::Create {
            id: "t".into(),
            ttl_ms: 60_000,
        }),
        tx(TransactionOp::Stage {
            id: "t".into(),
            ops: [append(3), append(4), inc()].concat(),
        }),
        tx(TransactionOp::Commit { id: "t".into() }),
    ]);
    assert!(out.iter().all(|o| failed(o).is_none()), "{out:?}");
    let a = row(&f, "a").unwrap();
    assert_eq!(a.get("n"), Value::Int(25));
    let ints = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
    assert_eq!(a.get("tags"), ints(&[1, 2, 3, 4]));
}

fn audited(op: Op) -> Op {
    Op::Audited {
        op: Box::new(op),
        client: model::command::Client {
            ip: "10.0.0.1".into(),
            user_agent: "t".into(),
            one_row: false,
        },
    }
}

fn usage_now(
    f: &Fixture,
    scope: &model::usage::Scope,
    metric: model::usage::Metric,
    at: i64,
) -> i64 {
    let view = f.eng.view().unwrap();
    let period = model::usage::Period::Hour;
    view.usage_series("p", scope, metric, period, &[period.bucket(at)])
        .unwrap()[0]
}

#[test]
fn usage_counts_what_applied_and_nothing_a_failure_did() {
    use model::usage::{Metric, Scope};
    let mut f = Fixture::new();
    // The operator: the fixture's key has expired by these times.
    let k = || Actor::Operator;
    let at = 3_600_000 * 10;
    let out = f.apply(vec![
        env(k(), create("a", 1, "a"), at),
        env(k(), create("b", 2, "b"), at),
        // Refused (unique name): counts nothing.
        env(k(), create("x", 3, "a"), at),
        env(k(), increment("a"), at),
    ]);
    assert_eq!(failed(&out[2]), Some(ErrorCode::DocumentUniqueViolation));
    let db = Scope::Database("d".into());
    let coll = Scope::Collection("d".into(), "c".into());
    assert_eq!(usage_now(&f, &Scope::Project, Metric::Writes, at), 3);
    assert_eq!(usage_now(&f, &db, Metric::Documents, at), 2);
    assert_eq!(usage_now(&f, &coll, Metric::Documents, at), 2);
    let bytes = f.eng.view().unwrap().usage_storage("p", &coll).unwrap();
    assert!(bytes > 0);
    assert_eq!(usage_now(&f, &Scope::Project, Metric::Storage, at), bytes);
    // Reads reported by a node land in their hour; only the operator reports them.
    let reads = Op::Usage(model::command::UsageOp::Reads {
        counts: vec![model::command::ReadCount {
            database: "d".into(),
            hour: at / 1000,
            reads: 7,
        }],
    });
    let out = f.apply(vec![
        env(key_actor(&["rows.write"]), reads.clone(), at),
        env(Actor::Operator, reads, at),
    ]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::UserUnauthorized));
    assert_eq!(usage_now(&f, &db, Metric::Reads, at), 7);
    // Deleting the table takes its rows and bytes back out, in the hour it happens.
    let later = at + 3_600_000;
    f.apply(vec![schema(
        SchemaOp::DeleteCollection {
            database: "d".into(),
            id: "c".into(),
        },
        later,
    )]);
    assert_eq!(usage_now(&f, &db, Metric::Documents, later), -2);
    assert_eq!(usage_now(&f, &db, Metric::Collections, later), -1);
    assert_eq!(
        usage_now(&f, &Scope::Project, Metric::Storage, later),
        -bytes
    );
    let view = f.eng.view().unwrap();
    assert_eq!(view.usage_storage("p", &Scope::Project).unwrap(), 0);
    assert_eq!(view.usage_storage("p", &coll).unwrap(), 0);
    // The hour before is as it was.
    assert_eq!(usage_now(&f, &db, Metric::Documents, at), 2);
}

#[test]
fn the_audit_trail_keeps_a_bounded_recent_history() {
    let mut f = Fixture::new();
    let k = || Actor::Operator;
    let day = 24 * 3_600_000;
    f.apply(vec![env(k(), audited(create("a", 1, "a")), day)]);
    // A refused write leaves no entry; an unaudited one neither.
    f.apply(vec![
        env(k(), audited(create("a", 1, "a")), day),
        env(k(), increment("a"), day),
    ]);
    let entries = |f: &Fixture| {
        let view = f.eng.view().unwrap();
        let spec = model::query::Spec::parse(&[]).unwrap();
        view.find("p", model::audit::collection(), &spec, true)
            .unwrap()
            .documents
            .iter()
            .map(|d| {
                let e = model::audit::Entry::from_document(d);
                (e.resource, e.event, e.ip, e.user_type)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        entries(&f),
        vec![(
            "database/d/collection/c/document/a".to_string(),
            "document.create".to_string(),
            "10.0.0.1".to_string(),
            "console".to_string()
        )]
    );
    // Nested audits are refused.
    let out = f.apply(vec![env(k(), audited(audited(increment("a"))), day)]);
    assert_eq!(failed(&out[0]), Some(ErrorCode::GeneralArgumentInvalid));
    // Fifteen days on, the next audited write removes the expired entry.
    f.apply(vec![env(k(), audited(increment("a")), 16 * day)]);
    let left = entries(&f);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, "document.update");
}

#[test]
fn usage_counted_in_an_entry_is_written_before_a_delete_in_it_reads_the_totals() {
    use model::usage::{Metric, Scope};
    let mut f = Fixture::new();
    let at = 3_600_000 * 20;
    // One entry: two rows made, then their table deleted.
    f.apply(vec![
        env(Actor::Operator, create("a", 1, "a"), at),
        env(Actor::Operator, create("b", 2, "b"), at),
        schema(
            SchemaOp::DeleteCollection {
                database: "d".into(),
                id: "c".into(),
            },
            at,
        ),
    ]);
    let view = f.eng.view().unwrap();
    assert_eq!(view.usage_storage("p", &Scope::Project).unwrap(), 0);
    assert_eq!(
        view.usage_storage("p", &Scope::Database("d".into()))
            .unwrap(),
        0
    );
    // Made and removed within the hour: the rows and the table net to nothing, or less.
    assert_eq!(
        usage_now(&f, &Scope::Database("d".into()), Metric::Documents, at),
        0
    );
    assert_eq!(usage_now(&f, &Scope::Project, Metric::Writes, at), 2);
}
