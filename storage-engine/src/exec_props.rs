//! The executor against brute force: random schemas, indexes, rows and queries; every page
//! and total the planner and executor produce must equal the one computed by filtering,
//! sorting and paginating every stored row.

use crate::engine::{decode_document, Engine, CF_DOCS};
use crate::exec::TOTAL_CAP;
use crate::keys;
use crate::read::paginate_with_limit;
use model::command::{Actor, Batch, DocOp, DocTarget, DocumentsOp, Envelope, Op, ProjectOp};
use model::command::{RequestId, SchemaOp};
use model::query::{Spec, DEFAULT_LIMIT};
use model::reader::StateReader;
use model::schema::{AttrKind, Attribute, Collection, Database, Document, Index, IndexKind};
use model::{Error, Order, Outcome, Value};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

struct World {
    _dir: tempfile::TempDir,
    eng: Engine,
    index: u64,
    next_rid: u128,
    at: i64,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let eng = Engine::open(dir.path()).unwrap();
        World {
            _dir: dir,
            eng,
            index: 0,
            next_rid: 1,
            at: 1_700_000_000_000,
        }
    }

    fn apply(&mut self, ops: Vec<Op>) -> Vec<Outcome> {
        let envs = ops
            .into_iter()
            .map(|op| {
                self.next_rid += 1;
                self.at += 1;
                Envelope {
                    at: self.at,
                    ..Envelope::new("p", RequestId(self.next_rid), Actor::Operator, op)
                }
            })
            .collect();
        self.index += 1;
        self.eng
            .apply_entry(Some(&Batch(envs)), self.index, b"r")
            .unwrap()
            .0
    }

    fn coll(&self) -> Collection {
        let view = self.eng.view().unwrap();
        view.collection("p", "d", "c").unwrap().unwrap()
    }

    /// Every stored row, read straight from the documents keyspace.
    fn all(&self, coll: &Collection) -> Vec<Document> {
        let prefix = keys::prefix(&["p", "d", "c"]);
        let db = &self.eng.db;
        db.prefix_iterator_cf(self.eng.cf(CF_DOCS), &prefix)
            .map(|r| r.unwrap())
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| decode_document(coll, &k, &v).unwrap())
            .collect()
    }
}

const ATTRS: [(&str, AttrKind, bool); 6] = [
    ("i", AttrKind::Integer, false),
    ("f", AttrKind::Float, false),
    ("s", AttrKind::String, false),
    ("b", AttrKind::Boolean, false),
    ("t", AttrKind::String, true),
    ("d", AttrKind::Datetime, false),
];
const STRS: [&str; 7] = ["", "a", "ab", "abc", "b", "ba", "a b"];
const TAGS: [&str; 4] = ["x", "y", "z", "xy"];
const DATES: [&str; 4] = [
    "2024-01-01T00:00:00.000+00:00",
    "2024-01-02T00:00:00.000+00:00",
    "2024-02-01T12:30:00.000+00:00",
    "2025-01-01T00:00:00.000+00:00",
];

fn random_value(rng: &mut StdRng, attr: &str) -> Json {
    if rng.gen_bool(0.12) {
        return Json::Null;
    }
    match attr {
        "i" => json!(rng.gen_range(-2..5)),
        "f" => json!([-1.5, 0.0, -0.0, 0.5, 2.0, 3.25][rng.gen_range(0..6)]),
        "s" => json!(STRS.choose(rng).unwrap()),
        "b" => json!(rng.gen_bool(0.5)),
        "t" => {
            let n = rng.gen_range(0..3);
            json!((0..n)
                .map(|_| *TAGS.choose(rng).unwrap())
                .collect::<Vec<_>>())
        }
        "d" => json!(DATES.choose(rng).unwrap()),
        _ => unreachable!(),
    }
}

/// A query value for `attr`, sometimes of the other numeric type or out of the column's
/// range of values, so the planner's conversions are exercised.
fn query_value(rng: &mut StdRng, attr: &str) -> Json {
    match attr {
        "i" => match rng.gen_range(0..7) {
            0 => json!(rng.gen_range(-2..5) as f64),
            1 => json!(1.5),
            2 => json!(-0.0),
            _ => json!(rng.gen_range(-3..6)),
        },
        "f" => match rng.gen_range(0..4) {
            0 => json!(rng.gen_range(-1..4)),
            _ => json!([-1.5, 0.0, -0.0, 0.5, 2.0, 3.25, 1.0][rng.gen_range(0..7)]),
        },
        "s" => json!(STRS.choose(rng).unwrap()),
        "b" => json!(rng.gen_bool(0.5)),
        "t" => json!(TAGS.choose(rng).unwrap()),
        "d" => json!(DATES.choose(rng).unwrap()),
        "$id" => json!(format!("r{}", rng.gen_range(0..40))),
        "$sequence" => json!(rng.gen_range(0..60)),
        _ => unreachable!(),
    }
}

fn q(method: &str, attr: &str, values: Vec<Json>) -> Json {
    json!({"method": method, "attribute": attr, "values": values})
}

fn random_filter(rng: &mut StdRng, attrs: &[&str], fulltext: bool, depth: usize) -> Json {
    let attr = *attrs.choose(rng).unwrap();
    let n = rng.gen_range(1..4);
    if depth < 2 && rng.gen_bool(0.15) {
        let method = if rng.gen_bool(0.7) { "or" } else { "and" };
        // Often an `or` of equalities on one attribute: the planner reads it as one `in`.
        let same = rng.gen_bool(0.5);
        let parts: Vec<Json> = (0..rng.gen_range(2..4))
            .map(|_| match same && attr != "t" {
                true => q("equal", attr, vec![query_value(rng, attr)]),
                false => random_filter(rng, attrs, fulltext, depth + 1),
            })
            .collect();
        return json!({"method": method, "values": parts});
    }
    if fulltext && rng.gen_bool(0.1) {
        let words = ["a", "ab", "b", "ba c", "x"];
        return q("search", "s", vec![json!(words.choose(rng).unwrap())]);
    }
    if rng.gen_bool(0.05) {
        let sys = ["$id", "$sequence"].choose(rng).unwrap();
        let m = ["equal", "greaterThan", "lessThanEqual"]
            .choose(rng)
            .unwrap();
        let vals = (0..if *m == "equal" { n } else { 1 })
            .map(|_| query_value(rng, sys))
            .collect();
        return q(m, sys, vals);
    }
    if rng.gen_bool(0.08) {
        let m = if rng.gen_bool(0.5) {
            "isNull"
        } else {
            "isNotNull"
        };
        return json!({"method": m, "attribute": attr});
    }
    if rng.gen_bool(0.05) {
        let m = ["exists", "notExists"].choose(rng).unwrap();
        let names: Vec<&str> = (0..rng.gen_range(1..3))
            .map(|_| *attrs.choose(rng).unwrap())
            .collect();
        return json!({"method": m, "values": names});
    }
    if attr == "s" && rng.gen_bool(0.1) {
        let pattern = ["^a", "b$", "A", "a.b", "^$", "^(a|b)+$", "[ ]"]
            .choose(rng)
            .unwrap();
        return q("regex", attr, vec![json!(pattern)]);
    }
    if attr == "t" {
        let m = ["contains", "contains", "notContains"].choose(rng).unwrap();
        return q(m, attr, (0..n).map(|_| query_value(rng, "t")).collect());
    }
    let mut methods = vec![
        "equal",
        "equal",
        "equal",
        "notEqual",
        "lessThan",
        "lessThanEqual",
        "greaterThan",
        "greaterThanEqual",
        "between",
    ];
    if attr == "s" {
        methods.extend(["startsWith", "startsWith", "endsWith", "contains"]);
    }
    let m = *methods.choose(rng).unwrap();
    let vals = match m {
        "equal" | "notEqual" => (0..n).map(|_| query_value(rng, attr)).collect(),
        "between" => {
            let mut a = [query_value(rng, attr), query_value(rng, attr)];
            if rng.gen_bool(0.7) {
                a.sort_by(|x, y| {
                    Value::from_json(x)
                        .unwrap()
                        .total_cmp(&Value::from_json(y).unwrap())
                });
            }
            a.to_vec()
        }
        _ => vec![query_value(rng, attr)],
    };
    q(m, attr, vals)
}

fn random_index(rng: &mut StdRng, key: &str, attrs: &[&str]) -> Index {
    let mut picked: Vec<&str> = attrs.to_vec();
    picked.shuffle(rng);
    picked.truncate(rng.gen_range(1..=3.min(picked.len())));
    // At most one array column per index.
    if let Some(p) = picked.iter().position(|a| *a == "t") {
        picked.retain(|a| *a != "t");
        picked.insert(p.min(picked.len()), "t");
    }
    let unique = rng.gen_bool(0.15) && !picked.contains(&"t");
    Index {
        key: key.into(),
        kind: if unique {
            IndexKind::Unique
        } else {
            IndexKind::Key
        },
        attributes: picked.iter().map(|s| s.to_string()).collect(),
        orders: picked
            .iter()
            .map(|_| {
                if rng.gen_bool(0.35) {
                    Order::Desc
                } else {
                    Order::Asc
                }
            })
            .collect(),
        lengths: vec![],
        status: Default::default(),
        created_at: 0,
        updated_at: 0,
    }
}

fn data(rng: &mut StdRng, attrs: &[&str]) -> model::command::Data {
    let mut out = model::command::Data::new();
    for a in attrs {
        if rng.gen_bool(0.9) {
            out.insert(
                a.to_string(),
                Value::from_json(&random_value(rng, a)).unwrap(),
            );
        }
    }
    out
}

fn target(op: DocOp) -> Op {
    Op::Documents(DocumentsOp::Write {
        ops: vec![DocTarget {
            database: "d".into(),
            collection: "c".into(),
            op,
        }],
    })
}

/// A world with a random schema, indexes and rows (some updated, some deleted).
fn random_world(rng: &mut StdRng, rows: usize) -> (World, Vec<&'static str>, bool) {
    let mut w = World::new();
    let mut attrs: Vec<&'static str> = ATTRS.iter().map(|a| a.0).collect();
    attrs.shuffle(rng);
    attrs.truncate(rng.gen_range(2..=ATTRS.len()));
    let fulltext = attrs.contains(&"s") && rng.gen_bool(0.3);
    let mut indexes: Vec<Index> = (0..rng.gen_range(0..4))
        .map(|i| random_index(rng, &format!("ix{i}"), &attrs))
        .collect();
    if fulltext {
        indexes.push(Index {
            key: "ft".into(),
            kind: IndexKind::Fulltext,
            attributes: vec!["s".into()],
            orders: vec![],
            lengths: vec![],
            status: Default::default(),
            created_at: 0,
            updated_at: 0,
        });
    }
    let attributes = ATTRS
        .iter()
        .filter(|a| attrs.contains(&a.0))
        .map(|(key, kind, array)| Attribute {
            array: *array,
            size: kind.is_string().then_some(20),
            ..Attribute::new(key, *kind, 0)
        })
        .collect();
    let setup = vec![
        Op::Projects(ProjectOp::Create { name: "P".into() }),
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
        Op::Schema(SchemaOp::CreateCollection {
            collection: Collection {
                id: "c".into(),
                database: "d".into(),
                name: "c".into(),
                enabled: true,
                permissions: vec![],
                document_security: false,
                attributes,
                indexes,
                reshapes: vec![],
                relations: Default::default(),
                created_at: 0,
                updated_at: 0,
            },
        }),
    ];
    for o in w.apply(setup) {
        assert!(!matches!(o, Outcome::Failed(_)), "{o:?}");
    }
    for i in 0..rows {
        let op = DocOp::Create {
            id: format!("r{i}"),
            data: data(rng, &attrs),
            permissions: Some(random_permissions(rng)),
        };
        w.apply(vec![target(op)]);
        if rng.gen_bool(0.15) {
            let id = format!("r{}", rng.gen_range(0..=i));
            let op = match rng.gen_bool(0.7) {
                true => DocOp::Update {
                    id,
                    data: data(rng, &attrs),
                    permissions: rng.gen_bool(0.5).then(|| random_permissions(rng)),
                },
                false => DocOp::Delete { id },
            };
            w.apply(vec![target(op)]);
        }
    }
    (w, attrs, fulltext)
}

/// Roles rows grant and callers hold in these worlds.
const ROLES: [&str; 6] = [
    "any",
    "users",
    "user:u1",
    "user:u2",
    "team:t1",
    "team:t1/owner",
];

/// A row's own permissions: read for a few roles (or none), sometimes an update.
fn random_permissions(rng: &mut StdRng) -> Vec<String> {
    let mut out: Vec<String> = ROLES
        .iter()
        .filter(|_| rng.gen_bool(0.25))
        .map(|r| format!("read(\"{r}\")"))
        .collect();
    if rng.gen_bool(0.3) {
        out.push(r#"update("user:u1")"#.to_string());
    }
    out
}

/// The filter a user's list carries: rows some of whose read roles the caller holds.
fn readable_by(rng: &mut StdRng) -> model::query::Filter {
    model::query::Filter::readable_by(
        ROLES
            .iter()
            .filter(|_| rng.gen_bool(0.4))
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
    )
}

fn random_spec(rng: &mut StdRng, attrs: &[&str], fulltext: bool, ids: &[String]) -> Vec<String> {
    let mut out: Vec<Json> = (0..rng.gen_range(0..4))
        .map(|_| random_filter(rng, attrs, fulltext, 0))
        .collect();
    let orderable: Vec<&str> = attrs
        .iter()
        .copied()
        .filter(|a| *a != "t")
        .chain(["$sequence", "$id", "$createdAt"])
        .collect();
    for _ in 0..rng.gen_range(0..3) {
        let a = *orderable.choose(rng).unwrap();
        let m = if rng.gen_bool(0.5) {
            "orderAsc"
        } else {
            "orderDesc"
        };
        out.push(json!({"method": m, "attribute": a}));
    }
    if rng.gen_bool(0.8) {
        out.push(json!({"method": "limit", "values": [rng.gen_range(0..30)]}));
    }
    if rng.gen_bool(0.4) {
        out.push(json!({"method": "offset", "values": [rng.gen_range(0..12)]}));
    }
    if !ids.is_empty() && rng.gen_bool(0.35) {
        let m = if rng.gen_bool(0.5) {
            "cursorAfter"
        } else {
            "cursorBefore"
        };
        out.push(json!({"method": m, "values": [ids.choose(rng).unwrap()]}));
    } else if rng.gen_bool(0.1) {
        // Where it falls among the orders matters: those before it still sort.
        let at = rng.gen_range(0..=out.len());
        out.insert(at, json!({"method": "orderRandom"}));
    }
    if rng.gen_bool(0.2) {
        out.push(json!({"method": "select", "values": ["*"]}));
    }
    out.iter().map(|q| q.to_string()).collect()
}

/// What a list must answer, computed from every row.
fn brute_force(all: &[Document], spec: &Spec) -> (Vec<String>, u64) {
    let mut docs: Vec<Document> = all.iter().filter(|d| spec.matches(d)).cloned().collect();
    docs.sort_by(|a, b| spec.compare(a, b));
    let total = (docs.len() as u64).min(TOTAL_CAP);
    let by_id: std::collections::HashMap<String, Document> =
        all.iter().map(|d| (d.id.clone(), d.clone())).collect();
    let limit = Some(spec.limit.unwrap_or(DEFAULT_LIMIT));
    let page = paginate_with_limit::<Error>(docs, spec, limit, |id| by_id.get(id).cloned())
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    (page, total)
}

const QUERIES_PER_WORLD: usize = 40;

/// 300 worlds of 40 queries by default (`BASALT_PROP_WORLDS`, `BASALT_PROP_SEED` for more or
/// others).
#[test]
fn pages_and_totals_match_brute_force() {
    let seed: u64 = std::env::var("BASALT_PROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_ba5a);
    let worlds: usize = std::env::var("BASALT_PROP_WORLDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checked = 0;
    let mut streamed = 0;
    let mut by_read = 0;
    for world in 0..worlds {
        let rows = rng.gen_range(0..150);
        let (w, attrs, fulltext) = random_world(&mut rng, rows);
        let coll = w.coll();
        let all = w.all(&coll);
        let ids: Vec<String> = all.iter().map(|d| d.id.clone()).collect();
        let view = w.eng.view().unwrap();
        for _ in 0..QUERIES_PER_WORLD {
            let queries = random_spec(&mut rng, &attrs, fulltext, &ids);
            let Ok(mut spec) = Spec::parse(&queries) else {
                continue;
            };
            if spec.validate(&coll).is_err() {
                continue;
            }
            if rng.gen_bool(0.4) {
                spec.filters.push(readable_by(&mut rng));
            }
            let plan = view.explain("p", &coll, &spec);
            streamed += usize::from(plan.order.is_some());
            by_read += usize::from(plan.index == model::schema::READ_ROLES);
            let (want, want_total) = brute_force(&all, &spec);
            let got = view.find("p", &coll, &spec, true).unwrap();
            let got_ids: Vec<String> = got.documents.iter().map(|d| d.id.clone()).collect();
            assert_eq!(
                (&got_ids, got.total),
                (&want, want_total),
                "world {world} (seed {seed}), indexes {:?}, queries {queries:?}, plan {}",
                coll.indexes
                    .iter()
                    .map(|i| (&i.key, &i.kind, &i.attributes, &i.orders))
                    .collect::<Vec<_>>(),
                plan.describe,
            );
            let untotalled = view.find("p", &coll, &spec, false).unwrap();
            assert_eq!(untotalled.documents, got.documents);
            checked += 1;
        }
    }
    assert!(
        checked > worlds * QUERIES_PER_WORLD / 2,
        "only {checked} queries were valid"
    );
    assert!(
        streamed > checked / 4,
        "only {streamed} of {checked} streamed"
    );
    assert!(
        by_read > checked / 20,
        "only {by_read} of {checked} read the $read index"
    );
    eprintln!("{checked} queries checked against brute force, {streamed} streamed from an index, {by_read} from the read-roles index");
}

#[test]
fn totals_stop_at_appwrites_cap_and_pages_stay_bounded() {
    let mut rng = StdRng::seed_from_u64(7);
    let (mut w, _, _) = random_world(&mut rng, 0);
    let coll = w.coll();
    let n = TOTAL_CAP as usize + 150;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let ops = chunk
            .iter()
            .map(|i| {
                target(DocOp::Create {
                    id: format!("big{i}"),
                    data: Default::default(),
                    permissions: None,
                })
            })
            .collect();
        w.apply(ops);
    }
    let view = w.eng.view().unwrap();
    let ids =
        |p: &model::reader::Page| p.documents.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let spec = Spec::parse(&[r#"{"method":"limit","values":[3]}"#.to_string()]).unwrap();
    let page = view.find("p", &coll, &spec, true).unwrap();
    assert_eq!(page.total, TOTAL_CAP);
    assert_eq!(ids(&page), ["big0", "big1", "big2"]);
    let last = Spec::parse(&[
        r#"{"method":"limit","values":[2]}"#.to_string(),
        r#"{"method":"orderDesc","attribute":"$sequence"}"#.to_string(),
    ])
    .unwrap();
    let page = view.find("p", &coll, &last, false).unwrap();
    assert_eq!(page.total, 0);
    assert_eq!(
        ids(&page),
        [format!("big{}", n - 1), format!("big{}", n - 2)]
    );

    // Under a budget far smaller than the table: a page streamed in index order answers,
    // and so does its count when the index decides the filter; a count that must check
    // every row against a filter no index decides is refused, as Appwrite times out.
    let small = w.eng.clone().with_scan_budget(100);
    let view = small.view().unwrap();
    assert_eq!(view.find("p", &coll, &spec, true).unwrap().total, TOTAL_CAP);
    let filtered = Spec::parse(&[
        r#"{"method":"greaterThan","attribute":"$sequence","values":[0]}"#.to_string(),
        r#"{"method":"limit","values":[3]}"#.to_string(),
    ])
    .unwrap();
    assert_eq!(
        view.find("p", &coll, &filtered, false)
            .unwrap()
            .documents
            .len(),
        3
    );
    let e = view.find("p", &coll, &filtered, true).unwrap_err();
    assert_eq!(e.code, model::ErrorCode::DatabaseTimeout);

    // A scan whose page never fills has met every match: its total costs nothing more, so a
    // budget of exactly the table answers it.
    let exactly = w.eng.clone().with_scan_budget(n);
    let view = exactly.view().unwrap();
    let few = Spec::parse(&[format!(
        r#"{{"method":"greaterThan","attribute":"$sequence","values":[{}]}}"#,
        n - 3
    )])
    .unwrap();
    let page = view.find("p", &coll, &few, true).unwrap();
    assert_eq!((page.documents.len(), page.total), (3, 3));
}

/// A random geometry of `kind` near a few hot spots (so relations hold often), as the SDK
/// sends it.
fn random_geometry(rng: &mut StdRng, kind: &str) -> Json {
    let spots = [(10.0, 50.0), (-73.9, 40.7), (179.9, -0.5), (0.0, 89.9)];
    let (cx, cy) = *spots.choose(rng).unwrap();
    let pt = |rng: &mut StdRng, spread: f64| {
        let x: f64 = (cx + rng.gen_range(-spread..spread)).clamp(-180.0, 180.0);
        let y: f64 = (cy + rng.gen_range(-spread..spread)).clamp(-90.0, 90.0);
        // Whole numbers sometimes: coordinates that coincide exactly, as touches need.
        match rng.gen_bool(0.3) {
            true => json!([x.round(), y.round()]),
            false => json!([x, y]),
        }
    };
    let spread = [0.001, 0.5, 3.0][rng.gen_range(0..3)];
    match kind {
        "point" => pt(rng, spread),
        "line" => json!((0..rng.gen_range(2..5))
            .map(|_| pt(rng, spread))
            .collect::<Vec<_>>()),
        _ => {
            // An axis-aligned box (a valid, closed ring).
            let a = pt(rng, spread);
            let (x, y) = (a[0].as_f64().unwrap(), a[1].as_f64().unwrap());
            let w: f64 = rng.gen_range(0.01..2.0);
            let (x1, y1) = ((x + w).min(180.0), (y + w).min(90.0));
            json!([[[x, y], [x1, y], [x1, y1], [x, y1], [x, y]]])
        }
    }
}

/// Spatial queries, with and without a spatial index, against every row checked one by one
/// (`Filter::matches`, which the model's own tests check against known relations): the
/// grid's candidates must hold every match.
#[test]
fn spatial_queries_match_brute_force() {
    let mut rng = StdRng::seed_from_u64(0x6e0);
    let mut checked = 0;
    let mut by_grid = 0;
    let mut matched = 0;
    for world in 0..40 {
        let mut w = World::new();
        let kind = ["point", "line", "polygon"][world % 3];
        let attr_kind = AttrKind::from_route(kind).unwrap();
        let indexed = world % 2 == 0;
        let setup = vec![
            Op::Projects(ProjectOp::Create { name: "P".into() }),
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
            Op::Schema(SchemaOp::CreateCollection {
                collection: Collection {
                    id: "c".into(),
                    database: "d".into(),
                    name: "c".into(),
                    enabled: true,
                    permissions: vec![],
                    document_security: false,
                    attributes: vec![Attribute::new("g", attr_kind, 0)],
                    indexes: match indexed {
                        true => vec![Index {
                            key: "geo".into(),
                            kind: IndexKind::Spatial,
                            attributes: vec!["g".into()],
                            orders: vec![],
                            lengths: vec![],
                            status: Default::default(),
                            created_at: 0,
                            updated_at: 0,
                        }],
                        false => vec![],
                    },
                    reshapes: vec![],
                    relations: Default::default(),
                    created_at: 0,
                    updated_at: 0,
                },
            }),
        ];
        for o in w.apply(setup) {
            assert!(!matches!(o, Outcome::Failed(_)), "{o:?}");
        }
        for i in 0..rng.gen_range(20..120) {
            let mut data = model::command::Data::new();
            if rng.gen_bool(0.9) {
                data.insert(
                    "g".into(),
                    Value::from_json(&random_geometry(&mut rng, kind)).unwrap(),
                );
            }
            let o = w.apply(vec![target(DocOp::Create {
                id: format!("r{i}"),
                data,
                permissions: None,
            })]);
            assert!(!matches!(o[0], Outcome::Failed(_)), "{o:?}");
        }
        let coll = w.coll();
        let all = w.all(&coll);
        let view = w.eng.view().unwrap();
        for _ in 0..60 {
            let qkind = ["point", "line", "polygon"][rng.gen_range(0..3)];
            let g = random_geometry(&mut rng, qkind);
            let method = *[
                "intersects",
                "notIntersects",
                "crosses",
                "overlaps",
                "touches",
                "notTouches",
                "equal",
                "contains",
                "notContains",
                "distanceLessThan",
                "distanceGreaterThan",
                "distanceEqual",
            ]
            .choose(&mut rng)
            .unwrap();
            let q = match method {
                m if m.starts_with("distance") => {
                    let meters = kind == "point" && qkind == "point" && rng.gen_bool(0.5);
                    let d = match meters {
                        true => [10.0, 5_000.0, 300_000.0][rng.gen_range(0..3)],
                        false => [0.0, 0.01, 1.0, 4.0][rng.gen_range(0..4)],
                    };
                    json!({"method": m, "attribute": "g", "values": [[g, d, meters]]})
                }
                "equal" | "contains" | "notContains" => {
                    json!({"method": method, "attribute": "g", "values": [g]})
                }
                m => json!({"method": m, "attribute": "g", "values": [g]}),
            };
            let queries = vec![q.to_string(), r#"{"method":"limit","values":[500]}"#.into()];
            let mut spec = Spec::parse(&queries).unwrap();
            spec.validate(&coll).unwrap();
            let plan = view.explain("p", &coll, &spec);
            by_grid += usize::from(plan.index == "geo");
            let (want, want_total) = brute_force(&all, &spec);
            matched += usize::from(!want.is_empty() && want.len() < all.len());
            let got = view.find("p", &coll, &spec, true).unwrap();
            let got_ids: Vec<String> = got.documents.iter().map(|d| d.id.clone()).collect();
            assert_eq!(
                (&got_ids, got.total),
                (&want, want_total),
                "world {world}, {queries:?}, plan {}",
                plan.describe
            );
            checked += 1;
        }
    }
    assert!(
        by_grid > checked / 4,
        "only {by_grid} of {checked} read the grid"
    );
    assert!(
        matched > checked / 5,
        "only {matched} of {checked} matched some rows, not all"
    );
    eprintln!("{checked} spatial queries checked against brute force, {by_grid} through the grid, {matched} matched some rows but not all");
}
